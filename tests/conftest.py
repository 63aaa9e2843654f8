"""Shared fixtures: tiny BIDS datasets built from a layout dict, checksums of input trees."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("nnUNet_compile", "f")


def tiny_head(shape=(12, 14, 10), zooms=(2.0, 2.0, 2.0), seed=0, dtype=np.int16):
    """A small T1w-like image: bright ellipsoid 'brain' with noise, RAS affine."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid ** 2).sum(axis=0) < 0.7
    data = 100 + 600 * inside + rng.normal(0, 20, shape)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = -np.array(shape) * np.array(zooms) / 2
    return nib.Nifti1Image(data.astype(dtype), affine)


def write_bids(root: Path, layout: dict[str, object]) -> Path:
    """Write a BIDS tree: keys are relative paths; values are images, dicts (JSON) or text.

    ``None`` as a value writes a :func:`tiny_head`.
    """
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            content = tiny_head(seed=len(str(relative)))
        if isinstance(content, nib.Nifti1Image):
            content.to_filename(path)
        elif isinstance(content, dict):
            path.write_text(json.dumps(content))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content))
    return root


DESCRIPTION = {"Name": "tiny", "BIDSVersion": "1.9.0"}


@pytest.fixture
def bids_root(tmp_path):
    """Factory: ``bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None, ...})`` → dataset path.

    ``dataset_description.json`` is added unless the layout sets it (``False`` omits it).
    """
    def factory(layout: dict[str, object], name: str = "bids") -> Path:
        layout = dict(layout)
        description = layout.pop("dataset_description.json", DESCRIPTION)
        if description is not False:
            layout["dataset_description.json"] = description
        return write_bids(tmp_path / name, layout)
    return factory


def tree_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file (and the set of folders) under ``root``."""
    sums = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        sums[relative] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return sums


def leftover_temporary_files(output_dir: Path) -> list[Path]:
    """Hidden files under an output folder other than ``.bidsignore``: temporary files that an
    atomic write should have renamed or removed."""
    return [path for path in Path(output_dir).rglob("*")
            if path.name.startswith(".") and path.name != ".bidsignore"]
