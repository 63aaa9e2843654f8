"""Import published nnU-Net models (v1 and v2) as a model bundle (``stroke-lesion-model import``).

Sources, found by walking the given folders (or zips) in sorted order:

* **nnU-Net v2** trained-model folders ``<Trainer>__<Plans>__<configuration>/`` with
  ``plans.json``, ``dataset.json`` and ``fold_N/checkpoint_final.pth`` (what ``nnUNet_results``
  holds, and what ``nnUNetv2_export_model_to_zip`` puts in its zip under
  ``Dataset<NNN>_<Name>/``). They are copied as they are (weights-only checkpoints); the trainer
  named in the checkpoints must be one nnU-Net's lookup finds (its own, e.g. ``nnUNetTrainer``,
  or ours). Their members keep nnU-Net v2's averaging of logits.
* **nnU-Net v1** trained-model folders ``3d_fullres/Task<NNN>_<Name>/<Trainer>__<Plans>/`` with
  ``plans.pkl`` and ``fold_N/model_final_checkpoint.model`` + ``.model.pkl`` (e.g. MAPPING's
  published ATLAS models). Each is converted into an nnU-Net v2 trained-model folder:

  - ``plans.json`` from the v1 plans of the stage the model was trained on: normalisation scheme
    per channel and its nonzero-mask flag, target spacing, ``transpose_forward/backward``, patch
    size, pool and conv kernel sizes, features per stage, convolutions per stage, v1's
    resampling orders (data 3, probabilities 1, separate z above anisotropy 3, as v2's
    ``resample_data_or_seg_to_shape``);
  - ``dataset.json`` from the plans' modalities and classes;
  - ``fold_N/checkpoint_final.pth`` whose ``network_weights`` are the v1 weights put into the
    equivalent v2 network built by our trainer of the same scheme from that ``plans.json``
    (:data:`V1_TRAINERS`). v1's ``Generic_UNet`` is nnU-Net v2's ``PlainConvUNet`` layer for
    layer (conv → norm → LeakyReLU(0.01), strided-conv pooling, transposed-conv upsampling,
    one 1×1×1 segmentation conv per decoder stage, i.e. the deep-supervision heads); v1's
    transposed convolutions and segmentation convolutions have no bias, so those v2 biases are
    set to zero. v1's ``FabiansUNet`` (``nnUNetTrainerV2_ResencUNet[_DA3]``) is our port
    :class:`~stroke_lesion_app.nets.residual_unet_v1.FabiansUNet` (trainer
    ``StrokeTrainerResUNet``), which keeps v1's module names: the weights load strict as they
    are, and the plans carry the checkpoint's bias layout (PyPI 1.7.1 and the seed's fork
    differ; :func:`~stroke_lesion_app.nets.residual_unet_v1.infer_v1_bias_layout`). The
    seed's ``FabiansUNet_MSCSA`` (``nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3``) becomes
    our ``FabiansUNetMSCSA`` (``StrokeTrainerResUNetMSCSA``), its MSCSA keys renamed by
    :func:`~stroke_lesion_app.nets.residual_unet_v1.map_seed_mscsa_state_dict`; the seed's
    ``Generic_UNet_MSCSA`` (``nnUNetTrainerV2_MSCSA_Depth_1*``) becomes our
    ``PlainConvUNetMSCSA`` (``StrokeTrainerDefaultMSCSA`` / ``StrokeTrainerDTK10MSCSA``): its
    backbone as ``Generic_UNet``, its MSCSA keys renamed the same way. The mirroring axes are
    v1's inference axes (all three for a 3-D trainer). v1's ``Generic_UNet`` gives decoder
    stage ``s`` the kernel of stage ``s + 1``: plans whose neighbouring kernels differ have no
    ``PlainConvUNet`` equivalent and are refused.

  v1 members are marked ``"aggregation": "softmax"``: the app then averages their mirrorings
  and sliding windows as softmax probabilities, as v1's predictor does (v2 averages logits;
  :mod:`stroke_lesion_app.core.sliding_window`).

Preprocessing: v2's ``DefaultPreprocessor`` with the converted plans does what v1's
``GenericPreprocessor`` did at inference (crop to the hole-filled nonzero mask, transpose,
z-score inside that mask when the plans say so and zero outside, cubic resampling to the target
spacing). One order differs: v1 resampled before normalising, v2 normalises before resampling;
on images already at the target spacing (ATLAS-space inputs at 1 mm) nothing is resampled and
the two are identical.

Every member gets the weight ``number of folds``, so that each network counts once in the
average: MAPPING's ``predict_all_folds.sh`` averages the softmax of all 20 networks with equal
weights (``nnunet/inference/ensemble_predictions.py``). MAPPING's own post-processing
(``rename_predictions.py``: adaptive thresholds per case) is not part of the bundle; the
bundle thresholds at 0.5 like nnU-Net's argmax.

The bundle is staged in a hidden sibling folder, validated, then renamed into place: a failed
import leaves nothing that looks like a bundle. v1 checkpoints are pickles: only import models
from a source you trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import zipfile
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stroke_lesion_app.core.bundle import (
    BUNDLE_FILENAME,
    BundleError,
    compute_checksums,
    write_bundle_manifest,
)
from stroke_lesion_app.core.fileio import atomic_path, write_json_atomic
from stroke_lesion_app.training.package import check_bundle_target, slim_checkpoint, staged_bundle

__all__ = [
    "FRAMEWORK_V1",
    "FRAMEWORK_V2",
    "LICENCE_NOT_STATED",
    "V1_TRAINERS",
    "FoundModel",
    "convert_v1_model",
    "find_models",
    "import_bundle",
    "load_fabians_unet_weights",
    "map_generic_unet_mscsa_weights",
    "map_generic_unet_weights",
    "v1_dataset_json",
    "v1_plans_to_v2",
]

LOGGER = logging.getLogger(__name__)

FRAMEWORK_V1 = "nnU-Net v1"
FRAMEWORK_V2 = "nnU-Net v2"
#: Recorded when the user gives no licence for the weights.
LICENCE_NOT_STATED = "not stated"
CONFIGURATION = "3d_fullres"
_CONFIGURATIONS = ("2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres")

#: v1 trainer → (our trainer whose ``build_network_architecture`` builds the equivalent network
#: from the converted plans, v1 network class). Our scheme trainers keep frozen names, are found
#: by nnU-Net's lookup without user settings, and build exactly the plan's network.
V1_TRAINERS = {
    "nnUNetTrainerV2": ("StrokeTrainerDefault", "Generic_UNet"),
    "nnUNetTrainerV2_DA3": ("StrokeTrainerDefault", "Generic_UNet"),
    "nnUNetTrainerV2_800epochs_Loss_DiceTopK10": ("StrokeTrainerDTK10", "Generic_UNet"),
    "nnUNetTrainerV2_Loss_DiceTopK10": ("StrokeTrainerDTK10", "Generic_UNet"),
    "nnUNetTrainerV2_ResencUNet_DA3": ("StrokeTrainerResUNet", "FabiansUNet"),
    "nnUNetTrainerV2_ResencUNet": ("StrokeTrainerResUNet", "FabiansUNet"),
    # the seed's (nadluru/StrokeLesSeg) published Res U-Net + MSCSA: FabiansUNet_MSCSA of
    # generic_ResencUNet_mscsa_depth_1 (28 heads, head dim 40, depth 1)
    "nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3": ("StrokeTrainerResUNetMSCSA",
                                                     "FabiansUNet_MSCSA"),
    # the seed's Generic_UNet_MSCSA of generic_UNet_mscsa_depth_1 (16 heads, head dim 40)
    "nnUNetTrainerV2_MSCSA_Depth_1": ("StrokeTrainerDefaultMSCSA", "Generic_UNet_MSCSA"),
    "nnUNetTrainerV2_MSCSA_Depth_1_SGD": ("StrokeTrainerDefaultMSCSA", "Generic_UNet_MSCSA"),
    "nnUNetTrainerV2_MSCSA_Depth_1_SGD_DA3": ("StrokeTrainerDefaultMSCSA", "Generic_UNet_MSCSA"),
    "nnUNetTrainerV2_800epochs_Loss_DiceTopK10_MSCSA_Depth_1_SGD": ("StrokeTrainerDTK10MSCSA",
                                                                    "Generic_UNet_MSCSA"),
}
#: Network kinds built by our FabiansUNet port (weights load by name).
_FABIANS_KINDS = ("FabiansUNet", "FabiansUNet_MSCSA")
#: State-dict key prefixes of the seed's MSCSA module (StrokeLesSeg ``layers.py``).
_SEED_MSCSA_PREFIXES = ("mscsa_block.", "SIM.", "norm.")
#: v1 normalisation scheme → nnU-Net v2 normalisation class (same arithmetic).
V1_NORMALIZATION = {"nonCT": "ZScoreNormalization", "CT": "CTNormalization",
                    "noNorm": "NoNormalization"}
#: Generic_UNet.MAX_NUM_FILTERS_3D of nnU-Net v1 (features per stage are capped there).
V1_MAX_FEATURES_3D = 320
_V1_CHECKPOINT = "model_final_checkpoint.model"
_V2_CHECKPOINT = "checkpoint_final.pth"
_MIRROR_AXES_3D = (0, 1, 2)


@dataclass(frozen=True)
class FoundModel:
    """A trained-model folder found in an import source.

    Attributes
    ----------
    framework : str
        :data:`FRAMEWORK_V1` or :data:`FRAMEWORK_V2`.
    folder : pathlib.Path
    task : str
        ``Task<NNN>_<Name>`` / ``Dataset<NNN>_<Name>`` (the parent folder's name).
    trainer, plans, configuration : str
        From the folder name (v2: ``<trainer>__<plans>__<configuration>``; v1:
        ``<trainer>__<plans>`` under a configuration folder).
    folds : tuple
        Folds with a final checkpoint, sorted (``"all"`` last).
    """

    framework: str
    folder: Path
    task: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple

    @property
    def member_name(self) -> str:
        """Member label: ``<task>__<trainer>__<plans>`` (unique within a source)."""
        return "__".join(part for part in (self.task, self.trainer, self.plans) if part)


def _fold_key(name: str):
    suffix = name[len("fold_"):]
    return (1, 0, suffix) if not suffix.isdigit() else (0, int(suffix), "")


def _folds(folder: Path, checkpoint: str) -> tuple:
    found = sorted((p.parent.name for p in folder.glob(f"fold_*/{checkpoint}")), key=_fold_key)
    return tuple(int(n[5:]) if n[5:].isdigit() else n[5:] for n in found)


def _classify(folder: Path) -> FoundModel | None:
    if (folder / "plans.pkl").is_file() and _folds(folder, _V1_CHECKPOINT):
        parts = folder.name.split("__")
        if len(parts) != 2:
            raise ValueError(f"{folder}: an nnU-Net v1 trained-model folder must be named "
                             f"<Trainer>__<Plans>; rename it.")
        configuration = folder.parent.parent.name
        if configuration not in _CONFIGURATIONS:
            LOGGER.info("%s: no configuration folder above the task; assuming %s.", folder,
                        CONFIGURATION)
            configuration = CONFIGURATION
        return FoundModel(FRAMEWORK_V1, folder, folder.parent.name, parts[0], parts[1],
                          configuration, _folds(folder, _V1_CHECKPOINT))
    if (folder / "plans.json").is_file() and _folds(folder, _V2_CHECKPOINT):
        parts = folder.name.split("__")
        if len(parts) != 3:
            raise ValueError(f"{folder}: an nnU-Net v2 trained-model folder must be named "
                             f"<Trainer>__<Plans>__<configuration>; rename it.")
        return FoundModel(FRAMEWORK_V2, folder, folder.parent.name, parts[0], parts[1],
                          parts[2], _folds(folder, _V2_CHECKPOINT))
    return None


def find_models(source: str | os.PathLike) -> list[FoundModel]:
    """Every nnU-Net v1 or v2 trained-model folder at or below ``source``, in sorted order.

    Parameters
    ----------
    source : path
        A trained-model folder, or any folder above such folders (a task/dataset folder,
        ``3d_fullres/``, ``nnUNet_trained_models/``, ``nnUNet_results/``).

    Returns
    -------
    list of FoundModel

    Raises
    ------
    ValueError
        No trained-model folder, or one of a configuration other than ``3d_fullres``.
    """
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"{source}: no such folder; pass the folder holding the trained "
                         f"models (or an nnUNetv2_export_model_to_zip zip).")
    found = []
    for root, dirs, _files in os.walk(source):
        dirs.sort()
        model = _classify(Path(root))
        if model is not None:
            dirs.clear()  # fold folders hold no further models
            if model.configuration != CONFIGURATION:
                raise ValueError(f"{model.folder}: configuration {model.configuration!r}; only "
                                 f"{CONFIGURATION} models can be imported (the app predicts "
                                 f"whole 3-D images at full resolution). Leave it out.")
            found.append(model)
    if not found:
        raise ValueError(
            f"{source}: no nnU-Net trained-model folder found (v1: <Trainer>__<Plans>/ with "
            f"plans.pkl and fold_N/{_V1_CHECKPOINT}; v2: <Trainer>__<Plans>__3d_fullres/ with "
            f"plans.json and fold_N/{_V2_CHECKPOINT}); pass the folder that holds them.")
    return found


# -- nnU-Net v1 ----------------------------------------------------------------------------------
def _load_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same
        raise BundleError(f"{path}: not a readable nnU-Net v1 pickle ({error}); download it "
                          f"again.") from None


def _stage(plans: dict, info: dict | None, path: Path):
    stages = list(plans.get("plans_per_stage", {}))
    if not stages:
        raise BundleError(f"{path}: no 'plans_per_stage'; is it an nnU-Net v1 plans.pkl?")
    init = (info or {}).get("init") or ()
    stage = init[5] if len(init) > 5 and init[5] is not None else stages[-1]
    if stage not in plans["plans_per_stage"]:
        raise BundleError(f"{path}: the model was trained on stage {stage!r}, which its plans "
                          f"lack (stages {stages}); use the plans.pkl it was trained with.")
    return stage


def _as_list(value) -> list:
    return [v.tolist() if hasattr(v, "tolist") else v for v in value]


def _per_channel(mapping, n_channels: int, key: str, path: Path) -> list:
    if isinstance(mapping, dict):
        try:
            return [mapping[c] for c in range(n_channels)]
        except KeyError:
            raise BundleError(f"{path}: '{key}' lacks a channel (has {sorted(mapping)}); use "
                              f"the plans.pkl the model was trained with.") from None
    return list(mapping)


def _intensity_properties(plans: dict, n_channels: int) -> dict:
    """v2's ``foreground_intensity_properties_per_channel`` (every channel; empty where v1 did
    not collect them, which only CT normalisation reads)."""
    properties = (plans.get("dataset_properties") or {}).get("intensityproperties") or {}
    names = {"mx": "max", "mean": "mean", "median": "median", "mn": "min",
             "percentile_00_5": "percentile_00_5", "percentile_99_5": "percentile_99_5",
             "sd": "std"}
    return {str(c): {new: float(properties[c][old]) for old, new in names.items()
                     if old in properties.get(c, {})}
            for c in range(n_channels)}


def v1_plans_to_v2(plans: dict, *, stage, network: str, plans_name: str, task: str,
                   source: Path, bias_layout: dict | None = None) -> dict:
    """nnU-Net v2 ``plans.json`` content of the ``3d_fullres`` model of a v1 plans dict.

    Parameters
    ----------
    plans : dict
        The v1 plans (``plans.pkl``).
    stage : int
        The stage the model was trained on (``3d_fullres``: the last).
    network : {"Generic_UNet", "Generic_UNet_MSCSA", "FabiansUNet", "FabiansUNet_MSCSA"}
        v1 network class (``FabiansUNet_MSCSA``: the seed's, built as our
        :class:`~stroke_lesion_app.nets.residual_unet_v1.FabiansUNetMSCSA`; its MSCSA settings
        are the published ones our trainer sets).
    plans_name, task : str
        v1 plans identifier and task name (recorded).
    source : pathlib.Path
        The ``plans.pkl`` (for error messages).
    bias_layout : dict, optional
        ``FabiansUNet`` only: ``{"conv_bias": bool, "seg_bias": bool}`` of the checkpoints
        (:func:`~stroke_lesion_app.nets.residual_unet_v1.infer_v1_bias_layout`; PyPI 1.7.1 and
        the seed's fork differ). Default: PyPI 1.7.1's (no conv bias, segmentation bias).

    Returns
    -------
    dict
        A plans dict ``PlansManager`` accepts, with one configuration ``3d_fullres``. A
        ``Generic_UNet`` becomes nnU-Net v2's ``PlainConvUNet``; a ``FabiansUNet`` our port
        :class:`~stroke_lesion_app.nets.residual_unet_v1.FabiansUNet` (v1's pooling list, whose
        first entry is the first stage's stride, is v2's ``strides``; the plans' encoder and
        decoder block counts; the checkpoints' bias layout).
    """
    stage_plans = plans["plans_per_stage"][stage]
    patch_size = [int(v) for v in stage_plans["patch_size"]]
    if len(patch_size) != 3:
        raise BundleError(f"{source}: a {len(patch_size)}-D plan; only 3-D models can be "
                          f"imported.")
    n_channels = int(plans["num_modalities"])
    schemes = _per_channel(plans["normalization_schemes"], n_channels, "normalization_schemes",
                           source)
    unknown = [s for s in schemes if s not in V1_NORMALIZATION]
    if unknown:
        raise BundleError(f"{source}: normalisation scheme(s) {unknown} have no nnU-Net v2 "
                          f"equivalent here (known: {sorted(V1_NORMALIZATION)}).")
    intensities = _intensity_properties(plans, n_channels)
    if any(scheme == "CT" and not intensities[str(c)] for c, scheme in enumerate(schemes)):
        raise BundleError(f"{source}: CT normalisation without the dataset's intensity "
                          f"properties; use the plans.pkl the model was trained with.")
    use_mask = [bool(v) for v in _per_channel(plans["use_mask_for_norm"], n_channels,
                                               "use_mask_for_norm", source)]
    pool = [[int(k) for k in kernel] for kernel in stage_plans["pool_op_kernel_sizes"]]
    kernels = [[int(k) for k in kernel] for kernel in stage_plans["conv_kernel_sizes"]]
    # Generic_UNet plans list the poolings between stages; FabiansResUNet plans one stride per
    # stage (the first [1, 1, 1])
    n_pool = len(pool) - 1 if network in _FABIANS_KINDS else len(pool)
    if len(kernels) != n_pool + 1:
        raise BundleError(f"{source}: {len(kernels)} conv kernel sizes for {n_pool} pooling "
                          f"steps (need one more); the plans are inconsistent.")
    n_stages = len(kernels)
    base = int(plans["base_num_features"])
    features = [min(base * 2 ** s, V1_MAX_FEATURES_3D) for s in range(n_stages)]
    conv_per_stage = int(plans.get("conv_per_stage") or 2)
    spacing = [float(v) for v in stage_plans["current_spacing"]]
    transpose_forward = [int(v) for v in plans.get("transpose_forward") or (0, 1, 2)]
    transpose_backward = [int(v) for v in plans.get("transpose_backward") or (0, 1, 2)]
    export = plans.get("segmentation_export_params") or {}
    common = {
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"negative_slope": 0.01, "inplace": True},
    }
    if network in _FABIANS_KINDS:
        missing = [k for k in ("num_blocks_encoder", "num_blocks_decoder") if k not in stage_plans]
        if missing:
            raise BundleError(f"{source}: stage {stage} has no {missing[0]!r}, which v1's "
                              f"ResencUNet trainers read; use the nnUNetPlans_FabiansResUNet "
                              f"plans.pkl the model was trained with.")
        blocks = [int(b) for b in stage_plans["num_blocks_encoder"]]
        decoder_blocks = [int(b) for b in stage_plans["num_blocks_decoder"]]
        if len(blocks) != n_stages or len(decoder_blocks) != n_stages - 1:
            raise BundleError(f"{source}: {len(blocks)} encoder and {len(decoder_blocks)} "
                              f"decoder block counts for {n_stages} stages (need {n_stages} and "
                              f"{n_stages - 1}); the plans are inconsistent.")
        layout = {"conv_bias": False, "seg_bias": True, **(bias_layout or {})}
        architecture = {
            "network_class_name": "stroke_lesion_app.nets.residual_unet_v1."
                                  + network.replace("_", ""),
            "arch_kwargs": {
                "n_stages": n_stages, "features_per_stage": features, "kernel_sizes": kernels,
                "strides": pool, "n_blocks_per_stage": blocks,
                "n_conv_per_stage_decoder": decoder_blocks,
                "conv_bias": bool(layout["conv_bias"]), "seg_bias": bool(layout["seg_bias"]),
                **common,
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }
    else:
        # v1's Generic_UNet gives decoder stage s the kernel of stage s + 1 (conv_kernel_sizes[
        # -(u + 1)]), v2's PlainConvUNet that of stage s: the same network only when they agree
        differ = [s for s in range(n_stages - 1) if kernels[s] != kernels[s + 1]]
        if differ:
            raise BundleError(f"{source}: conv kernels {kernels[differ[0]]} (stage {differ[0]}) "
                              f"and {kernels[differ[0] + 1]} (stage {differ[0] + 1}) differ; "
                              f"v1's Generic_UNet decoder takes the kernel of the stage below, "
                              f"which nnU-Net v2's PlainConvUNet cannot express, so this "
                              f"(anisotropic) plan cannot be imported.")
        architecture = {
            "network_class_name": "dynamic_network_architectures.architectures.unet."
                                  "PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n_stages, "features_per_stage": features, "kernel_sizes": kernels,
                "strides": [[1, 1, 1]] + pool, "n_conv_per_stage": [conv_per_stage] * n_stages,
                "n_conv_per_stage_decoder": [conv_per_stage] * (n_stages - 1),
                "conv_bias": True,  # Generic_UNet's convolutions have a bias
                **common,
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        }
    configuration = {
        "data_identifier": f"{plans_name}_v1_stage{stage}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(stage_plans.get("batch_size", 2)),
        "patch_size": patch_size,
        "median_image_size_in_voxels": [float(v) for v in
                                        stage_plans.get("median_patient_size_in_voxels",
                                                        patch_size)],
        "spacing": spacing,
        "normalization_schemes": [V1_NORMALIZATION[s] for s in schemes],
        "use_mask_for_norm": use_mask,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0,
                                      "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                     "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False, "order": int(export.get("interpolation_order", 1)),
            "order_z": int(export.get("interpolation_order_z", 0)),
            "force_separate_z": export.get("force_separate_z")},
        "architecture": architecture,
        "batch_dice": True,
    }
    return {
        "dataset_name": task,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": [float(v) for v in
                                                 stage_plans.get("original_spacing", spacing)],
        "original_median_shape_after_transp": [round(float(v)) for v in
                                               stage_plans.get("median_patient_size_in_voxels",
                                                               patch_size)],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": transpose_forward,
        "transpose_backward": transpose_backward,
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": f"nnU-Net v1 ({plans_name})",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensities,
        "stroke_lesion_app": {
            "imported_from": FRAMEWORK_V1, "v1_plans": plans_name, "v1_stage": stage,
            "v1_network": network, "v1_normalization_schemes": schemes,
            "v1_use_mask_for_norm": use_mask,
            "deep_supervision_outputs": n_stages - 1,
        },
    }


def v1_dataset_json(plans: dict, *, task: str) -> dict:
    """nnU-Net v2 ``dataset.json`` of a v1 plans dict (channels, labels)."""
    modalities = plans.get("modalities") or {0: "MRI"}
    classes = [int(c) for c in plans.get("all_classes") or range(1, int(plans["num_classes"]) + 1)]
    labels = {"background": 0}
    labels.update({("lesion" if len(classes) == 1 else f"label_{c}"): c for c in classes})
    return {
        "channel_names": {str(k): str(v) for k, v in modalities.items()},
        "labels": labels,
        "numTraining": len(plans.get("list_of_npz_files") or ()),
        "file_ending": ".nii.gz",
        "name": task,
        "stroke_lesion_app": {"imported_from": FRAMEWORK_V1},
    }


_V1_BLOCK = re.compile(r"(?P<part>conv_blocks_context|conv_blocks_localization)\.(?P<stage>\d+)\."
                       r"(?:(?P<sub>\d+)\.)?blocks\.(?P<block>\d+)\.conv\.weight")


def _v1_generic_unet_convs(state_dict: dict, path: Path) -> tuple[list, list]:
    """Prefixes of every conv block of a v1 Generic_UNet, per encoder and decoder stage."""
    found: dict = {"conv_blocks_context": {}, "conv_blocks_localization": {}}
    for key in state_dict:
        match = _V1_BLOCK.fullmatch(key)
        if match:
            order = (int(match["sub"] or 0), int(match["block"]))
            found[match["part"]].setdefault(int(match["stage"]), []).append(
                (order, key[:-len("conv.weight")]))
    encoder, decoder = found["conv_blocks_context"], found["conv_blocks_localization"]
    if not encoder or sorted(encoder) != list(range(len(encoder))) or \
            sorted(decoder) != list(range(len(decoder))):
        raise BundleError(f"{path}: not a Generic_UNet state dict (conv_blocks_context.N."
                          f"blocks.M ... keys missing); is it the right trainer's checkpoint?")
    return ([[prefix for _, prefix in sorted(encoder[s])] for s in sorted(encoder)],
            [[prefix for _, prefix in sorted(decoder[s])] for s in sorted(decoder)])


def map_generic_unet_weights(state_dict: dict, network, path: Path) -> None:
    """Copy a v1 ``Generic_UNet`` state dict into an nnU-Net v2 ``PlainConvUNet`` in place.

    Parameters
    ----------
    state_dict : dict
        v1 ``state_dict`` (``conv_blocks_context``, ``conv_blocks_localization``, ``tu``,
        ``seg_outputs``; a DataParallel ``module.`` prefix is dropped).
    network : dynamic_network_architectures.architectures.unet.PlainConvUNet
        Built from the converted plans.
    path : pathlib.Path
        The v1 checkpoint (for error messages).

    Raises
    ------
    BundleError
        Layers or shapes that do not correspond.
    """
    import torch

    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    encoder, decoder = _v1_generic_unet_convs(state_dict, path)
    targets = []  # (v2 module, v1 prefix) for every conv block
    try:
        v2_encoder = [stage[0].convs for stage in network.encoder.stages]
        v2_decoder = [stage.convs for stage in network.decoder.stages]
        transpconvs, seg_layers = network.decoder.transpconvs, network.decoder.seg_layers
    except AttributeError:
        raise BundleError(f"{path}: the target network is not a PlainConvUNet; the converted "
                          f"plans or the trainer are wrong.") from None
    layout_v1 = ([len(s) for s in encoder], [len(s) for s in decoder])
    layout_v2 = ([len(s) for s in v2_encoder], [len(s) for s in v2_decoder])
    if layout_v1 != layout_v2:
        raise BundleError(f"{path}: convolutions per stage {layout_v1} (encoder, decoder) differ "
                          f"from the plans' {layout_v2}; use the plans.pkl the model was "
                          f"trained with.")
    for v1_stages, v2_stages in ((encoder, v2_encoder), (decoder, v2_decoder)):
        for v1_stage, v2_stage in zip(v1_stages, v2_stages):
            targets += list(zip(v2_stage, v1_stage))
    expected = {f"{prefix}{name}" for _, prefix in targets
                for name in ("conv.weight", "conv.bias", "instnorm.weight", "instnorm.bias")}
    expected |= {f"tu.{u}.weight" for u in range(len(transpconvs))}
    expected |= {f"seg_outputs.{u}.weight" for u in range(len(seg_layers))}
    extra = sorted(set(state_dict) - expected)
    missing = sorted(expected - set(state_dict))
    if extra or missing:
        raise BundleError(f"{path}: Generic_UNet weights do not match the plans (unexpected "
                          f"{extra[:3]}, missing {missing[:3]}); use the plans.pkl the model "
                          f"was trained with.")

    def put(parameter, key):
        value = state_dict[key]
        if tuple(parameter.shape) != tuple(value.shape):
            raise BundleError(f"{path}: {key} has shape {tuple(value.shape)}, the network "
                              f"built from the plans needs {tuple(parameter.shape)}; use the "
                              f"plans.pkl the model was trained with.")
        parameter.copy_(value.to(parameter.dtype))

    with torch.no_grad():
        for block, prefix in targets:
            put(block.conv.weight, f"{prefix}conv.weight")
            put(block.conv.bias, f"{prefix}conv.bias")
            put(block.norm.weight, f"{prefix}instnorm.weight")
            put(block.norm.bias, f"{prefix}instnorm.bias")
        # v1 builds its transposed and segmentation convolutions without bias
        for u, layer in enumerate(transpconvs):
            put(layer.weight, f"tu.{u}.weight")
            layer.bias.zero_()
        for u, layer in enumerate(seg_layers):
            put(layer.weight, f"seg_outputs.{u}.weight")
            layer.bias.zero_()


def _has_seed_mscsa(state_dict: dict) -> bool:
    return any(key.removeprefix("module.").startswith(_SEED_MSCSA_PREFIXES)
               for key in state_dict)


def _check_mscsa(state_dict: dict, network_kind: str, trainer: str, path: Path) -> None:
    """The checkpoint holds the seed's MSCSA module exactly when its trainer builds one."""
    has = _has_seed_mscsa(state_dict)
    if has and not network_kind.endswith("_MSCSA"):
        raise BundleError(f"{path}: the weights hold an MSCSA module (mscsa_block./SIM. keys) "
                          f"but {trainer} builds {network_kind} without one; import it under "
                          f"the seed's MSCSA trainer it was trained with (supported: "
                          f"{', '.join(t for t in V1_TRAINERS if 'MSCSA' in t)}).")
    if not has and network_kind.endswith("_MSCSA"):
        raise BundleError(f"{path}: {trainer} builds {network_kind} but the weights hold no "
                          f"MSCSA module (no mscsa_block./SIM. keys); is it the right "
                          f"trainer's checkpoint?")


def _fabians_bias_layout(state_dict: dict, path: Path) -> dict:
    """:func:`~stroke_lesion_app.nets.residual_unet_v1.infer_v1_bias_layout`, one-line errors."""
    from stroke_lesion_app.nets.residual_unet_v1 import infer_v1_bias_layout

    try:
        return infer_v1_bias_layout(state_dict)
    except ValueError:
        raise BundleError(f"{path}: not a FabiansUNet state dict (encoder.initial_conv / "
                          f"decoder.segmentation_output missing); is it the ResencUNet "
                          f"trainer's checkpoint?") from None


def load_fabians_unet_weights(state_dict: dict, network, path: Path) -> None:
    """Load a v1 ``FabiansUNet`` (or the seed's ``FabiansUNet_MSCSA``) state dict into our
    port, strict, in place.

    Our :class:`~stroke_lesion_app.nets.residual_unet_v1.FabiansUNet` keeps v1's module names,
    so the keys load as they are (a ``module.`` prefix of a DataParallel checkpoint dropped);
    the seed's MSCSA keys are renamed by
    :func:`~stroke_lesion_app.nets.residual_unet_v1.map_seed_mscsa_state_dict` (one to one,
    tensors unchanged).

    Parameters
    ----------
    state_dict : dict
        v1 ``state_dict`` (``encoder.*``, ``decoder.*``).
    network : stroke_lesion_app.nets.residual_unet_v1.FabiansUNet
        Built from the converted plans (with the checkpoint's bias layout).
    path : pathlib.Path
        The v1 checkpoint (for error messages).

    Raises
    ------
    BundleError
        Missing or unexpected keys, or shapes that differ from the plans' network.
    """
    from stroke_lesion_app.nets.residual_unet_v1 import (
        FabiansUNet,
        FabiansUNetMSCSA,
        map_seed_mscsa_state_dict,
    )

    if not isinstance(network, FabiansUNet):
        raise BundleError(f"{path}: the target network is {type(network).__name__}, not "
                          f"FabiansUNet; the converted plans or the trainer are wrong.")
    if isinstance(network, FabiansUNetMSCSA):
        try:
            weights = dict(map_seed_mscsa_state_dict(state_dict))
        except ValueError as error:
            raise BundleError(f"{path}: {error}") from None
    else:
        weights = {key.removeprefix("module."): value for key, value in state_dict.items()}
    expected = set(network.state_dict())
    extra, missing = sorted(set(weights) - expected), sorted(expected - set(weights))
    if extra or missing:
        raise BundleError(f"{path}: FabiansUNet weights do not match the plans (unexpected "
                          f"{extra[:3]}, missing {missing[:3]}); use the plans.pkl the model "
                          f"was trained with.")
    for key, parameter in network.state_dict().items():
        if tuple(parameter.shape) != tuple(weights[key].shape):
            raise BundleError(f"{path}: {key} has shape {tuple(weights[key].shape)}, the "
                              f"network built from the plans needs {tuple(parameter.shape)}; "
                              f"use the plans.pkl the model was trained with.")
    network.load_state_dict(weights, strict=True)


def map_generic_unet_mscsa_weights(state_dict: dict, network, path: Path) -> None:
    """Copy the seed's ``Generic_UNet_MSCSA`` state dict into our ``PlainConvUNetMSCSA``.

    The backbone keys go as :func:`map_generic_unet_weights` puts them; the MSCSA keys
    (``mscsa_block.``, ``norm.``, ``SIM.``) are renamed by
    :func:`~stroke_lesion_app.nets.residual_unet_v1.map_seed_mscsa_state_dict` (the seed's
    ``layers.py`` is shared by its ``Generic_UNet_MSCSA`` and ``FabiansUNet_MSCSA``) and loaded
    strict into ``network.mscsa``.

    Raises
    ------
    BundleError
        Layers, keys or shapes that do not correspond.
    """
    from stroke_lesion_app.nets.residual_unet_v1 import map_seed_mscsa_state_dict

    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    mscsa = {k: v for k, v in state_dict.items() if k.startswith(_SEED_MSCSA_PREFIXES)}
    backbone = {k: v for k, v in state_dict.items() if k not in mscsa}
    if not hasattr(network, "mscsa"):
        raise BundleError(f"{path}: the target network has no MSCSA module; the trainer is "
                          f"wrong.")
    map_generic_unet_weights(backbone, network, path)
    try:
        renamed = {k.removeprefix("mscsa."): v
                   for k, v in map_seed_mscsa_state_dict(mscsa).items()}
        network.mscsa.load_state_dict(renamed, strict=True)
    except (ValueError, RuntimeError) as error:
        raise BundleError(f"{path}: the seed's MSCSA weights do not fit ours "
                          f"({str(error).splitlines()[0][:200]}); only the published "
                          f"configuration maps (16 heads, head dim 40, depth 1).") from None


def _load_v1_weights(path: Path) -> dict:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        raise BundleError(f"{path}: not a readable checkpoint ({error}); download it "
                          f"again.") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise BundleError(f"{path}: no 'state_dict'; is it an nnU-Net v1 checkpoint?")
    return checkpoint["state_dict"]


def convert_v1_model(model: FoundModel, target: Path) -> dict:
    """Write the nnU-Net v2 trained-model folder of a v1 model to ``target``.

    Returns
    -------
    dict
        The member's manifest entry (without checksums).
    """
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = model.folder / "plans.pkl"
    plans = _load_pickle(plans_file)
    infos, names = {}, {}
    for fold in model.folds:
        info_file = model.folder / f"fold_{fold}" / f"{_V1_CHECKPOINT}.pkl"
        if not info_file.is_file():
            raise BundleError(f"{info_file}: missing; v1 needs it beside "
                              f"{_V1_CHECKPOINT} (download it too).")
        infos[fold] = _load_pickle(info_file)
        names[fold] = infos[fold].get("name") if isinstance(infos[fold], dict) else None
    # v1 restores the trainer class named in .model.pkl, whatever the folder is called
    trainer = names[model.folds[0]]
    for fold, name in names.items():
        if name != trainer:
            raise BundleError(f"{model.folder / f'fold_{fold}' / f'{_V1_CHECKPOINT}.pkl'}: "
                              f"trained with {name!r}, fold {model.folds[0]} with {trainer!r}; "
                              f"one folder must hold one trainer's folds.")
    if trainer != model.trainer:
        LOGGER.warning("%s: the folder says %s but the checkpoints were saved by %s (what v1 "
                       "restores); importing them as %s.", model.folder, model.trainer,
                       trainer, trainer)
    if trainer not in V1_TRAINERS:
        why = (" (of the seed's MSCSA variants only the published depth-1 networks map: "
               "generic_UNet_mscsa_depth_1 and generic_ResencUNet_mscsa_depth_1)"
               if "mscsa" in trainer.lower() else "")
        raise BundleError(f"{model.folder}: nnU-Net v1 trainer {trainer!r} is not supported"
                          f"{why} (supported: {', '.join(V1_TRAINERS)}); leave it out.")
    our_trainer, network_kind = V1_TRAINERS[trainer]
    stages = {_stage(plans, infos[fold], model.folder / f"fold_{fold}") for fold in model.folds}
    if len(stages) != 1:
        raise BundleError(f"{model.folder}: folds trained on different stages {sorted(stages)}.")
    stage = stages.pop()
    first = model.folder / f"fold_{model.folds[0]}" / _V1_CHECKPOINT
    first_weights = _load_v1_weights(first)
    _check_mscsa(first_weights, network_kind, trainer, first)
    bias_layout = (_fabians_bias_layout(first_weights, first)
                   if network_kind in _FABIANS_KINDS else None)
    del first_weights
    v2_plans = v1_plans_to_v2(plans, stage=stage, network=network_kind, plans_name=model.plans,
                              task=model.task, source=plans_file, bias_layout=bias_layout)
    dataset_json = v1_dataset_json(plans, task=model.task)
    if len(dataset_json["channel_names"]) != 1:
        raise BundleError(f"{plans_file}: {len(dataset_json['channel_names'])} input channels; "
                          f"the app feeds one (T1w).")
    trainer_class = _find_trainer(our_trainer)
    plans_manager = PlansManager(deepcopy(v2_plans))
    configuration_manager = plans_manager.get_configuration(CONFIGURATION)
    num_outputs = len(dataset_json["labels"])
    target.mkdir(parents=True)
    write_json_atomic(target / "plans.json", v2_plans)
    write_json_atomic(target / "dataset.json", dataset_json)
    for fold in model.folds:
        source = model.folder / f"fold_{fold}" / _V1_CHECKPOINT
        network = trainer_class.build_network_architecture(
            plans_manager, configuration_manager, 1, num_outputs, enable_deep_supervision=False)
        if network_kind in _FABIANS_KINDS:
            state_dict = _load_v1_weights(source)
            _check_mscsa(state_dict, network_kind, trainer, source)
            layout = _fabians_bias_layout(state_dict, source)
            if layout != bias_layout:
                raise BundleError(f"{source}: bias layout {layout}, fold {model.folds[0]} has "
                                  f"{bias_layout} (different nnU-Net v1 codes); one folder must "
                                  f"hold one code's folds.")
            load_fabians_unet_weights(state_dict, network, source)
        elif network_kind == "Generic_UNet_MSCSA":
            state_dict = _load_v1_weights(source)
            _check_mscsa(state_dict, network_kind, trainer, source)
            map_generic_unet_mscsa_weights(state_dict, network, source)
        else:
            map_generic_unet_weights(_load_v1_weights(source), network, source)
        checkpoint = {
            # detached, not cloned: v1's FabiansUNet registers its decoder layers twice, and
            # torch.save then stores each shared tensor once
            "network_weights": {k: v.detach() for k, v in network.state_dict().items()},
            "trainer_name": our_trainer,
            "init_args": {"configuration": CONFIGURATION, "fold": fold},
            "inference_allowed_mirroring_axes": _MIRROR_AXES_3D,
        }
        with atomic_path(target / f"fold_{fold}" / _V2_CHECKPOINT) as tmp:
            torch.save(checkpoint, tmp)
        LOGGER.info("Converted %s (v1 %s) to %s.", source, trainer, our_trainer)
    source_entry = {"framework": FRAMEWORK_V1, "task": model.task, "trainer": trainer,
                    "plans": model.plans, "configuration": model.configuration,
                    "network": network_kind, "stage": stage, "folder": str(model.folder)}
    if bias_layout is not None:
        source_entry["bias_layout"] = bias_layout
    return {"trainer": our_trainer, "aggregation": "softmax", "source": source_entry}


# -- nnU-Net v2 ----------------------------------------------------------------------------------
def _copy_v2_model(model: FoundModel, target: Path) -> dict:
    if not (model.folder / "dataset.json").is_file():
        raise BundleError(f"{model.folder / 'dataset.json'}: missing; copy it from the "
                          f"nnU-Net results folder of this model.")
    try:
        _find_trainer(model.trainer)
    except RuntimeError:
        raise BundleError(f"{model.folder}: trainer {model.trainer!r} is neither nnU-Net's nor "
                          f"ours; install the package that defines it (nnUNet_extTrainer) "
                          f"before importing.") from None
    target.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(model.folder / name, target / name)
    plans = json.loads((target / "plans.json").read_text())
    if model.configuration not in plans.get("configurations", {}):
        raise BundleError(f"{model.folder / 'plans.json'}: no configuration "
                          f"{model.configuration!r}; the folder name and plans disagree.")
    for fold in model.folds:
        slim_checkpoint(model.folder / f"fold_{fold}" / _V2_CHECKPOINT,
                        target / f"fold_{fold}" / _V2_CHECKPOINT)
    return {"trainer": model.trainer, "aggregation": "logits",
            "source": {"framework": FRAMEWORK_V2, "dataset": model.task,
                       "trainer": model.trainer, "plans": model.plans,
                       "configuration": model.configuration, "folder": str(model.folder)}}


def _find_trainer(name: str) -> type:
    """:func:`~stroke_lesion_app.core.nnunet_lookup.find_trainer_class`, nnU-Net's prints sent
    to the log."""
    from stroke_lesion_app.core.nnunet_lookup import find_trainer_class

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            return find_trainer_class(name)
    finally:
        if buffer.getvalue().strip():
            LOGGER.debug("nnU-Net: %s", buffer.getvalue().strip())


def _extract_zip(path: Path, into: Path) -> Path:
    """Unpack an ``nnUNetv2_export_model_to_zip`` zip, refusing paths that leave ``into``."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                resolved = (into / member).resolve()
                if not resolved.is_relative_to(into.resolve()):
                    raise BundleError(f"{path}: entry {member!r} points outside the archive; "
                                      f"refusing to unpack it.")
            archive.extractall(into)
    except zipfile.BadZipFile as error:
        raise BundleError(f"{path}: not a zip file ({error}); download it again.") from None
    return into


def _resolution(models_plans: Sequence[tuple[FoundModel, dict]]) -> float:
    spacings = set()
    for model, plans in models_plans:
        configuration = plans["configurations"][model.configuration]
        spacings.add(tuple(float(s) for s in configuration["spacing"]))
    values = {s for spacing in spacings for s in spacing}
    if len(values) == 1:
        return values.pop()
    LOGGER.warning("Members' target spacings %s are not one isotropic grid; the bundle feeds "
                   "1 mm images and nnU-Net resamples to each plan.", sorted(spacings))
    return 1.0


def import_bundle(sources: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                  name: str, version: str = "1.0.0", description: str = "", url: str = "",
                  citation: str = "", licence: str = "", training_data: str = "",
                  threshold: float = 0.5, min_component_voxels: int = 0,
                  connectivity: int = 26, overwrite: bool = False) -> Path:
    """Import every trained model found in ``sources`` as one bundle at ``out_dir``.

    Parameters
    ----------
    sources : sequence of path
        Folders (see :func:`find_models`) or ``nnUNetv2_export_model_to_zip`` zips.
    out_dir : path
        Bundle folder to create.
    name, version, description, training_data : str
        Manifest identity.
    url, citation : str
        Where the weights came from and what to cite (recorded in the manifest's ``source``
        and from there in every output's sidecar).
    licence : str
        Licence of the weights; ``"not stated"`` when empty.
    threshold, min_component_voxels, connectivity
        Mask rule of the bundle (see :mod:`stroke_lesion_app.core.bundle`).
    overwrite : bool
        Replace an existing bundle at ``out_dir``.

    Returns
    -------
    pathlib.Path
        The manifest ``out_dir/bundle.json``.

    Raises
    ------
    ValueError, FileExistsError, BundleError
        Bad sources (one line naming the file and the fix), an existing target.
    """
    out_dir = Path(out_dir).absolute()
    check_bundle_target(out_dir, overwrite)
    if not sources:
        raise ValueError("give at least one folder or zip of trained models to import.")
    with staged_bundle(out_dir) as staged:
        models = []
        for index, source in enumerate(Path(s) for s in sources):
            if source.is_file() and source.suffix == ".zip":
                source = _extract_zip(source, staged / ".unpacked" / str(index))
            models += find_models(source)
        names = [model.member_name for model in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{duplicates[0]}: found twice in the sources; give each trained "
                             f"model once.")
        entries, plans = [], []
        for model in models:
            folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.member_name)
            LOGGER.info("Importing %s (%s, folds %s).", model.folder, model.framework,
                        list(model.folds))
            convert = convert_v1_model if model.framework == FRAMEWORK_V1 else _copy_v2_model
            entry = convert(model, staged / folder)
            entry.update({"name": model.member_name, "folder": folder,
                          "configuration": CONFIGURATION, "folds": list(model.folds),
                          "checkpoint": _V2_CHECKPOINT, "weight": float(len(model.folds))})
            entry["sha256"] = compute_checksums(staged / folder, model.folds)
            entries.append(entry)
            plans.append((model, json.loads((staged / folder / "plans.json").read_text())))
        shutil.rmtree(staged / ".unpacked", ignore_errors=True)
        frameworks = sorted({model.framework for model in models})
        n_networks = sum(len(model.folds) for model in models)
        write_bundle_manifest(
            staged, name=name, version=version,
            description=description or (f"imported {' + '.join(frameworks)} models: "
                                        f"{len(models)} member(s), {n_networks} network(s), "
                                        f"softmax probabilities averaged with equal weight per "
                                        f"network"),
            resolution_mm=_resolution(plans), threshold=threshold,
            min_component_voxels=min_component_voxels, connectivity=connectivity,
            licence=licence or LICENCE_NOT_STATED, training_data=training_data,
            demo=False, members=entries,
            source={"framework": " + ".join(frameworks), "url": url or "not stated",
                    "citation": citation or "not stated",
                    "imported_from": [str(Path(s).absolute()) for s in sources]})
    LOGGER.info("Imported %d member(s) into %s.", len(entries), out_dir)
    return out_dir / BUNDLE_FILENAME
