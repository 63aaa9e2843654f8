"""End to end: the BIDS-App on a synthetic dataset, default settings (deepbet, affine)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.synthetic import synthesize_dataset
from tests.conftest import tree_checksums

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_participant_run_on_synthetic_subject(tmp_path):
    bids = tmp_path / "bids"
    synthesize_dataset(bids, n_subjects=1, seed=5, resolution=3)
    before = tree_checksums(bids)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(bids), str(out), "participant", "-w",
                                      str(tmp_path / "work"), "--nprocs", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert tree_checksums(bids) == before
    anat = out / "sub-01" / "anat"
    mask_path = anat / "sub-01_desc-brain_mask.nii.gz"
    truth = nib.load(bids / "derivatives/synthetic-truth/sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    mask = nib.load(mask_path)
    # the native outputs are on the conformed (RAS+) version of the input grid
    truth = nib.as_closest_canonical(truth)
    np.testing.assert_allclose(mask.affine, truth.affine, atol=1e-4)
    inside, reference = mask.get_fdata() > 0, truth.get_fdata() > 0
    assert 2 * (inside & reference).sum() / (inside.sum() + reference.sum()) >= 0.95
    assert json.loads(mask_path.with_name("sub-01_desc-brain_mask.json").read_text())[
        "SkullStripping"] == "deepbet"
    std = nib.load(anat / "sub-01_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz")
    assert std.shape == (197, 233, 189)
    for name in ("from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat",
                 "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.mat"):
        assert (anat / f"sub-01_{name}").stat().st_size > 0
