"""Softmax-probability ensembling of nnU-Net v2 members, against nnU-Net's own predictor.

A tiny bundle is built without training: nnU-Net plans a synthetic 16³ dataset (the
fingerprint is written by hand, so no worker processes start), and each checkpoint holds the
random weights of the trainer's own network in nnU-Net's checkpoint format. Two members: an
MSCSA trainer with folds 0 and 1 (weight 1) and the plain trainer with fold 0 (weight 2).

The key property: :class:`EnsemblePredictor` returns the weighted mean of the per-fold
softmax probabilities that nnU-Net's ``nnUNetPredictor`` produces when each fold is loaded
from its folder and run alone on the NIfTI file (its own reader, preprocessing and export).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from stroke_lesion_app.core import ensemble as ensemble_module
from stroke_lesion_app.core.bundle import load_bundle, write_bundle_manifest
from stroke_lesion_app.core.ensemble import EnsemblePredictor, average_probabilities
from stroke_lesion_app.core.nnunet_lookup import TRAINER_ENV_VAR, ensure_trainer_discovery

DATASET_ID = 986
DATASET = f"Dataset{DATASET_ID}_TinyBundle"
PATCH = (16, 16, 16)
IMAGE_SHAPE = (14, 16, 20)  # nibabel order; not a cube (an axis mix-up would show), 2 windows
CONFIGURATION = "3d_fullres"
MEMBERS = [  # name, trainer, folds, weight
    ("mscsa", "StrokeTrainerDefaultMSCSA", (0, 1), 1.0),
    ("plain", "StrokeTrainerDefault", (0,), 2.0),
]


# -- pure function ---------------------------------------------------------------------------------
def test_average_probabilities_is_the_weighted_mean():
    a = np.array([[0.0, 0.2], [0.4, 1.0]])
    b = np.array([[1.0, 0.2], [0.0, 0.5]])
    c = np.array([[0.5, 0.5], [0.5, 0.5]])
    out = average_probabilities([a, b, c], [0.5, 0.25, 0.25])
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.375, 0.275], [0.325, 0.75]], atol=1e-7)
    # weights are normalised; default is equal weights
    np.testing.assert_allclose(average_probabilities([a, b, c], [2, 1, 1]), out, atol=1e-7)
    np.testing.assert_allclose(average_probabilities([a, b]), (a + b) / 2, atol=1e-7)


@pytest.mark.parametrize("probs, weights, message", [
    ([], None, "at least one"),
    ([np.zeros(2)], [1, 1], "1 probability maps but 2 weights"),
    ([np.zeros(2), np.zeros(2)], [1, 0], "weights must be finite and > 0"),
    ([np.zeros(2), np.zeros(3)], None, "differ in shape"),
])
def test_average_probabilities_arguments(probs, weights, message):
    with pytest.raises(ValueError, match=message):
        average_probabilities(probs, weights)


# -- tiny random-weight bundle ---------------------------------------------------------------------
def _plan(root: Path) -> tuple[dict, dict]:
    """Plans and dataset.json of a 2-case 16³ dataset, planned by nnU-Net (no worker processes)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments

    raw = root / "nnUNet_raw" / DATASET
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        label = np.zeros(PATCH, np.uint8)
        label[5:10, 5:10, 5:10] = 1
        image = rng.normal(100, 10, PATCH) + 60 * label
        nib.Nifti1Image(image.astype(np.float32), np.eye(4)).to_filename(
            raw / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.Nifti1Image(label, np.eye(4)).to_filename(raw / "labelsTr" / f"case{i}.nii.gz")
    dataset_json = {"channel_names": {"0": "T1w"}, "labels": {"background": 0, "lesion": 1},
                    "numTraining": 2, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    preprocessed = root / "nnUNet_preprocessed" / DATASET
    preprocessed.mkdir(parents=True)
    fingerprint = {  # what extract_fingerprints would write, without its worker pool
        "spacings": [[1.0, 1.0, 1.0]] * 2, "shapes_after_crop": [list(PATCH)] * 2,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 190.0, "mean": 160.0, "median": 160.0, "min": 130.0,
            "percentile_00_5": 135.0, "percentile_99_5": 185.0, "std": 10.0}},
    }
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    plans_name = plan_experiments([DATASET_ID])
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    assert plans["configurations"][CONFIGURATION]["patch_size"] == list(PATCH)
    return plans, dataset_json


