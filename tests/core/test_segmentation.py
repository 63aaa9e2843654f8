"""core.segmentation: grids, resampling and post-processing around the ensemble (faked here)."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import segmentation
from stroke_lesion_app.core.segmentation import (
    InferenceSettings,
    resample_to_grid,
    restrict_to_brain,
    segment_template_t1w,
)
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE, template_grid


def test_resample_to_grid_identity_and_downsampling():
    rng = np.random.default_rng(0)
    data = rng.random((8, 9, 10)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    same = resample_to_grid(data, affine, data.shape, affine, order=1)
    np.testing.assert_allclose(same, data, atol=1e-6)
    # a 1 mm grid sampled at every other voxel is a plain subsampling
    fine = np.arange(16 * 16 * 16, dtype=np.float32).reshape(16, 16, 16)
    coarse = resample_to_grid(fine, np.eye(4), (8, 8, 8), np.diag([2.0, 2.0, 2.0, 1.0]), order=0)
    np.testing.assert_array_equal(coarse, fine[::2, ::2, ::2])


class _FakePredictor:
    """Stands in for EnsemblePredictor: a lesion block and one stray voxel on the 2 mm grid."""

    def __init__(self):
        self.bundle = SimpleNamespace(
            resolution_mm=2.0, min_component_voxels=2, connectivity=26, description="fake",
            demo=True, identity=lambda: {"name": "fake", "demo": True})
        self.threshold = 0.5
        self.passes = [SimpleNamespace(label="m/fold_0",
                                       predictor=SimpleNamespace(window_batch_size=2))]
        self.calls = []

    def predict_probability(self, image, spacing):
        self.calls.append((image.shape, tuple(spacing)))
        probability = np.zeros(image.shape, np.float32)
        probability[40:44, 60:64, 50:54] = 1.0  # 4^3 voxels of 2 mm = 512 mm^3
        probability[10, 10, 10] = 0.9           # 1 voxel of 2 mm: below the 2-voxel rule
        return probability


@pytest.fixture
def fake_predictor(monkeypatch):
    predictor = _FakePredictor()
    monkeypatch.setattr(segmentation, "get_predictor",
                        lambda bundle, settings: predictor if bundle is predictor.bundle else None)
    return predictor


def test_segment_on_a_coarser_bundle_grid(tmp_path, fake_predictor):
    t1w = tmp_path / "std_t1w.nii.gz"
    nib.Nifti1Image(np.ones(TEMPLATE_SHAPE, np.float32), TEMPLATE_AFFINE).to_filename(t1w)
    probseg, mask = tmp_path / "prob.nii.gz", tmp_path / "mask.nii.gz"
    meta = segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(), probseg, mask)

    shape, affine = template_grid(2.0)
    assert fake_predictor.calls == [(shape, (2.0, 2.0, 2.0))]
    for path in (probseg, mask):
        image = nib.load(path)
        assert image.shape == TEMPLATE_SHAPE
        np.testing.assert_allclose(image.affine, TEMPLATE_AFFINE)
    probability = nib.load(probseg).get_fdata()
    assert probability.min() >= 0 and probability.max() <= 1
    lesion = np.asarray(nib.load(mask).dataobj)
    assert lesion.dtype == np.uint8 and set(np.unique(lesion)) == {0, 1}
    # the block, 8 mm wide: linear upsampling reaches 0.5 exactly at its edges, and the cut is
    # strictly above 0.5, so 7 of the 1 mm voxels across it remain
    assert lesion.sum() == 7 ** 3
    centre = nib.affines.apply_affine(TEMPLATE_AFFINE, np.argwhere(lesion).mean(axis=0))
    expected = nib.affines.apply_affine(affine, [41.5, 61.5, 51.5])
    np.testing.assert_allclose(centre, expected, atol=0.6)
    # the stray voxel is gone: the 2-voxel rule counts 2 mm voxels, 16 voxels at 1 mm
    stray = nib.affines.apply_affine(np.linalg.inv(TEMPLATE_AFFINE),
                                     nib.affines.apply_affine(affine, [10, 10, 10]))
    assert probability[tuple(np.round(stray).astype(int))] > 0.5
    assert lesion[tuple(np.round(stray).astype(int))] == 0
    assert meta["MinComponentVoxels"] == 16 and meta["Demo"] is True
    assert meta["NetworkPasses"] == ["m/fold_0"] and meta["ModelResolution"] == "2 mm"
    assert meta["SlidingWindowsPerCall"] == {"m/fold_0": 2}
    assert meta["TemplateLesionVolumeMl"] == pytest.approx(lesion.sum() / 1000)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_brain_mask_removes_lesion_outside_the_brain(tmp_path, fake_predictor):
    t1w = tmp_path / "std_t1w.nii.gz"
    nib.Nifti1Image(np.ones(TEMPLATE_SHAPE, np.float32), TEMPLATE_AFFINE).to_filename(t1w)
    meta = segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(), tmp_path / "p0.nii.gz",
                                tmp_path / "m0.nii.gz")
    lesion = np.asarray(nib.load(tmp_path / "m0.nii.gz").dataobj) > 0
    assert meta["BrainMaskRestriction"] == "none" and lesion.sum() == 7 ** 3
    # a brain mask ending 1 mm before the lesion block keeps it (2 mm margin); one ending
    # 5 mm before it removes it, from the probability and from the mask
    rows = np.flatnonzero(lesion.any(axis=(1, 2)))
    for gap, kept in ((1, True), (5, False)):
        brain = np.zeros(TEMPLATE_SHAPE, np.uint8)
        brain[: rows[0] - gap] = 1
        brain_file = tmp_path / f"brain{gap}.nii.gz"
        nib.Nifti1Image(brain, TEMPLATE_AFFINE).to_filename(brain_file)
        meta = segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(), tmp_path / "p.nii.gz",
                                    tmp_path / "m.nii.gz", brain_mask=brain_file)
        restricted = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj) > 0
        probability = nib.load(tmp_path / "p.nii.gz").get_fdata()
        assert meta["BrainMaskRestriction"]["MarginMm"] == 2.0
        if kept:
            assert 0 < restricted.sum() < lesion.sum()  # the part within 2 mm of the brain
            assert not restricted[rows[0] + 2:].any()
        else:
            assert not restricted.any() and probability[lesion].max() == 0
            assert meta["BrainMaskRestriction"]["RemovedAboveThresholdMl"] > 0.3
        assert meta["TemplateLesionVolumeMl"] == pytest.approx(restricted.sum() / 1000)


def test_restrict_to_brain_uses_millimetres():
    probability = np.ones((9, 9, 9), np.float32)
    brain = np.zeros((9, 9, 9), bool)
    brain[:3] = True
    kept = restrict_to_brain(probability, brain, (1.0, 1.0, 1.0), margin_mm=2.0) > 0
    assert kept[:5].all() and not kept[5:].any()  # rows 3 and 4 lie 1 and 2 mm away
    kept = restrict_to_brain(probability, brain, (2.0, 1.0, 1.0), margin_mm=2.0) > 0
    assert kept[:4].all() and not kept[4:].any()  # 2 mm voxels along the first axis
    with pytest.raises(ValueError, match="brain mask is empty"):
        restrict_to_brain(probability, np.zeros_like(brain), (1, 1, 1))
    with pytest.raises(ValueError, match="differs"):
        restrict_to_brain(probability, brain[:8], (1, 1, 1))


def test_input_off_the_template_grid_is_refused(tmp_path, fake_predictor):
    t1w = tmp_path / "native.nii.gz"
    nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)).to_filename(t1w)
    with pytest.raises(ValueError, match="not on the 1 mm MNI152NLin2009aSym grid"):
        segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(), tmp_path / "p.nii.gz",
                             tmp_path / "m.nii.gz")


def test_fast_settings():
    fast = InferenceSettings.from_options(device="cpu", tta=True, step_size=0.6, fast=True)
    assert (fast.tta, fast.step_size, fast.folds_per_member) == (False, 1.0, 1)
    assert fast.describe()["TestTimeAugmentation"] == "none"
    assert InferenceSettings().describe()["FoldsPerMember"] == "all"
    plain = InferenceSettings.from_options(tta=False, step_size=0.6)
    assert (plain.device, plain.tta, plain.step_size, plain.folds_per_member) == (
        "auto", False, 0.6, None)


def test_device_is_resolved_where_the_settings_are_used(monkeypatch):
    import torch

    requested = InferenceSettings.from_options(device="auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert requested.resolved(num_threads=3) == InferenceSettings(device="cpu", num_threads=3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert requested.resolved().device == "cuda"
    assert requested.device == "auto"  # the request itself is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: no CUDA device is visible"):
        InferenceSettings(device="cuda").resolved()
