"""``stroke-lesion-model import``: nnU-Net v1 and v2 models → a bundle, checked against v1.

The references live in ``tests/data/nnunet_v1/generic_small`` and
``tests/data/nnunet_v1/fabians_import_small`` (made by ``scripts/make_v1_reference_fixtures.py``
``--network generic|fabians`` with nnU-Net 1.7.1's own trainers, ``nnUNetTrainerV2`` and
``nnUNetTrainerV2_ResencUNet_DA3``, and its own predictor): two random-weight folds each
(``Generic_UNet``; ``FabiansUNet`` with PyPI 1.7.1's bias layout) saved in v1's layout, a
61×73×59 image, and v1's float32 probability of the two-fold ensemble (mirroring, Gaussian
sliding window, step 0.5). These tests run without nnU-Net v1 installed.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.fixtures import copy_v1_model
from stroke_lesion_app.cli.model import cli
from stroke_lesion_app.core.bundle import load_bundle, validate_bundle
from stroke_lesion_app.core.ensemble import EnsemblePredictor

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "nnunet_v1" / "generic_small"
V1_MODEL = (FIXTURE / "v1_models" / "3d_fullres" / "Task900_SmallImport" /
            "nnUNetTrainerV2__nnUNetPlansv2.1")
FABIANS_FIXTURE = FIXTURE.parent / "fabians_import_small"
FABIANS_MODEL = (FABIANS_FIXTURE / "v1_models" / "3d_fullres" / "Task900_SmallImport" /
                 "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1")
#: The issue's pass criteria against v1.
MAX_ABS_DIFF = 1e-3
MAX_MASK_FRACTION = 1e-4


def _run(*args):
    return CliRunner().invoke(cli, ["import", *[str(arg) for arg in args]])


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("stroke-lesion-model: error: "), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def _image(fixture: Path = FIXTURE):
    img = nib.load(str(fixture / "image.nii.gz"))
    return np.asarray(img.dataobj, dtype=np.float32), [float(z) for z in img.header.get_zooms()]


def _compare_with_v1(bundle: Path, fixture: Path) -> None:
    """The imported bundle gives v1's own probabilities (the issue's criteria); v2's logit
    averaging of the same networks would not."""
    image, spacing = _image(fixture)
    reference = np.load(fixture / "reference.npz")["probability"]
    reference_mask = np.asarray(nib.load(str(fixture / "reference_mask.nii.gz")).dataobj) > 0
    predictor = EnsemblePredictor(bundle, tta=True, step_size=0.5, num_threads=2)
    probability = predictor.predict_probability(image, spacing)
    assert probability.shape == reference.shape
    assert np.abs(probability - reference).max() <= MAX_ABS_DIFF
    assert ((probability > 0.5) != reference_mask).mean() <= MAX_MASK_FRACTION
    assert 0.05 < reference_mask.mean() < 0.95  # the masks compared are not trivial

    for one in predictor.passes:
        one.member = dataclasses.replace(one.member, aggregation="logits")
        one.predictor.aggregation = "logits"
    as_v2 = predictor.predict_probability(image, spacing)
    assert np.abs(as_v2 - reference).max() > 10 * MAX_ABS_DIFF


@pytest.fixture(scope="module")
def v1_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("import") / "small"
    result = _run(FIXTURE / "v1_models", "-o", out, "--name", "v1-small",
                  "--url", "https://example.org/weights", "--citation", "Someone 2022")
    assert result.exit_code == 0, result.output
    assert "1 member(s), 2 network(s)" in result.output
    return out


@pytest.fixture(scope="module")
def fabians_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("import") / "fabians"
    result = _run(FABIANS_FIXTURE / "v1_models", "-o", out, "--name", "v1-fabians")
    assert result.exit_code == 0, result.output
    assert "1 member(s), 2 network(s)" in result.output
    return out


@pytest.mark.slow
def test_v1_generic_unet_matches_nnunet_v1(v1_bundle):
    _compare_with_v1(v1_bundle, FIXTURE)


@pytest.mark.slow
def test_v1_fabians_unet_matches_nnunet_v1(fabians_bundle):
    """nnUNetTrainerV2_ResencUNet_DA3 (FabiansUNet, PyPI 1.7.1) gives v1's own output."""
    _compare_with_v1(fabians_bundle, FABIANS_FIXTURE)