def _write_member(folder: Path, trainer: str, folds, plans: dict, dataset_json: dict) -> None:
    """An nnU-Net trained-model folder whose checkpoints hold random weights."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from stroke_lesion_app.core.nnunet_lookup import find_trainer_class

    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    manager = PlansManager(plans)
    configuration = manager.get_configuration(CONFIGURATION)
    trainer_class = find_trainer_class(trainer)
    for fold in folds:
        torch.manual_seed(1000 * len(trainer) + fold)
        network = trainer_class.build_network_architecture(
            manager, configuration, 1, 2, enable_deep_supervision=True)  # as in training
        with torch.no_grad():  # spread the random outputs so members clearly differ
            for layer in network.decoder.seg_layers:
                layer.weight.mul_(20.0)
        (folder / f"fold_{fold}").mkdir()
        torch.save({
            "network_weights": network.state_dict(),
            "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold,
                          "dataset_json": dataset_json},
            "trainer_name": trainer,
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "current_epoch": 1,
        }, folder / f"fold_{fold}" / "checkpoint_final.pth")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """Bundle folder of :data:`MEMBERS`, a test image on a 1 mm grid, and the nnU-Net env."""
    root = tmp_path_factory.mktemp("ensemble")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / name).mkdir()
            mp.setenv(name, str(root / name))
        mp.setenv("nnUNet_compile", "f")
        mp.setenv(TRAINER_ENV_VAR, ensure_trainer_discovery(dict(os.environ)))
        torch.set_num_threads(1)
        plans, dataset_json = _plan(root)
        torch.set_num_threads(1)  # the planner may change it
        bundle_dir = root / "bundle"
        members = []
        for name, trainer, folds, weight in MEMBERS:
            folder = f"{trainer}__nnUNetPlans__{CONFIGURATION}"
            _write_member(bundle_dir / folder, trainer, folds, plans, dataset_json)
            members.append({"name": name, "folder": folder, "trainer": trainer,
                            "configuration": CONFIGURATION, "folds": list(folds),
                            "weight": weight})
        write_bundle_manifest(bundle_dir, name="tiny", version="0.0.1", members=members,
                              threshold=0.5, min_component_voxels=4, demo=True)

        rng = np.random.default_rng(7)
        image = rng.normal(100, 10, IMAGE_SHAPE)
        image[3:9, 4:11, 6:15] += 60
        affine = np.array([[1.0, 0, 0, -7], [0, 1.0, 0, -8], [0, 0, 1.0, -10], [0, 0, 0, 1]])
        image_file = root / "sub-01_space-MNI152NLin2009aSym_T1w.nii.gz"
        nib.Nifti1Image(image.astype(np.float32), affine).to_filename(image_file)
        yield {"bundle": bundle_dir, "image": image_file, "root": root}
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def counted_predictor(tiny_bundle):
    """An :class:`EnsemblePredictor` (no TTA, one window per call) built while checkpoint loads
    are counted."""
    counts = {"load": 0, "build": 0}
    load, build = ensemble_module._load_checkpoint, ensemble_module._build_network

    def counting_load(*args, **kwargs):
        counts["load"] += 1
        return load(*args, **kwargs)

    def counting_build(*args, **kwargs):
        counts["build"] += 1
        return build(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ensemble_module, "_load_checkpoint", counting_load)
        mp.setattr(ensemble_module, "_build_network", counting_build)
        # one window per network call: nnU-Net's own loop, so the passes equal nnU-Net's
        predictor = EnsemblePredictor(tiny_bundle["bundle"], device="cpu", tta=False,
                                      step_size=0.5, num_threads=1, window_batch_size=1)
        yield predictor, counts


def nnunet_fold_probability(folder: Path, fold, image_file: Path, out: Path) -> np.ndarray:
    """Foreground softmax probability from nnU-Net's predictor alone, in nibabel axis order.

    ``fold`` may be a tuple of folds: nnU-Net then averages their logits.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    folds = fold if isinstance(fold, tuple) else (fold,)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=folds)
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(image_file)]], [str(out / "case")],
                                            save_probabilities=True, overwrite=True)
    probabilities = np.load(out / "case.npz")["probabilities"]  # (class, k, j, i)
    return probabilities[1].transpose(2, 1, 0)


