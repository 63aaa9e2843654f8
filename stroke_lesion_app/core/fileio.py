"""Atomic file writing: write under a unique temporary name beside the target, then rename.

A crash (or a full disk) while writing leaves no file under the final name, so a partial output
never looks complete, and concurrent writers of one file (jobs of a SLURM array sharing an
output folder) never write into each other's temporary file: every temporary name is unique
(:func:`tempfile.mkstemp`). The last complete writer wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes_atomic", "write_json_atomic", "write_nifti_atomic",
           "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(final_path: Path | str) -> Iterator[Path]:
    """Yield a unique temporary path beside ``final_path``; rename it into place on success.

    The temporary name keeps the extension (``.nii.gz`` writers choose the compression from
    it) and starts with a dot. The parent folder is created. On an exception the temporary
    file is removed and nothing appears under ``final_path``.

    Examples
    --------
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> (folder / "a.txt").read_text(), sorted(p.name for p in folder.iterdir())
    ('whole', ['a.txt'])
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes) or ".tmp"
    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{final_path.name.split('.')[0]}.", suffix=suffix, dir=final_path.parent
    )
    os.close(handle)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp creates owner-only files; give the final file the usual umask permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, content: Any, *, indent: int = 2,
                      sort_keys: bool = False, default=None) -> Path:
    """Write ``content`` as JSON (with a final newline) to ``path`` atomically; return it.

    ``default`` is :func:`json.dumps`' fallback for objects JSON cannot hold (e.g. ``str``).
    """
    return write_text_atomic(path, json.dumps(content, indent=indent, sort_keys=sort_keys,
                                              default=default) + "\n")


def write_nifti_atomic(image, path: Path | str) -> Path:
    """Save a nibabel image to ``path`` atomically (compressed when it ends in ``.gz``)."""
    with atomic_path(path) as tmp:
        image.to_filename(str(tmp))
    return Path(path)