#: the seed's MSCSA models through its own v1 fork: fixture, our trainer, our network, heads
SEED_MSCSA_IMPORTS = {
    "generic_mscsa": ("generic_mscsa_import_small", "StrokeTrainerDefaultMSCSA",
                      "PlainConvUNetMSCSA", 16),
    "fabians_mscsa": ("fabians_mscsa_import_small", "StrokeTrainerResUNetMSCSA",
                      "FabiansUNetMSCSA", 28),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SEED_MSCSA_IMPORTS))
def test_v1_seed_mscsa_matches_the_seeds_own_v1(kind, tmp_path):
    """The seed's ``nnUNetTrainerV2_MSCSA_Depth_1_SGD`` (``Generic_UNet_MSCSA``) and
    ``nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3`` (``FabiansUNet_MSCSA``), saved by the
    seed's own trainer in v1's layout (published MSCSA size, one fold), imported, give the
    seed's own v1 prediction (its fork's predictor, unchanged)."""
    folder, trainer, network, heads = SEED_MSCSA_IMPORTS[kind]
    fixture = FIXTURE.parent / folder
    result = _run(fixture / "v1_models", "-o", tmp_path / "out", "--name", kind)
    assert result.exit_code == 0, result.output
    (member,) = load_bundle(tmp_path / "out").members
    assert member.trainer == trainer and member.aggregation == "softmax"
    assert member.source["trainer"] == json.loads(
        (fixture / "reference.json").read_text())["trainer"]
    predictor = EnsemblePredictor(tmp_path / "out", tta=False, num_threads=2)
    built = predictor.passes[0].predictor.network
    assert type(built).__name__ == network and built.mscsa.block.csa1.num_heads == heads
    _compare_with_v1(tmp_path / "out", fixture)