def test_ensemble_is_weighted_mean_of_nnunet_softmax(tiny_bundle, counted_predictor):
    predictor, _ = counted_predictor
    img = nib.load(tiny_bundle["image"])
    image, zooms = img.get_fdata(dtype=np.float32), img.header.get_zooms()
    ensemble = predictor.predict_probability(image, zooms)
    assert ensemble.dtype == np.float32 and ensemble.shape == IMAGE_SHAPE

    bundle = load_bundle(tiny_bundle["bundle"])
    references, weights = [], []
    for member in bundle.members:
        for fold in member.folds:
            references.append(nnunet_fold_probability(
                member.folder, fold, tiny_bundle["image"],
                tiny_bundle["root"] / "reference" / member.name / str(fold)))
            weights.append(member.weight / len(member.folds))
    assert [p.label for p in predictor.passes] == ["mscsa/fold_0", "mscsa/fold_1", "plain/fold_0"]
    assert weights == [0.5, 0.5, 2.0]

    expected = sum(w * p for w, p in zip(weights, references)) / sum(weights)
    np.testing.assert_allclose(ensemble, expected, atol=1e-5)
    # each pass matches its nnU-Net reference, and the members really differ
    for ours, reference in zip(predictor.member_probabilities(image, zooms), references):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert np.abs(references[0] - references[2]).max() > 0.05
    assert 0.0 <= ensemble.min() and ensemble.max() <= 1.0
    # nnU-Net's own multi-fold path averages logits: a different answer, hence this module
    logit_mean = nnunet_fold_probability(bundle.members[0].folder, (0, 1), tiny_bundle["image"],
                                         tiny_bundle["root"] / "reference" / "logits")
    assert np.abs(logit_mean - (references[0] + references[1]) / 2).max() > 0.01


def test_predict_file_writes_probseg_and_mask(tiny_bundle, counted_predictor, tmp_path):
    predictor, _ = counted_predictor
    probseg, mask = predictor.predict_file(tiny_bundle["image"], tmp_path / "probseg.nii.gz",
                                           tmp_path / "mask.nii.gz")
    source = nib.load(tiny_bundle["image"])
    prob_img, mask_img = nib.load(probseg), nib.load(mask)
    for out in (prob_img, mask_img):
        assert out.shape == source.shape
        np.testing.assert_allclose(out.affine, source.affine)
    assert prob_img.get_data_dtype() == np.float32 and mask_img.get_data_dtype() == np.uint8
    prob = prob_img.get_fdata(dtype=np.float32)
    np.testing.assert_allclose(
        prob, predictor.predict_probability(source.get_fdata(dtype=np.float32), (1, 1, 1)),
        atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mask_img.dataobj), predictor.postprocess(prob))
    assert not list(tmp_path.glob(".*tmp*"))  # temporary names were renamed


def test_models_loaded_once(counted_predictor, tiny_bundle):
    predictor, counts = counted_predictor
    assert counts == {"load": 3, "build": 3}
    image = np.asarray(nib.load(tiny_bundle["image"]).dataobj, dtype=np.float32)
    predictor.predict_probability(image, (1.0, 1.0, 1.0))
    predictor.predict_probability(image, (1.0, 1.0, 1.0))
    assert counts == {"load": 3, "build": 3}
    assert len({id(p.predictor.network) for p in predictor.passes}) == 3


