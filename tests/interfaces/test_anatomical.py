"""Bias correction and brain extraction interfaces as Nipype nodes on tiny images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.anatomical import BiasFieldCorrection, BrainExtraction


def _head(tmp_path):
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    brain = (grid ** 2).sum(axis=0) < 0.5
    bias = 1 + 0.4 * grid[0]                      # a linear bias field along x
    data = (500 * brain + 50) * bias
    data[~((grid ** 2).sum(axis=0) < 0.9)] = 0    # air outside the head
    nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2, 2, 1])).to_filename(
        tmp_path / "t1w.nii.gz")
    return tmp_path / "t1w.nii.gz", brain


def test_bias_field_correction_flattens_the_brain(tmp_path):
    path, brain = _head(tmp_path)
    result = pe.Node(BiasFieldCorrection(in_file=str(path), num_threads=1), name="n4",
                     base_dir=str(tmp_path)).run()
    corrected = nib.load(result.outputs.out_file).get_fdata()
    original = nib.load(path).get_fdata()
    spread = lambda values: values.std() / values.mean()  # noqa: E731
    assert spread(corrected[brain]) < 0.5 * spread(original[brain])
    assert (corrected[original == 0] == 0).all()


def test_brain_extraction_none(tmp_path):
    path, _ = _head(tmp_path)
    result = pe.Node(BrainExtraction(in_file=str(path), method="none"), name="bet",
                     base_dir=str(tmp_path)).run()
    assert result.outputs.method == "none"
    mask = nib.load(result.outputs.out_mask)
    assert mask.get_data_dtype() == np.uint8 and mask.shape == (24, 24, 24)
    brain = nib.load(result.outputs.out_file).get_fdata()
    assert (brain[np.asanyarray(mask.dataobj) == 0] == 0).all()
