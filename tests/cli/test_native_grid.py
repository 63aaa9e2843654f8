"""Native means the input grid: whatever orientation the T1w is stored in, every native-space
output has its shape, affine, qform and sform, voxel for voxel (RAS+ stays internal)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from nibabel.orientations import axcodes2ornt, ornt_transform

from stroke_lesion_app.cli.run import cli
from tests.conftest import tiny_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORIENTATIONS = ("RAS", "LPS", "PIR", "LIA")
NATIVE = ("desc-preproc_T1w", "desc-brain_mask", "label-L_mask", "label-L_probseg")


def _stored_as(codes: str) -> nib.Nifti1Image:
    """A tiny head with a bright, off-centre blob (so a flip shows), stored in ``codes`` order,
    with qform and sform codes as a scanner writes them."""
    head = tiny_head(shape=(20, 24, 18), zooms=(2.0, 2.0, 2.0), dtype=np.float32)
    data = np.asanyarray(head.dataobj).copy()
    data[3:7, 15:20, 11:15] += 800
    ras = nib.Nifti1Image(data, head.affine)
    stored = ras.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes)))
    image = nib.Nifti1Image(np.asanyarray(stored.dataobj).astype(np.int16), stored.affine)
    image.set_qform(stored.affine, code=1)
    image.set_sform(stored.affine, code=1)
    return image


def test_native_outputs_lie_on_the_input_grid(bids_root, tmp_path):
    raws = {f"{index:02d}": _stored_as(codes) for index, codes in enumerate(ORIENTATIONS, 1)}
    root = bids_root({f"sub-{label}/anat/sub-{label}_T1w.nii.gz": image
                      for label, image in raws.items()})
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(root), str(out), "participant", "-w",
                                      str(tmp_path / "work"), "--plugin", "Linear",
                                      "--skull-strip", "none", "--fast",
                                      "--group-normalisation", "affine"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for label, raw in raws.items():
        raw = nib.load(root / f"sub-{label}/anat/sub-{label}_T1w.nii.gz")
        assert "".join(nib.aff2axcodes(raw.affine)) == ORIENTATIONS[int(label) - 1]
        for name in NATIVE:
            image = nib.load(out / f"sub-{label}/anat/sub-{label}_{name}.nii.gz")
            assert image.shape == raw.shape, (label, name)
            np.testing.assert_allclose(image.affine, raw.affine, atol=1e-5)
            np.testing.assert_allclose(image.get_qform(), raw.affine, atol=1e-4)
            np.testing.assert_allclose(image.get_sform(), raw.affine, atol=1e-5)
            assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
            assert image.header.get_xyzt_units()[0] == "mm"
        # voxel for voxel: the bias-corrected T1w follows the raw intensities, blob included
        preproc = nib.load(out / f"sub-{label}/anat/sub-{label}_desc-preproc_T1w.nii.gz")
        correlation = np.corrcoef(np.asanyarray(raw.dataobj, dtype=float).ravel(),
                                  preproc.get_fdata().ravel())[0, 1]
        assert correlation > 0.9, (label, correlation)
    # template-space outputs: the MNI152 code in qform and sform
    std = nib.load(out / "sub-02/anat/sub-02_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz")
    assert int(std.header["qform_code"]) == int(std.header["sform_code"]) == 4
