"""Our nnU-Net v2 trainers: discovery through nnU-Net's own lookup, names, networks from plans."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from copy import deepcopy

import pytest
import torch

os.environ.setdefault("nnUNet_compile", "f")

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from stroke_lesion_app.core.nnunet_lookup import (
    TRAINER_ENV_VAR,
    TRAINER_NAMES,
    ensure_trainer_discovery,
    trainer_folder,
)
from stroke_lesion_app.training.networks import blocks_per_stage
from stroke_lesion_app.training.nnunet_trainers import stroke_lesion_trainers

torch.set_num_threads(1)

PATCH = [32, 32, 32]
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
FEATURES = [8, 16, 32, 32]


def tiny_plans() -> dict:
    """A 4-stage 32³ ``3d_fullres`` plan as nnU-Net 2.8's default planner writes it."""
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [40, 40, 40],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": PATCH,
                "median_image_size_in_voxels": [40, 40, 40],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {},
                "resampling_fn_seg_kwargs": {},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {},
                "batch_dice": True,
                "architecture": {
                    "network_class_name": (
                        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
                    ),
                    "arch_kwargs": {
                        "n_stages": 4,
                        "features_per_stage": FEATURES,
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * 4,
                        "strides": STRIDES,
                        "n_conv_per_stage": [2, 2, 2, 2],
                        "n_conv_per_stage_decoder": [2, 2, 2],
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            }
        },
    }


DATASET_JSON = {
    "channel_names": {"0": "T1w"},
    "labels": {"background": 0, "lesion": 1},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}

#: trainer -> (backbone class name, MSCSA heads or None)
EXPECTED = {
    "StrokeTrainerDefault": ("PlainConvUNet", None),
    "StrokeTrainerDefaultMSCSA": ("PlainConvUNetMSCSA", 16),
    "StrokeTrainerDTK10": ("PlainConvUNet", None),
    "StrokeTrainerDTK10MSCSA": ("PlainConvUNetMSCSA", 16),
    "StrokeTrainerResUNet": ("FabiansUNet", None),
    "StrokeTrainerResUNetMSCSA": ("FabiansUNetMSCSA", 28),
}