def test_tta_runs_and_keeps_probabilities_in_range(tiny_bundle):
    predictor = EnsemblePredictor(tiny_bundle["bundle"], tta=True, step_size=1.0, num_threads=1,
                                  verify=False)
    assert all(p.predictor.use_mirroring and p.predictor.allowed_mirroring_axes == (0, 1, 2)
               for p in predictor.passes)
    prob = predictor.predict_probability(np.ones(PATCH, np.float32) * 100, (1, 1, 1))
    assert prob.shape == PATCH and 0.0 <= prob.min() and prob.max() <= 1.0


def test_bad_inputs(counted_predictor):
    predictor, _ = counted_predictor
    with pytest.raises(ValueError, match="3-D"):
        predictor.predict_probability(np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict_probability(np.full((4, 4, 4), np.nan), (1, 1, 1))
    with pytest.raises(ValueError, match="step_size"):
        EnsemblePredictor(predictor.bundle, step_size=0)


def test_trainer_mismatch_is_reported(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle["bundle"])
    manifest = dict(bundle.manifest)
    manifest["members"] = [dict(manifest["members"][1], trainer="StrokeTrainerDefaultMSCSA")]
    copy = tmp_path / "bundle"
    copy.mkdir()
    (copy / manifest["members"][0]["folder"]).symlink_to(bundle.members[1].folder)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="trained with 'StrokeTrainerDefault'.*fix 'trainer'"):
        EnsemblePredictor(copy, verify=True)


def test_batched_windows_match_one_window_per_call(tiny_bundle):
    rng = np.random.default_rng(3)
    image = rng.normal(100, 10, (24, 24, 32)).astype(np.float32)  # 2×2×3 windows of 16³
    image[8:20, 5:15, 10:20] += 60
    reference = EnsemblePredictor(tiny_bundle["bundle"], tta=False, num_threads=1,
                                  folds_per_member=1, window_batch_size=1, verify=False)
    batched = EnsemblePredictor(tiny_bundle["bundle"], tta=False, num_threads=1,
                                folds_per_member=1, window_batch_size=5, verify=False)
    calls = []
    for one in batched.passes:
        one.predictor.network.register_forward_hook(
            lambda module, args, output: calls.append(args[0].shape[0]))
    expected = reference.predict_probability(image, (1, 1, 1))
    found = batched.predict_probability(image, (1, 1, 1))
    # nnU-Net accumulates the weighted logits in float16: one unit in the last place of the
    # sum moves these (large, random) logits' probability by up to ~3e-3
    np.testing.assert_allclose(found, expected, atol=5e-3)
    assert np.abs(found - expected).mean() < 1e-4
    assert calls == [5, 5, 2] * len(batched.passes)  # 12 windows per pass, 5 per call


def test_window_batch_size_default_and_checks(tiny_bundle):
    predictor = EnsemblePredictor(tiny_bundle["bundle"], tta=False, verify=False)
    # 16³ patches on CPU: the budget of two 64³ windows caps at 16 windows per call
    assert {one.predictor.window_batch_size for one in predictor.passes} == {16}
    with pytest.raises(ValueError, match="window_batch_size must be >= 1"):
        EnsemblePredictor(tiny_bundle["bundle"], window_batch_size=0, verify=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny_bundle, counted_predictor):
    cpu, _ = counted_predictor
    image = np.asarray(nib.load(tiny_bundle["image"]).dataobj, dtype=np.float32)
    expected = cpu.predict_probability(image, (1, 1, 1))
    found = {size: EnsemblePredictor(tiny_bundle["bundle"], device="cuda", tta=False,
                                     verify=False, window_batch_size=size
                                     ).predict_probability(image, (1, 1, 1))
             for size in (1, None)}  # None: the GPU default, 16 windows of 16³ per call
    # CUDA runs under nnU-Net's float16 autocast, and the test members' logits are large
    # (their segmentation layers are scaled by 20): a few hundredths at the worst voxel
    for probability in found.values():
        np.testing.assert_allclose(probability, expected, atol=5e-2)
        assert np.abs(probability - expected).mean() < 2e-3


