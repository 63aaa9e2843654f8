"""core.segmentation: grids, resampling and post-processing around the ensemble (faked here)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import segmentation
from stroke_lesion_app.core.bundle import load_bundle, write_bundle_manifest
from stroke_lesion_app.core.segmentation import (
    InferenceSettings,
    brain_region,
    region_on_grid,
    resample_to_grid,
    restrict_to_brain,
    segment_template_t1w,
    segmentation_memory_gb,
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
        self.regions = []

    def predict_probability(self, image, spacing, region=None):
        self.calls.append((image.shape, tuple(spacing)))
        self.regions.append(region)
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


# -- brain box and memory (issue #18) --------------------------------------------------------------
def test_brain_box_reaches_the_predictor_on_its_grid(tmp_path, fake_predictor):
    t1w = tmp_path / "std_t1w.nii.gz"
    nib.Nifti1Image(np.ones(TEMPLATE_SHAPE, np.float32), TEMPLATE_AFFINE).to_filename(t1w)
    brain = np.zeros(TEMPLATE_SHAPE, np.uint8)
    brain[40:150, 30:200, 20:160] = 1
    brain_file = tmp_path / "brain.nii.gz"
    nib.Nifti1Image(brain, TEMPLATE_AFFINE).to_filename(brain_file)
    meta = segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(brain_box=True),
                                tmp_path / "p.nii.gz", tmp_path / "m.nii.gz",
                                brain_mask=brain_file)
    (region,) = fake_predictor.regions
    # 1 mm box: brain ± 4 mm (2 mm kept + 2 mm context); on the 2 mm grid it covers that box
    one_mm = brain_region(brain, 4)
    assert [(r.start, r.stop) for r in one_mm] == [(36, 154), (26, 204), (16, 164)]
    _, affine = template_grid(2.0)
    corners = nib.affines.apply_affine(np.linalg.inv(affine) @ TEMPLATE_AFFINE,
                                       [[36, 26, 16], [153, 203, 163]])
    for axis, r in enumerate(region):
        low, high = sorted(corners[:, axis])
        assert r.start <= low and high < r.stop and r.stop - r.start <= high - low + 3
    assert "brain box + 4 mm" in meta["SlidingWindowRegion"]
    assert "i 36:154" in meta["SlidingWindowRegion"]
    segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(),  # the default
                         tmp_path / "p.nii.gz", tmp_path / "m.nii.gz", brain_mask=brain_file)
    assert fake_predictor.regions[-1] is None
    assert InferenceSettings.from_options(fast=True).brain_box
    assert InferenceSettings.from_options(brain_box=True).brain_box
    segment_template_t1w(t1w, fake_predictor.bundle, InferenceSettings(brain_box=True),
                         tmp_path / "p.nii.gz", tmp_path / "m.nii.gz")
    assert fake_predictor.regions[-1] is None  # no brain mask: the whole image


def test_brain_region_and_region_on_grid():
    mask = np.zeros((30, 30, 30), bool)
    mask[10:20, 0:5, 25:30] = True
    assert brain_region(mask, 3) == (slice(7, 23), slice(0, 8), slice(22, 30))
    with pytest.raises(ValueError, match="empty"):
        brain_region(np.zeros((4, 4, 4)), 1)
    same = region_on_grid((slice(2, 9), slice(0, 4), slice(5, 6)), np.eye(4), np.eye(4),
                          (10, 10, 10))
    assert same == (slice(2, 9), slice(0, 4), slice(5, 6))
    coarse = region_on_grid((slice(2, 9),) * 3, np.eye(4), np.diag([2.0, 2, 2, 1]), (5, 5, 5))
    assert coarse == (slice(1, 5),) * 3


def _sized_bundle(root, folds, patch, features, checkpoint_bytes):
    member = root / "m"
    for fold in folds:
        (member / f"fold_{fold}").mkdir(parents=True)
        (member / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"0" * checkpoint_bytes)
    (member / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {
        "patch_size": patch, "architecture": {"arch_kwargs": {"features_per_stage": features}}}}}))
    write_bundle_manifest(root, name="sized", version="1", resolution_mm=1,
                          members=[{"name": "m", "folder": "m", "trainer": "T",
                                    "configuration": "3d_fullres", "folds": list(folds),
                                    "sha256": {f"fold_{f}/checkpoint_final.pth": "0" * 64
                                               for f in folds}}])
    return load_bundle(root)


def test_segmentation_memory_grows_with_the_bundle(tmp_path):
    small = _sized_bundle(tmp_path / "small", [0], [64, 64, 64], [8, 16], 10 ** 6)
    large = _sized_bundle(tmp_path / "large", [0, 1, 2, 3, 4], [128, 128, 128], [32, 64],
                          200 * 10 ** 6)
    settings = InferenceSettings()
    small_gb, large_gb = (segmentation_memory_gb(b, settings) for b in (small, large))
    assert 1.1 < small_gb < 1.5
    # 5 × 200 MB of weights + 128³ × 32 × 32 B of activations + 5 maps of 8.7 M voxels
    expected = 1.1 + (5 * 200e6 + 128 ** 3 * 32 * 32 + 5 * 197 * 233 * 189 * 4) / 1024 ** 3
    assert large_gb == pytest.approx(expected, abs=0.01)
    fast = segmentation_memory_gb(large, InferenceSettings.from_options(fast=True))
    assert fast < large_gb - 0.7  # one fold instead of five
    more_windows = segmentation_memory_gb(large, InferenceSettings(window_batch_size=3))
    assert more_windows > large_gb + 3