def test_v1_import_manifest_and_plans(v1_bundle):
    bundle = validate_bundle(load_bundle(v1_bundle))
    assert not bundle.demo and bundle.licence == "not stated"
    assert bundle.source["url"] == "https://example.org/weights"
    assert bundle.source["citation"] == "Someone 2022"
    assert bundle.source["framework"] == "nnU-Net v1"
    (member,) = bundle.members
    assert member.trainer == "StrokeTrainerDefault" and member.aggregation == "softmax"
    assert member.folds == (0, 1) and member.weight == 2.0
    assert member.source["trainer"] == "nnUNetTrainerV2"
    assert member.source["plans"] == "nnUNetPlansv2.1"
    assert member.source["task"] == "Task900_SmallImport"
    identity = bundle.identity()  # what the sidecars record
    assert identity["source"]["url"] == "https://example.org/weights"
    assert identity["licence"] == "not stated"
    assert identity["members"][0]["source"]["trainer"] == "nnUNetTrainerV2"
    assert identity["members"][0]["aggregation"] == "softmax"

    v1_plans = pickle.loads((V1_MODEL / "plans.pkl").read_bytes())
    stage = v1_plans["plans_per_stage"][0]
    plans = json.loads((member.folder / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    assert plans["transpose_forward"] == [1, 0, 2] == v1_plans["transpose_forward"]
    assert plans["transpose_backward"] == v1_plans["transpose_backward"]
    assert configuration["patch_size"] == [int(v) for v in stage["patch_size"]]
    assert configuration["spacing"] == [float(v) for v in stage["current_spacing"]]
    assert configuration["normalization_schemes"] == ["ZScoreNormalization"]
    assert configuration["use_mask_for_norm"] == [True]
    arch = configuration["architecture"]["arch_kwargs"]
    assert arch["strides"][1:] == stage["pool_op_kernel_sizes"]
    assert arch["kernel_sizes"] == stage["conv_kernel_sizes"]
    assert arch["features_per_stage"] == [4, 8, 16, 32]
    assert plans["stroke_lesion_app"]["deep_supervision_outputs"] == 3

    checkpoint = torch.load(member.checkpoint_path(0), weights_only=False)
    assert checkpoint["trainer_name"] == "StrokeTrainerDefault"
    assert tuple(checkpoint["inference_allowed_mirroring_axes"]) == (0, 1, 2)
    weights = checkpoint["network_weights"]
    v1_weights = torch.load(V1_MODEL / "fold_0" / "model_final_checkpoint.model",
                            weights_only=False)["state_dict"]
    assert torch.equal(weights["decoder.transpconvs.0.weight"], v1_weights["tu.0.weight"])
    assert not weights["decoder.transpconvs.0.bias"].any()  # v1 has no bias there
    assert not weights["decoder.seg_layers.2.bias"].any()
    assert torch.equal(weights["decoder.seg_layers.2.weight"], v1_weights["seg_outputs.2.weight"])
    assert torch.equal(weights["encoder.stages.3.0.convs.1.conv.bias"],
                       v1_weights["conv_blocks_context.3.1.blocks.0.conv.bias"])
    assert torch.equal(weights["decoder.stages.0.convs.0.norm.weight"],
                       v1_weights["conv_blocks_localization.0.0.blocks.0.instnorm.weight"])


def _copy_v1_folder(target: Path, trainer: str, folds=(0, 1, 2, 3, 4),
                    model: Path = V1_MODEL) -> Path:
    """A fixture's v1 model as ``target`` (renamed trainer; folds reuse fold 0/1 weights)."""
    return copy_v1_model(model, target, trainer, folds)


@pytest.mark.slow
def test_mapping_layout_imports_in_one_command(tmp_path):
    """MAPPING's published tree (Task100: Default, DTK10, ResUNet-DA3; Task103: self-training;
    5 folds each) → one 20-network bundle, every network weighted equally, as MAPPING's
    ``predict_all_folds.sh`` averages the softmax of its 20 single-fold predictions."""
    root = tmp_path / "nnUNet_trained_models" / "nnUNet" / "3d_fullres"
    # Task103's folder as MAPPING's README names it; its checkpoints as their predict script
    # names the trainer (v1 restores the class named in .model.pkl)
    for task, folder, trainer, model in (
            ("Task100_ATLAS_v2", "nnUNetTrainerV2__nnUNetPlansv2.1", "nnUNetTrainerV2",
             V1_MODEL),
            ("Task100_ATLAS_v2", "nnUNetTrainerV2_800epochs_Loss_DiceTopK10__nnUNetPlansv2",
             "nnUNetTrainerV2_800epochs_Loss_DiceTopK10", V1_MODEL),
            ("Task100_ATLAS_v2", "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1",
             "nnUNetTrainerV2_ResencUNet_DA3", FABIANS_MODEL),
            ("Task103_ATLAS_v2_Self_Training", "nnUNetTrainerV2__nnUNetPlansv2.1",
             "nnUNetTrainerV2_DA3", V1_MODEL)):
        _copy_v1_folder(root / task / folder, trainer, model=model)
    out = tmp_path / "mapping"
    result = _run(tmp_path / "nnUNet_trained_models", "-o", out, "--name", "mapping",
                  "--licence", "not stated by the authors")
    assert result.exit_code == 0, result.output
    assert "4 member(s), 20 network(s)" in result.output
    bundle = load_bundle(out)
    assert {m.source["trainer"]: m.trainer for m in bundle.members} == {
        "nnUNetTrainerV2": "StrokeTrainerDefault",
        "nnUNetTrainerV2_800epochs_Loss_DiceTopK10": "StrokeTrainerDTK10",
        "nnUNetTrainerV2_ResencUNet_DA3": "StrokeTrainerResUNet",
        "nnUNetTrainerV2_DA3": "StrokeTrainerDefault"}
    assert all(m.aggregation == "softmax" and m.folds == (0, 1, 2, 3, 4)
               for m in bundle.members)
    assert {m.source["task"] for m in bundle.members} == {"Task100_ATLAS_v2",
                                                          "Task103_ATLAS_v2_Self_Training"}

    # a head small enough for one sliding window per network (fast)
    image, spacing = _image()
    image = image[16:46, 18:56, 14:44]
    predictor = EnsemblePredictor(out, tta=False, step_size=1.0, num_threads=2)
    assert len(predictor.passes) == 20
    assert {round(p.weight, 9) for p in predictor.passes} == {1.0}
    assert sum(type(p.predictor.network).__name__ == "FabiansUNet"
               for p in predictor.passes) == 5
    networks = predictor.member_probabilities(image, spacing)  # one per network
    ensemble = predictor.predict_probability(image, spacing)
    assert len(networks) == 20
    np.testing.assert_allclose(ensemble, np.mean(networks, axis=0), atol=1e-6)
    residual = [i for i, one in enumerate(predictor.passes)
                if one.member.trainer == "StrokeTrainerResUNet"]
    plain = [i for i in range(20) if i not in residual]
    # the ResUNet networks count: their output differs from the Generic_UNet ones
    assert np.abs(np.mean([networks[i] for i in residual], axis=0) -
                  np.mean([networks[i] for i in plain], axis=0)).max() > 0.05


def _v1_weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_v1_fabians_import_manifest_plans_and_weights(fabians_bundle):
    """The ResUNet member: our FabiansUNet port with the checkpoint's (PyPI) bias layout,
    v1's plan values, v1's tensors unchanged."""
    bundle = validate_bundle(load_bundle(fabians_bundle))
    (member,) = bundle.members
    assert member.trainer == "StrokeTrainerResUNet" and member.aggregation == "softmax"
    assert member.source["trainer"] == "nnUNetTrainerV2_ResencUNet_DA3"
    assert member.source["plans"] == "nnUNetPlans_FabiansResUNet_v2.1"
    assert member.source["network"] == "FabiansUNet"
    assert member.source["bias_layout"] == {"conv_bias": False, "seg_bias": True}

    v1_plans = pickle.loads((FABIANS_MODEL / "plans.pkl").read_bytes())
    stage = v1_plans["plans_per_stage"][0]
    plans = json.loads((member.folder / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    assert plans["transpose_forward"] == [1, 0, 2] == v1_plans["transpose_forward"]
    assert configuration["patch_size"] == [int(v) for v in stage["patch_size"]]
    assert configuration["use_mask_for_norm"] == [True]
    architecture = configuration["architecture"]
    assert architecture["network_class_name"] == \
        "stroke_lesion_app.nets.residual_unet_v1.FabiansUNet"
    arch = architecture["arch_kwargs"]
    assert arch["strides"] == stage["pool_op_kernel_sizes"]  # v1's [1, 1, 1] first
    assert arch["kernel_sizes"] == stage["conv_kernel_sizes"]
    assert arch["n_blocks_per_stage"] == list(stage["num_blocks_encoder"]) == [1, 2, 3, 4]
    assert arch["n_conv_per_stage_decoder"] == list(stage["num_blocks_decoder"])
    assert arch["features_per_stage"] == [2, 4, 8, 16]
    assert (arch["conv_bias"], arch["seg_bias"]) == (False, True)  # PyPI nnunet 1.7.1
    assert plans["stroke_lesion_app"]["deep_supervision_outputs"] == 3

    for fold in member.folds:
        weights = torch.load(member.checkpoint_path(fold), weights_only=False)["network_weights"]
        v1_weights = _v1_weights(FABIANS_MODEL / f"fold_{fold}" / "model_final_checkpoint.model")
        assert set(weights) == set(v1_weights)
        for key, value in v1_weights.items():
            assert torch.equal(weights[key], value), key
    predictor = EnsemblePredictor(fabians_bundle, tta=False, step_size=1.0, num_threads=2,
                                  folds_per_member=1)
    network = predictor.passes[0].predictor.network
    assert type(network).__name__ == "FabiansUNet"
    assert network.encoder.initial_conv.bias is None
    assert network.decoder.segmentation_output.bias is not None


def _write_v1_checkpoint(target: Path, state_dict: dict, like: Path) -> None:
    """``state_dict`` in v1's checkpoint file format (the other entries as in ``like``)."""
    checkpoint = torch.load(like, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = state_dict
    torch.save(checkpoint, target)


def _seed_layout_state_dict(seed: int, prefix: str = "") -> dict:
    """A random FabiansUNet state dict of the fixture's plan with the seed fork's bias layout
    (conv biases, no segmentation bias), made with our port (v1 keys)."""
    from stroke_lesion_app.nets.residual_unet_v1 import FabiansUNet

    stage = pickle.loads((FABIANS_MODEL / "plans.pkl").read_bytes())["plans_per_stage"][0]
    torch.manual_seed(seed)
    network = FabiansUNet.from_v1_plan(stage, 1, 2, base_num_features=2, conv_bias=True,
                                       seg_bias=False)
    network.apply(network.initialize)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return {prefix + key: value for key, value in network.state_dict().items()}


def test_v1_fabians_seed_bias_layout_and_module_prefix(tmp_path):
    """A checkpoint with the seed fork's layout (and DataParallel's ``module.``) keeps it."""
    folder = _copy_v1_folder(tmp_path / "models" / "Task100_ATLAS_v2" /
                             "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1",
                             "nnUNetTrainerV2_ResencUNet_DA3", (0, 1), FABIANS_MODEL)
    states = {}
    for fold in (0, 1):
        states[fold] = _seed_layout_state_dict(fold, prefix="module.")
        checkpoint = folder / f"fold_{fold}" / "model_final_checkpoint.model"
        _write_v1_checkpoint(checkpoint, states[fold], checkpoint)
    result = _run(tmp_path / "models", "-o", tmp_path / "out", "--name", "seed")
    assert result.exit_code == 0, result.output
    (member,) = load_bundle(tmp_path / "out").members
    assert member.source["bias_layout"] == {"conv_bias": True, "seg_bias": False}
    arch = json.loads((member.folder / "plans.json").read_text())[
        "configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert (arch["conv_bias"], arch["seg_bias"]) == (True, False)
    for fold in (0, 1):
        weights = torch.load(member.checkpoint_path(fold), weights_only=False)["network_weights"]
        assert set(weights) == {k.removeprefix("module.") for k in states[fold]}
        for key, value in states[fold].items():
            assert torch.equal(weights[key.removeprefix("module.")], value), key
    image, spacing = _image(FABIANS_FIXTURE)
    predictor = EnsemblePredictor(tmp_path / "out", tta=False, step_size=1.0, num_threads=2)
    network = predictor.passes[0].predictor.network
    assert network.encoder.initial_conv.bias is not None
    assert network.decoder.segmentation_output.bias is None
    probability = predictor.predict_probability(image, spacing)
    assert probability.shape == image.shape and np.isfinite(probability).all()


MSCSA_FIXTURE = FIXTURE.parent / "fabians_mscsa_small"
MSCSA_TRAINER = "nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3"


def _seed_mscsa_model(target: Path) -> dict:
    """A v1 folder of the seed's ``nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3`` (random
    ``FabiansUNet_MSCSA`` at the published MSCSA settings, 28 heads, on the 5-stage plan of the
    ``fabians_mscsa_small`` fixture, 1 channel, 2 classes), its state dict under the seed's key
    names: the names come from the fixture's real seed state dict (same stage count, so the
    same names), matched to ours by :func:`map_seed_mscsa_state_dict`. Returns our state dict."""
    from stroke_lesion_app.nets.residual_unet_v1 import (
        FabiansUNetMSCSA,
        map_seed_mscsa_state_dict,
    )

    config = json.loads((MSCSA_FIXTURE / "config.json").read_text())
    seed_keys = list(torch.load(MSCSA_FIXTURE / "state_dict.pth", weights_only=True))
    seed_name = dict(zip(map_seed_mscsa_state_dict(dict.fromkeys(seed_keys)), seed_keys))
    plans = pickle.loads((FABIANS_MODEL / "plans.pkl").read_bytes())
    stage = plans["plans_per_stage"][0]
    for key in ("pool_op_kernel_sizes", "conv_kernel_sizes", "num_blocks_encoder",
                "num_blocks_decoder"):
        stage[key] = config["stage_plan"][key]
    stage["patch_size"] = np.array([16, 32, 32])
    plans["base_num_features"] = 4
    torch.manual_seed(3)
    network = FabiansUNetMSCSA.from_v1_plan(stage, 1, 2, base_num_features=4, conv_bias=True,
                                            seg_bias=False, mscsa_num_heads=28)
    network.apply(network.initialize)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    ours = network.state_dict()
    assert set(ours) == set(seed_name)  # the fixture's seed names cover our network
    _copy_v1_folder(target, MSCSA_TRAINER, (0,), FABIANS_MODEL)
    (target / "plans.pkl").write_bytes(pickle.dumps(plans))
    checkpoint = target / "fold_0" / "model_final_checkpoint.model"
    _write_v1_checkpoint(checkpoint, {seed_name[k]: v for k, v in ours.items()}, checkpoint)
    return ours


def test_v1_seed_fabians_unet_mscsa_maps_onto_ours(tmp_path):
    folder = (tmp_path / "models" / "Task100_ATLAS_v2" /
              f"{MSCSA_TRAINER}__nnUNetPlans_FabiansResUNet_v2.1")
    ours = _seed_mscsa_model(folder)
    saved = _v1_weights(folder / "fold_0" / "model_final_checkpoint.model")
    assert any(k.startswith("mscsa_block.0.attn1.") for k in saved)  # seed names on disk
    assert any(k.startswith("SIM.") for k in saved)
    result = _run(tmp_path / "models", "-o", tmp_path / "out", "--name", "mscsa")
    assert result.exit_code == 0, result.output
    (member,) = load_bundle(tmp_path / "out").members
    assert member.trainer == "StrokeTrainerResUNetMSCSA"
    assert member.source["network"] == "FabiansUNet_MSCSA"
    assert member.source["bias_layout"] == {"conv_bias": True, "seg_bias": False}
    predictor = EnsemblePredictor(tmp_path / "out", tta=False, step_size=1.0, num_threads=2)
    network = predictor.passes[0].predictor.network
    assert type(network).__name__ == "FabiansUNetMSCSA"
    assert network.mscsa.block.csa1.num_heads == 28
    loaded = network.state_dict()
    assert set(loaded) == set(ours)
    for key, value in ours.items():
        assert torch.equal(loaded[key].cpu(), value), key
    image, spacing = _image(FABIANS_FIXTURE)
    probability = predictor.predict_probability(image[20:40, 20:52, 20:52], spacing)
    assert np.isfinite(probability).all() and probability.max() <= 1


GENERIC_MSCSA_FIXTURE = FIXTURE.parent / "generic_mscsa_small"


def test_seed_generic_unet_mscsa_weights_reproduce_the_seed():
    """The seed's Generic_UNet_MSCSA (fixture made with its own code, 16 heads, head dim 2)
    mapped onto our PlainConvUNetMSCSA gives the seed's outputs, every deep-supervision scale."""
    from torch import nn

    from stroke_lesion_app.nets.unet_mscsa import PlainConvUNetMSCSA
    from stroke_lesion_app.training.model_import import map_generic_unet_mscsa_weights

    config = json.loads((GENERIC_MSCSA_FIXTURE / "config.json").read_text())
    n_stages = len(config["conv_kernel_sizes"])
    network = PlainConvUNetMSCSA(
        1, n_stages, [config["base_num_features"] * 2 ** s for s in range(n_stages)],
        nn.Conv3d, config["conv_kernel_sizes"], [[1, 1, 1]] + config["pool_op_kernel_sizes"],
        [2] * n_stages, 2, [2] * (n_stages - 1), True, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, nn.LeakyReLU,
        {"negative_slope": 1e-2, "inplace": True}, True,
        mscsa_num_heads=config["mscsa_num_heads"], mscsa_head_dim=config["mscsa_head_dim"])
    state = torch.load(GENERIC_MSCSA_FIXTURE / "state_dict.pth", weights_only=True)
    assert any(k.startswith("mscsa_block.0.attn1.") for k in state)
    map_generic_unet_mscsa_weights(state, network, GENERIC_MSCSA_FIXTURE)
    io = torch.load(GENERIC_MSCSA_FIXTURE / "io.pth", weights_only=True)
    network.eval()
    with torch.no_grad():
        outputs = network(io["input"])
    assert len(outputs) == len(io["outputs"]) == n_stages - 1
    for ours, seed in zip(outputs, io["outputs"]):
        assert ours.shape == seed.shape
        assert (ours - seed).abs().max() <= 1e-4 * max(1.0, float(seed.abs().max()))
    # a wrong mapping shows: the MSCSA left at its own initialisation gives other outputs
    network.mscsa.initialize_weights()
    with torch.no_grad():
        assert (network(io["input"])[0] - io["outputs"][0]).abs().max() > 1e-2


def test_v1_seed_generic_unet_mscsa_imports(tmp_path):
    """A seed ``nnUNetTrainerV2_MSCSA_Depth_1_SGD`` checkpoint (published 16 heads × 40; the
    backbone of the generic fixture, the MSCSA random under the seed's key names, which come
    from the seed's own state dict of the same stage count) → StrokeTrainerDefaultMSCSA."""
    from stroke_lesion_app.nets import MSCSA
    from stroke_lesion_app.nets.residual_unet_v1 import map_seed_mscsa_state_dict

    seed_keys = [k for k in torch.load(GENERIC_MSCSA_FIXTURE / "state_dict.pth",
                                       weights_only=True)
                 if k.startswith(("mscsa_block.", "norm.", "SIM."))]
    seed_name = dict(zip(map_seed_mscsa_state_dict(dict.fromkeys(seed_keys)), seed_keys))
    torch.manual_seed(5)
    mscsa = MSCSA(3, [4, 8, 16, 32], num_heads=16)
    mscsa.initialize_weights()
    ours = {f"mscsa.{k}": v for k, v in mscsa.state_dict().items()}
    assert set(ours) == set(seed_name)
    trainer = "nnUNetTrainerV2_MSCSA_Depth_1_SGD"
    folder = _copy_v1_folder(tmp_path / "models" / "Task101_ATLAS" /
                             f"{trainer}__nnUNetPlansv2.1", trainer, (0,))
    checkpoint = folder / "fold_0" / "model_final_checkpoint.model"
    backbone = _v1_weights(checkpoint)
    _write_v1_checkpoint(checkpoint, {**backbone, **{seed_name[k]: v for k, v in ours.items()}},
                         checkpoint)
    result = _run(tmp_path / "models", "-o", tmp_path / "out", "--name", "generic-mscsa")
    assert result.exit_code == 0, result.output
    (member,) = load_bundle(tmp_path / "out").members
    assert member.trainer == "StrokeTrainerDefaultMSCSA"
    assert member.source["network"] == "Generic_UNet_MSCSA"
    predictor = EnsemblePredictor(tmp_path / "out", tta=False, step_size=1.0, num_threads=2)
    network = predictor.passes[0].predictor.network
    assert type(network).__name__ == "PlainConvUNetMSCSA"
    assert network.mscsa.block.csa1.num_heads == 16
    loaded = network.state_dict()
    for key, value in ours.items():
        assert torch.equal(loaded[key].cpu(), value), key
    assert torch.equal(loaded["decoder.seg_layers.2.weight"].cpu(),
                       backbone["seg_outputs.2.weight"])
    image, spacing = _image()
    probability = predictor.predict_probability(image[16:46, 18:56, 14:44], spacing)
    assert np.isfinite(probability).all() and probability.max() <= 1


def test_v1_generic_unet_with_differing_kernels_is_refused(tmp_path):
    """v1's Generic_UNet decoder takes the kernel of the stage below: no v2 PlainConvUNet."""
    folder = _copy_v1_folder(tmp_path / "models" / "T" / "nnUNetTrainerV2__P",
                             "nnUNetTrainerV2", (0,))
    plans = pickle.loads((folder / "plans.pkl").read_bytes())
    plans["plans_per_stage"][0]["conv_kernel_sizes"][0] = [1, 3, 3]
    (folder / "plans.pkl").write_bytes(pickle.dumps(plans))
    _one_line_error(_run(tmp_path / "models", "-o", tmp_path / "out", "--name", "x"),
                    folder / "plans.pkl", "[1, 3, 3]", "stage below", "cannot be imported")


def test_v1_mscsa_mismatches_give_one_line(tmp_path):
    """MSCSA weights under a plain trainer, plain weights under the MSCSA trainer."""
    folder = _copy_v1_folder(tmp_path / "a" / "T" / "nnUNetTrainerV2_ResencUNet_DA3__P",
                             "nnUNetTrainerV2_ResencUNet_DA3", (0,), FABIANS_MODEL)
    checkpoint = folder / "fold_0" / "model_final_checkpoint.model"
    state = _v1_weights(checkpoint)
    state["SIM.0.global_act.0.weight"] = torch.zeros(1)
    _write_v1_checkpoint(checkpoint, state, checkpoint)
    _one_line_error(_run(tmp_path / "a", "-o", tmp_path / "out", "--name", "x"),
                    checkpoint, "MSCSA module", MSCSA_TRAINER)
    _copy_v1_folder(tmp_path / "b" / "T" / f"{MSCSA_TRAINER}__P", MSCSA_TRAINER, (0,),
                    FABIANS_MODEL)
    _one_line_error(_run(tmp_path / "b", "-o", tmp_path / "out", "--name", "x"),
                    MSCSA_TRAINER, "no MSCSA module")
    assert not (tmp_path / "out").exists()


def test_v1_fabians_bad_checkpoints_give_one_line(tmp_path):
    """Folds of two v1 codes in one folder, and a Generic_UNet checkpoint in a ResUNet folder."""
    folder = _copy_v1_folder(tmp_path / "models" / "T" / "nnUNetTrainerV2_ResencUNet_DA3__P",
                             "nnUNetTrainerV2_ResencUNet_DA3", (0, 1), FABIANS_MODEL)
    checkpoint = folder / "fold_1" / "model_final_checkpoint.model"
    _write_v1_checkpoint(checkpoint, _seed_layout_state_dict(1), checkpoint)
    _one_line_error(_run(tmp_path / "models", "-o", tmp_path / "out", "--name", "x"),
                    checkpoint, "bias layout", "one code's folds")
    shutil.copyfile(V1_MODEL / "fold_0" / "model_final_checkpoint.model",
                    folder / "fold_0" / "model_final_checkpoint.model")
    _one_line_error(_run(tmp_path / "models", "-o", tmp_path / "out", "--name", "x"),
                    folder / "fold_0" / "model_final_checkpoint.model",
                    "not a FabiansUNet state dict")
    assert not (tmp_path / "out").exists()
    assert not [p for p in (tmp_path / "models").parent.iterdir()
                if p.name.startswith(".")]  # no partial bundle


@pytest.mark.parametrize("case", ["empty", "unknown_trainer", "mixed_folds", "exists", "bad_pkl"])
def test_bad_sources_give_one_line(tmp_path, case):
    out = tmp_path / "out"
    source = tmp_path / "models"
    source.mkdir()
    needles = []
    if case == "empty":
        needles = [source, "no nnU-Net trained-model folder"]
    elif case == "unknown_trainer":
        _copy_v1_folder(source / "T" / "nnUNetTrainerV2_BN__P", "nnUNetTrainerV2_BN", (0,))
        needles = ["nnUNetTrainerV2_BN", "not supported"]
    elif case == "mixed_folds":
        folder = _copy_v1_folder(source / "T" / "nnUNetTrainerV2__P", "nnUNetTrainerV2", (0, 1))
        info_file = folder / "fold_1" / "model_final_checkpoint.model.pkl"
        info = pickle.loads(info_file.read_bytes())
        info_file.write_bytes(pickle.dumps({**info, "name": "nnUNetTrainerV2_DA3"}))
        needles = [info_file, "nnUNetTrainerV2_DA3", "one trainer's folds"]
    elif case == "exists":
        _copy_v1_folder(source / "T" / "nnUNetTrainerV2__P", "nnUNetTrainerV2", (0,))
        out.mkdir()
        needles = [out, "already exists"]
    elif case == "bad_pkl":
        folder = _copy_v1_folder(source / "T" / "nnUNetTrainerV2__P", "nnUNetTrainerV2", (0,))
        (folder / "plans.pkl").write_bytes(b"not a pickle")
        needles = ["plans.pkl", "not a readable"]
    _one_line_error(_run(source, "-o", out, "--name", "x"), *needles)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-made
    if case != "exists":
        assert not out.exists()


def _as_v2_results(v1_bundle: Path, root: Path, trainer: str = "nnUNetTrainer") -> Path:
    """An nnU-Net v2 results folder (standard trainer) made from the imported member."""
    (member,) = load_bundle(v1_bundle).members
    folder = root / "Dataset900_Small" / f"{trainer}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(member.folder / name, folder / name)
    for fold in member.folds:
        checkpoint = torch.load(member.checkpoint_path(fold), weights_only=False)
        checkpoint["trainer_name"] = trainer
        checkpoint["optimizer_state"] = {"dropped": True}  # not carried into the bundle
        (folder / f"fold_{fold}").mkdir()
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def test_v2_folder_and_zip_with_a_standard_trainer(v1_bundle, tmp_path):
    """v2 models with nnU-Net's own nnUNetTrainer import from a folder and from its zip."""
    folder = _as_v2_results(v1_bundle, tmp_path / "nnUNet_results")
    result = _run(folder, "-o", tmp_path / "from_folder", "--name", "v2")
    assert result.exit_code == 0, result.output
    archive = tmp_path / "export.zip"  # nnUNetv2_export_model_to_zip's layout
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(tmp_path / "nnUNet_results"))
    result = _run(archive, "-o", tmp_path / "from_zip", "--name", "v2")
    assert result.exit_code == 0, result.output
    from_folder = load_bundle(tmp_path / "from_folder")
    from_zip = load_bundle(tmp_path / "from_zip")
    (member,) = from_zip.members
    assert member.trainer == "nnUNetTrainer" and member.aggregation == "logits"
    assert member.source["framework"] == "nnU-Net v2"
    assert member.source["dataset"] == "Dataset900_Small"
    assert member.sha256 == from_folder.members[0].sha256
    checkpoint = torch.load(member.checkpoint_path(0), weights_only=False)
    assert "optimizer_state" not in checkpoint
    predictor = EnsemblePredictor(tmp_path / "from_zip", tta=False, step_size=1.0, num_threads=2,
                                  folds_per_member=1)
    assert predictor.passes[0].predictor.network.__class__.__name__ == "PlainConvUNet"


def test_v2_unknown_trainer_and_zip_escape(v1_bundle, tmp_path):
    folder = _as_v2_results(v1_bundle, tmp_path / "results", trainer="SomeonesTrainerXYZ")
    _one_line_error(_run(folder, "-o", tmp_path / "out", "--name", "x"),
                    "SomeonesTrainerXYZ", "install")
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("../escape.txt", "x")
    _one_line_error(_run(archive, "-o", tmp_path / "out", "--name", "x"), "outside")
    assert not (tmp_path / "escape.txt").exists()