def test_nothing_printed(tiny_bundle, capfd):
    predictor = EnsemblePredictor(tiny_bundle["bundle"], tta=False, num_threads=1, verify=False)
    predictor.predict_probability(np.ones((8, 8, 8), np.float32), (1, 1, 1))
    assert capfd.readouterr().out == ""  # nnU-Net's prints go to the log


# -- brain box (issue #18) -------------------------------------------------------------------------
@pytest.mark.parametrize("box, size, patch, step", [
    ((30, 200), 233, 128, 0.5), ((0, 10), 233, 128, 0.5), ((100, 233), 233, 128, 0.5),
    ((5, 90), 99, 64, 0.5), ((20, 30), 24, 16, 1.0), ((3, 9), 14, 16, 0.5)])
def test_window_region_grows_to_whole_windows_and_stays_inside(box, size, patch, step):
    (region,) = ensemble_module.window_region([box], [size], [patch], step)
    length = region.stop - region.start
    assert 0 <= region.start <= max(0, box[0]) and min(size, box[1]) <= region.stop <= size
    windows = ensemble_module.window_count(min(size, box[1]) - max(0, box[0]), patch, step)
    assert ensemble_module.window_count(length, patch, step) == windows  # no extra window
    # as large as those windows cover, or the whole axis
    assert length == min(size, int(patch + (windows - 1) * patch * step))


def test_brain_box_prediction(tiny_bundle):
    """The brain box predicts the box like the whole image does, with 0 outside, fewer
    windows, and one preprocessing for members that share a plan."""
    rng = np.random.default_rng(11)
    image = rng.normal(100, 10, (40, 24, 24)).astype(np.float32)  # 4×2×2 windows of 16³
    image[6:14, 8:16, 8:16] += 60
    predictor = EnsemblePredictor(tiny_bundle["bundle"], tta=False, num_threads=1,
                                  folds_per_member=1, window_batch_size=1, verify=False)
    windows, preprocessings = [], []
    for one in predictor.passes:
        one.predictor.network.register_forward_hook(
            lambda module, args, output: windows.append(args[0].shape[0]))
    from nnunetv2.inference import data_iterators

    original = data_iterators.PreprocessAdapterFromNpy

    class Counting(original):
        def __init__(self, *args, **kwargs):
            preprocessings.append(1)
            super().__init__(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data_iterators, "PreprocessAdapterFromNpy", Counting)
        whole = predictor.member_probabilities(image, (1, 1, 1))
        whole_windows, whole_preprocessings = len(windows), len(preprocessings)
        windows.clear()
        preprocessings.clear()
        region = (slice(0, 12), slice(0, 24), slice(0, 24))
        boxed = predictor.member_probabilities(image, (1, 1, 1), region)
    assert whole_preprocessings == len(preprocessings) == 1  # two members, one plan
    # two passes; the box 0:12 along i grows to one 16-voxel window there
    assert whole_windows == 2 * 4 * 2 * 2 and len(windows) == 2 * 1 * 2 * 2
    for full, box in zip(whole, boxed):
        assert box.shape == full.shape and box.dtype == np.float32
        assert np.abs(box[16:]).max() < 1e-9 and 0.0 <= box.min() and box.max() <= 1.0
        # i = 0..7 lies in the first window only, in both runs: the same prediction (nnU-Net
        # accumulates in float16, hence the tolerance)
        np.testing.assert_allclose(box[:8], full[:8], atol=5e-3)
        assert np.abs(box[:8] - 0.5).max() > 0.1  # not a constant
    # a box covering the whole image is the whole-image prediction
    everything = predictor.member_probabilities(image, (1, 1, 1), (slice(0, 40),) + (
        slice(0, 24),) * 2)
    for full, same in zip(whole, everything):
        np.testing.assert_allclose(same, full, atol=1e-6)
