"""A full disk or an unwritable folder: one line naming the file and the fix, and no partial file
under a final name (outputs are written to temporary names and renamed)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import pytest

from tests.conftest import leftover_temporary_files

pytestmark = [pytest.mark.integration]


def _mount_tmpfs(mount_point, options):
    """Mount a tmpfs (root only; the test is skipped where mounting is not allowed)."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    return mount_point


@pytest.fixture
def small_disk(tmp_path):
    """A 96 kB file system."""
    yield _mount_tmpfs(tmp_path / "small-disk", "size=96k")
    subprocess.run(["umount", "-l", str(tmp_path / "small-disk")], check=False)


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only file system (root writes anywhere else, whatever the permissions)."""
    yield _mount_tmpfs(tmp_path / "read-only", "ro,size=16k")
    subprocess.run(["umount", "-l", str(tmp_path / "read-only")], check=False)


def _run(*args, cwd):
    """The app in its own process, from ``cwd`` (where Nipype puts crash files it cannot write
    into the output folder)."""
    return subprocess.run([sys.executable, "-m", "stroke_lesion_app", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_output_disk_full(bids_root, tmp_path, small_disk):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    out = small_disk / "out"
    result = _run(root, out, "participant", "-w", tmp_path / "work", "--plugin", "Linear",
                  "--skull-strip", "none", "--lesion-source", "manual",
                  "--group-normalisation", "affine", cwd=tmp_path)
    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "No space left on device" in line]
    assert errors, result.stderr
    # whatever was written is whole: no temporary file, no truncated image or JSON
    assert not leftover_temporary_files(out)
    for path in out.rglob("*.nii.gz"):
        nib.load(path).get_fdata()
    for path in out.rglob("*.json"):
        json.loads(path.read_text())


@pytest.mark.parametrize("folder", ["output", "work"])
def test_unwritable_folder(bids_root, tmp_path, read_only_folder, folder):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    out = read_only_folder / "out" if folder == "output" else tmp_path / "out"
    work = read_only_folder / "work" if folder == "work" else tmp_path / "work"
    result = _run(root, out, "participant", "-w", work, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert str(read_only_folder) in line and "read-only" in line.lower()