@pytest.fixture
def clean_env(monkeypatch):
    """No external trainer folders at the start; the variable is restored afterwards."""
    monkeypatch.delenv(TRAINER_ENV_VAR, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------------------------
# discovery and names
# --------------------------------------------------------------------------------------------
def test_trainer_folder_holds_only_trainer_modules():
    folder = trainer_folder()
    assert folder.is_dir()
    modules = [m.name for m in pkgutil.iter_modules([str(folder)])]
    assert modules == ["stroke_lesion_trainers"]
    assert sorted(stroke_lesion_trainers.__all__) == sorted(TRAINER_NAMES) == sorted(EXPECTED)


def test_ensure_trainer_discovery_appends_once():
    env = {TRAINER_ENV_VAR: os.pathsep.join(["/somewhere/else", ""])}
    value = ensure_trainer_discovery(env)
    assert value == os.pathsep.join(["/somewhere/else", str(trainer_folder())])
    assert ensure_trainer_discovery(env) == value  # idempotent
    assert ensure_trainer_discovery({}) == str(trainer_folder())


def test_discovery_through_nnunet_lookup(clean_env):
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer"):
        recursive_find_trainer_class_by_name("StrokeTrainerDefault")
    ensure_trainer_discovery()
    assert str(trainer_folder()) in os.environ[TRAINER_ENV_VAR].split(os.pathsep)
    for name in TRAINER_NAMES:
        cls = recursive_find_trainer_class_by_name(name)  # what nnUNetv2_train / predictor call
        assert cls.__name__ == name
        assert cls.__module__ == "stroke_lesion_trainers"  # found in our folder, not nnU-Net's
        assert issubclass(cls, nnUNetTrainer)


def test_no_name_clash_with_nnunet_trainers():
    package = importlib.import_module("nnunetv2.training.nnUNetTrainer")
    nnunet_names = set()
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        module = importlib.import_module(info.name)
        nnunet_names |= {n for n, obj in vars(module).items() if inspect.isclass(obj)}
    assert "nnUNetTrainer" in nnunet_names and "nnUNetTrainerDiceTopK10Loss" in nnunet_names
    assert nnunet_names.isdisjoint(TRAINER_NAMES)


# --------------------------------------------------------------------------------------------
# networks from a tiny plan
# --------------------------------------------------------------------------------------------
def test_blocks_per_stage_truncated_or_extended():
    assert blocks_per_stage(4) == [1, 2, 3, 4]
    assert blocks_per_stage(6) == [1, 2, 3, 4, 4, 4]
    assert blocks_per_stage(8) == [1, 2, 3, 4, 4, 4, 4, 4]
    with pytest.raises(ValueError, match="got 0"):
        blocks_per_stage(0)


@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_build_network_architecture(name):
    cls = getattr(stroke_lesion_trainers, name)
    assert list(inspect.signature(cls.build_network_architecture).parameters) == [
        "plans_manager", "configuration_manager", "num_input_channels", "num_output_channels",
        "enable_deep_supervision",
    ]
    plans = tiny_plans()
    pristine = deepcopy(plans)
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration("3d_fullres")
    backbone, heads = EXPECTED[name]
    x = torch.randn(2, 1, *PATCH)

    for deep_supervision in (True, False):
        torch.manual_seed(0)
        net = cls.build_network_architecture(plans_manager, configuration, 1, 2, deep_supervision)
        assert type(net).__name__ == backbone
        assert net.decoder.deep_supervision is deep_supervision
        assert [int(c) for c in net.encoder.output_channels] == FEATURES
        if heads is None:
            assert not hasattr(net, "mscsa")
        else:
            assert net.mscsa.block.csa1.num_heads == heads
        if backbone.startswith("Fabians"):  # v1 FabiansUNet port (nets/residual_unet_v1.py)
            assert [len(stage.convs) for stage in net.encoder.stages] == [1, 2, 3, 4]
            assert [len(s.convs) for s in net.decoder.stages] == [1, 1, 1]
        with torch.no_grad():
            out = net(x)
        if deep_supervision:
            assert [tuple(o.shape) for o in out] == [
                (2, 2, 32, 32, 32), (2, 2, 16, 16, 16), (2, 2, 8, 8, 8)
            ]
        else:
            assert out.shape == (2, 2, *PATCH)
    assert plans == pristine  # the plans were not edited


def atlas_plans() -> dict:
    """The paper's 128³ ATLAS ``3d_fullres`` plan as nnU-Net v2 writes it (6 stages, 32…320)."""
    plans = tiny_plans()
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = [128, 128, 128]
    config["architecture"]["arch_kwargs"].update(
        n_stages=6, features_per_stage=[32, 64, 128, 256, 320, 320],
        kernel_sizes=[[3, 3, 3]] * 6, strides=[[1, 1, 1]] + [[2, 2, 2]] * 5,
        n_conv_per_stage=[2] * 6, n_conv_per_stage_decoder=[2] * 5,
    )
    return plans


@pytest.mark.parametrize(
    ("name", "expected"),
    [("StrokeTrainerResUNet", 72_137_888), ("StrokeTrainerResUNetMSCSA", 112_861_728)],
)
def test_resunet_trainers_match_the_seed_network_at_the_atlas_plan(name, expected):
    """Exact parameter counts of the seed's v1 FabiansUNet(_MSCSA) (tests/data/nnunet_v1/...)."""
    plans_manager = PlansManager(atlas_plans())
    configuration = plans_manager.get_configuration("3d_fullres")
    cls = getattr(stroke_lesion_trainers, name)
    with torch.device("meta"):  # a parameter count only, no memory
        net = cls.build_network_architecture(plans_manager, configuration, 1, 2, True)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net.encoder.initial_conv.bias is not None  # the seed's bias layout
    assert net.decoder.segmentation_output.bias is None


def test_resunet_deep_supervision_matches_the_trainer_scales(tmp_path, monkeypatch):
    """One output per deep-supervision scale of nnU-Net v2's trainer, highest resolution first."""
    trainer = make_trainer("StrokeTrainerResUNet", tmp_path, monkeypatch)
    scales = trainer._get_deep_supervision_scales()
    net = trainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, 2, True
    ).eval()
    with torch.no_grad():
        outputs = net(torch.randn(1, 1, *PATCH))
    assert len(outputs) == len(scales)
    for output, scale in zip(outputs, scales):
        assert list(output.shape[2:]) == [round(p * s) for p, s in zip(PATCH, scale)]
    loss = trainer._build_loss()  # deep-supervision wrapper: one weight per output
    target = [torch.randint(0, 2, (1, 1, *o.shape[2:])) for o in outputs]
    assert torch.isfinite(loss(outputs, target))


