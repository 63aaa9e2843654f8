"""Shared inputs of the model-side tests: tiny nnU-Net raw datasets."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

#: Voxel-to-world affine of the tiny test images (2 mm voxels).
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def save_image(path, data, affine=AFFINE):
    """Write ``data`` as NIfTI at ``path`` (folders created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(data), affine).to_filename(path)
    return path


@pytest.fixture
def source(tmp_path):
    """``raw/Dataset601_Src``: 3 labelled cases, 2 unlabelled images in imagesTs (4×4×4)."""
    root = tmp_path / "raw" / "Dataset601_Src"
    rng = np.random.default_rng(0)
    for index in (1, 2, 3):
        save_image(root / "imagesTr" / f"sub-0{index}_0000.nii.gz",
                   rng.normal(size=(4, 4, 4)).astype(np.float32))
        label = np.zeros((4, 4, 4), np.uint8)
        label[:index, :2, :2] = 1
        save_image(root / "labelsTr" / f"sub-0{index}.nii.gz", label)
    for index in (7, 8):
        save_image(root / "imagesTs" / f"sub-0{index}_0000.nii.gz",
                   rng.normal(size=(4, 4, 4)).astype(np.float32))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1w"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 3, "file_ending": ".nii.gz", "name": "Dataset601_Src",
        "stroke_lesion_app": {"conversion": "synthetic", "resolution_mm": 2.0, "numTest": 2}}))
    return root