# --------------------------------------------------------------------------------------------
# trainer settings (constructed as nnU-Net does, without data)
# --------------------------------------------------------------------------------------------
def make_trainer(name, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    plans = dict(tiny_plans(), continue_training=False)  # key popped by nnU-Net >= 2.7
    cls = getattr(stroke_lesion_trainers, name)
    return cls(plans, "3d_fullres", 0, DATASET_JSON, device=torch.device("cpu"))


def test_dtk10_trainer_settings(tmp_path, monkeypatch):
    from nnunetv2.training.loss.compound_losses import DC_and_topk_loss

    trainer = make_trainer("StrokeTrainerDTK10MSCSA", tmp_path, monkeypatch)
    assert trainer.num_epochs == 800
    assert (trainer.initial_lr, trainer.weight_decay) == (1e-2, 3e-5)
    loss = trainer._build_loss()
    assert isinstance(loss.loss, DC_and_topk_loss)
    assert loss.loss.ce.k == 10
    assert make_trainer("StrokeTrainerDefaultMSCSA", tmp_path, monkeypatch).num_epochs == 1000


def test_resunet_trainer_uses_da3(tmp_path, monkeypatch):
    from batchgeneratorsv2.transforms.intensity.brightness import BrightnessAdditiveTransform
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

    trainer = make_trainer("StrokeTrainerResUNetMSCSA", tmp_path, monkeypatch)
    rotation, dummy_2d, _, mirror_axes = (
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    )
    pipeline = trainer.get_training_transforms(
        PATCH, rotation, None, mirror_axes, dummy_2d, use_mask_for_norm=[False]
    )
    transforms = pipeline.transforms
    spatial = next(t for t in transforms if isinstance(t, SpatialTransform))
    assert (spatial.p_rotation, spatial.p_scaling, spatial.p_elastic_deform) == (0.3, 0.3, 0.3)
    assert spatial.scaling.contrast_range == (0.65, 1.6)  # v1's sampling (BGContrast)
    brightness = [getattr(t, "transform", None) for t in transforms]
    additive = [t for t in brightness if isinstance(t, BrightnessAdditiveTransform)]
    assert len(additive) == 1 and additive[0].sigma == 0.2
    assert rotation == pytest.approx((-torch.pi / 6, torch.pi / 6))


# --------------------------------------------------------------------------------------------
# inference contract: nnU-Net's predictor rebuilds our network from the trainer name
# --------------------------------------------------------------------------------------------
def test_predictor_restores_mscsa_network(tmp_path, clean_env):
    import json

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    name = "StrokeTrainerResUNetMSCSA"
    plans_manager = PlansManager(tiny_plans())
    configuration = plans_manager.get_configuration("3d_fullres")
    torch.manual_seed(0)
    trained = getattr(stroke_lesion_trainers, name).build_network_architecture(
        plans_manager, configuration, 1, 2, True
    )
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "plans.json").write_text(json.dumps(tiny_plans()))
    (tmp_path / "dataset.json").write_text(json.dumps(DATASET_JSON))
    checkpoint = {
        "trainer_name": name,
        "init_args": {"configuration": "3d_fullres"},
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "network_weights": trained.state_dict(),
    }
    torch.save(checkpoint, tmp_path / "fold_0" / "checkpoint_final.pth")

    ensure_trainer_discovery()
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(tmp_path), use_folds=(0,))
    restored = predictor.network.eval()
    assert type(restored).__name__ == "FabiansUNetMSCSA"
    assert restored.decoder.deep_supervision is False

    trained.eval().decoder.deep_supervision = False
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), trained(x))
