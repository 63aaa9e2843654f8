"""Plan, preprocess and train the paper's schemes through nnU-Net v2, in-process.

The steps are nnU-Net's own (``nnUNetv2_plan_and_preprocess`` then ``nnUNetv2_train``), called
through its Python API so that our trainers are found (``nnUNet_extTrainer``), the folders are
set per run (:func:`nnunet_environment`), and a fold is resumable from its last checkpoint.

Schemes (``docs/mscsa-spec.md`` §2) map to our frozen trainer names:

==========  ===================================  ==========================================
scheme      ``mscsa=False``                      ``mscsa=True``
==========  ===================================  ==========================================
default     ``StrokeTrainerDefault``             ``StrokeTrainerDefaultMSCSA``
dtk10       ``StrokeTrainerDTK10``               ``StrokeTrainerDTK10MSCSA``
resunet     ``StrokeTrainerResUNet``             ``StrokeTrainerResUNetMSCSA``
==========  ===================================  ==========================================

Plan presets: ``paper`` keeps the plan nnU-Net makes from the data (on ATLAS v2.0 at 1 mm:
``3d_fullres``, patch 128³, batch 2, 6 stages, 32-320 features); ``demo`` shrinks it to a
network small enough to train and run on 2 CPU cores (5 stages, 8-64 features, patch 64³, so
MSCSA attends over 8³ = 512 tokens as in the paper's plan), used for the synthetic demo bundle
only; ``tiny`` is for tests only (4 stages, 4-32 features, patch 32³, batch 1, so MSCSA attends
over 4³ = 64 tokens): a few CPU iterations take seconds, and the model learns next to nothing.

Every fold writes ``stroke_lesion_app_training.json`` beside its checkpoints: the scheme, the
epochs and iterations actually used, the device and the package versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stroke_lesion_app.core.fileio import write_json_atomic

__all__ = [
    "CONFIGURATION",
    "PLANS_NAME",
    "PLAN_PRESETS",
    "SCHEMES",
    "TrainingSettings",
    "model_folder",
    "nnunet_environment",
    "plan_and_preprocess",
    "shrink_plan",
    "train_fold",
    "trainer_name",
]

LOGGER = logging.getLogger(__name__)

#: nnU-Net configuration all schemes use (spec §2.1).
CONFIGURATION = "3d_fullres"
#: Plans identifier of nnU-Net's default planner.
PLANS_NAME = "nnUNetPlans"
#: Scheme name → trainer class name without MSCSA; ``+ "MSCSA"`` for the add-on.
SCHEMES = {"default": "StrokeTrainerDefault", "dtk10": "StrokeTrainerDTK10",
           "resunet": "StrokeTrainerResUNet"}
#: Plan presets (see the module docstring); ``None`` keeps nnU-Net's plan.
PLAN_PRESETS: dict[str, dict[str, Any] | None] = {
    "paper": None,
    "demo": {"patch_size": (64, 64, 64), "n_stages": 5, "base_features": 8, "max_features": 64,
             "batch_size": 2},
    "tiny": {"patch_size": (32, 32, 32), "n_stages": 4, "base_features": 4, "max_features": 32,
             "batch_size": 1},
}
_TRAINING_RECORD = "stroke_lesion_app_training.json"


def trainer_name(scheme: str, mscsa: bool) -> str:
    """Trainer class name of a scheme, e.g. ``("dtk10", True) → "StrokeTrainerDTK10MSCSA"``.

    Raises
    ------
    ValueError
        Unknown scheme.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    return SCHEMES[scheme] + ("MSCSA" if mscsa else "")


def model_folder(results_dir: Path | str, dataset_name: str, trainer: str,
                 configuration: str = CONFIGURATION, plans_name: str = PLANS_NAME) -> Path:
    """``<results>/<Dataset>/<trainer>__<plans>__<configuration>``: a trained-model folder."""
    return Path(results_dir) / dataset_name / f"{trainer}__{plans_name}__{configuration}"


@contextlib.contextmanager
def nnunet_environment(work_dir: Path | str, *, raw_dir: Path | str | None = None,
                       num_threads: int | None = None) -> Iterator[dict[str, Path]]:
    """Set nnU-Net's folders and CPU-friendly settings for the duration of a block.

    Parameters
    ----------
    work_dir : path
        Holds ``nnUNet_raw`` (unless ``raw_dir`` is given), ``nnUNet_preprocessed`` and
        ``nnUNet_results``; created if missing.
    raw_dir : path, optional
        An existing ``nnUNet_raw`` folder elsewhere (e.g. the output of ``convert``).
    num_threads : int, optional
        torch CPU threads and nnU-Net's augmentation worker count (``nnUNet_n_proc_DA``).

    Yields
    ------
    dict
        ``{"nnUNet_raw": Path, "nnUNet_preprocessed": Path, "nnUNet_results": Path}``.

    Notes
    -----
    ``nnUNet_compile`` is set to ``f`` unless the caller set it (torch.compile only costs time
    on CPU); our trainers are made discoverable (``nnUNet_extTrainer``). Every variable is
    restored on exit.
    """
    import torch

    from stroke_lesion_app.core.nnunet_lookup import TRAINER_ENV_VAR, ensure_trainer_discovery

    work_dir = Path(work_dir).absolute()
    folders = {
        "nnUNet_raw": Path(raw_dir).absolute() if raw_dir else work_dir / "nnUNet_raw",
        "nnUNet_preprocessed": work_dir / "nnUNet_preprocessed",
        "nnUNet_results": work_dir / "nnUNet_results",
    }
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    settings = {name: str(path) for name, path in folders.items()}
    settings.setdefault("nnUNet_compile", os.environ.get("nnUNet_compile", "f"))
    if num_threads is not None:
        settings["nnUNet_n_proc_DA"] = str(num_threads)
    saved = {name: os.environ.get(name) for name in (*settings, TRAINER_ENV_VAR)}
    previous_threads = torch.get_num_threads()
    os.environ.update(settings)
    ensure_trainer_discovery()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield folders
    finally:
        torch.set_num_threads(previous_threads)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shrink_plan(plans: dict, *, configuration: str = CONFIGURATION,
                patch_size: Sequence[int], n_stages: int, base_features: int,
                max_features: int, batch_size: int) -> dict:
    """A copy of ``plans`` whose ``configuration`` is a smaller plain U-Net.

    Parameters
    ----------
    plans : dict
        nnU-Net plans (``nnUNetPlans.json``); not modified.
    configuration : str
        Configuration to edit.
    patch_size : sequence of int
        Patch size in voxels (nnU-Net axis order); each divisible by ``2 ** (n_stages - 1)``.
    n_stages : int
        Resolution stages (first at full resolution, then stride 2 per stage).
    base_features, max_features : int
        Features of the first stage, doubled per stage up to ``max_features``.
    batch_size : int
        Training batch size.

    Returns
    -------
    dict
        The edited plans, ``plans_name`` unchanged (the preprocessed data stay valid: only the
        network and the patch change, not the spacing or normalisation).
    """
    if n_stages < 2:
        raise ValueError(f"n_stages must be >= 2, got {n_stages}")
    if any(size % 2 ** (n_stages - 1) for size in patch_size):
        raise ValueError(f"patch size {tuple(patch_size)} is not divisible by "
                         f"{2 ** (n_stages - 1)} ({n_stages} stages)")
    plans = deepcopy(plans)
    config = plans["configurations"][configuration]
    arch = config["architecture"]["arch_kwargs"]
    arch["n_stages"] = n_stages
    arch["features_per_stage"] = [min(base_features * 2 ** i, max_features)
                                  for i in range(n_stages)]
    arch["kernel_sizes"] = [[3, 3, 3]] * n_stages
    arch["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    if "n_conv_per_stage" in arch:
        arch["n_conv_per_stage"] = [2] * n_stages
    if "n_blocks_per_stage" in arch:
        arch["n_blocks_per_stage"] = [1] * n_stages
    arch["n_conv_per_stage_decoder"] = [2] * (n_stages - 1)
    config["patch_size"] = [int(size) for size in patch_size]
    config["batch_size"] = int(batch_size)
    return plans


def plan_and_preprocess(dataset_id: int, *, plan_preset: str = "paper",
                        num_processes: int = 2, configuration: str = CONFIGURATION) -> dict:
    """Fingerprint, plan and preprocess one dataset, once (``nnUNetv2_plan_and_preprocess``).

    Must run inside :func:`nnunet_environment`. When the preprocessed folder already holds the
    plans and every case of ``configuration``, nothing is redone (resumable).

    Parameters
    ----------
    dataset_id : int
        nnU-Net dataset number (``Dataset<NNN>_<Name>`` under ``nnUNet_raw``).
    plan_preset : {"paper", "demo", "tiny"}
        A key of :data:`PLAN_PRESETS`.
    num_processes : int
        Worker processes for fingerprinting and preprocessing.
    configuration : str
        Configuration to preprocess.

    Returns
    -------
    dict
        The plans used.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if plan_preset not in PLAN_PRESETS:
        raise ValueError(f"unknown plan preset {plan_preset!r}; choose one of "
                         f"{', '.join(PLAN_PRESETS)}.")
    dataset_name = maybe_convert_to_dataset_name(int(dataset_id))
    raw = Path(os.environ["nnUNet_raw"]) / dataset_name
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / dataset_name
    plans_file = preprocessed / f"{PLANS_NAME}.json"
    cases = sorted(path.name[: -len("_0000.nii.gz")] for path in (raw / "imagesTr").glob(
        "*_0000.nii.gz"))
    if plans_file.is_file():
        plans = json.loads(plans_file.read_text())
        data_dir = preprocessed / plans["configurations"][configuration]["data_identifier"]
        stored = plans.get("stroke_lesion_app", {}).get("plan_preset")
        done = ({path.name.split(".")[0] for path in data_dir.iterdir()}
                if data_dir.is_dir() else set())
        if stored == plan_preset and set(cases) <= done:
            LOGGER.info("%s: plans and %d preprocessed case(s) exist; not redone.",
                        preprocessed, len(cases))
            return plans
        if stored not in (None, plan_preset):
            raise ValueError(f"{plans_file} was planned with preset {stored!r}, not "
                             f"{plan_preset!r}; use another dataset id or remove {preprocessed}.")
    extract_fingerprints([int(dataset_id)], num_processes=num_processes,
                         check_dataset_integrity=True, show_progress_bar=False)
    plan_experiments([int(dataset_id)])
    plans = json.loads(plans_file.read_text())
    preset = PLAN_PRESETS[plan_preset]
    if preset is not None:
        plans = shrink_plan(plans, configuration=configuration, **preset)
    plans["stroke_lesion_app"] = {"plan_preset": plan_preset}
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess([int(dataset_id)], PLANS_NAME, configurations=(configuration,),
               num_processes=(num_processes,), show_progress_bar=False)
    return plans


@dataclass(frozen=True)
class TrainingSettings:
    """How long to train one fold; ``None`` keeps the trainer's published value.

    Attributes
    ----------
    epochs : int, optional
        Epochs (published: 1000 for Default/ResUNet, 800 for DTK10).
    iterations_per_epoch : int, optional
        Training iterations per epoch (published: 250).
    val_iterations_per_epoch : int, optional
        Validation iterations per epoch (published: 50).
    validate : bool
        Predict the fold's validation cases after training (``nnUNetv2_train``'s final step;
        needed for ``find_best_configuration``-style comparisons, slow on CPU).
    """

    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    validate: bool = True


def train_fold(dataset_id: int, trainer: str, fold: int | str, *, device: str = "cpu",
               settings: TrainingSettings = TrainingSettings(),
               configuration: str = CONFIGURATION, pretrained_weights: Path | None = None,
               resume: bool = True) -> Path:
    """Train one fold of one trainer (``nnUNetv2_train DATASET 3d_fullres FOLD -tr TRAINER``).

    Must run inside :func:`nnunet_environment`, after :func:`plan_and_preprocess`. A fold
    with ``checkpoint_final.pth`` is skipped; one with ``checkpoint_latest.pth`` continues
    from it when ``resume`` is true.

    Parameters
    ----------
    dataset_id : int
        nnU-Net dataset number.
    trainer : str
        Trainer class name (see :func:`trainer_name`).
    fold : int or "all"
        Fold of ``splits_final.json`` (0-4), or ``"all"`` to train on every case.
    device : {"cpu", "cuda"}
        Where to train.
    settings : TrainingSettings
        Epochs and iterations.
    configuration : str
        nnU-Net configuration.
    pretrained_weights : path, optional
        Checkpoint to start from (self-training's second round may use it).
    resume : bool
        Continue an interrupted fold from ``checkpoint_latest.pth``.

    Returns
    -------
    pathlib.Path
        The fold folder (``.../<trainer>__nnUNetPlans__3d_fullres/fold_<fold>``).
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    fold = fold if fold == "all" else int(fold)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA GPU is visible; use "
                           "--device cpu.")
    nnunet_trainer = get_trainer_from_args(str(dataset_id), configuration, fold, trainer,
                                           PLANS_NAME, device=torch.device(device))
    fold_dir = Path(nnunet_trainer.output_folder)
    if (fold_dir / "checkpoint_final.pth").is_file():
        LOGGER.info("%s: checkpoint_final.pth exists; fold %s of %s not retrained.", fold_dir,
                    fold, trainer)
        return fold_dir
    for attribute in ("num_epochs", "num_iterations_per_epoch", "num_val_iterations_per_epoch"):
        value = getattr(settings, {"num_epochs": "epochs",
                                   "num_iterations_per_epoch": "iterations_per_epoch",
                                   "num_val_iterations_per_epoch": "val_iterations_per_epoch",
                                   }[attribute])
        if value is not None:
            setattr(nnunet_trainer, attribute, int(value))
    continuing = resume and (fold_dir / "checkpoint_latest.pth").is_file()
    maybe_load_checkpoint(nnunet_trainer, continuing, False,
                          None if continuing or pretrained_weights is None
                          else str(pretrained_weights))
    LOGGER.info("Training %s fold %s on %s (%d epochs x %d iterations)%s.", trainer, fold,
                device, nnunet_trainer.num_epochs, nnunet_trainer.num_iterations_per_epoch,
                " from checkpoint_latest.pth" if continuing else "")
    nnunet_trainer.run_training()
    if settings.validate:
        nnunet_trainer.perform_actual_validation(False)
    _write_training_record(fold_dir, nnunet_trainer, device, settings, pretrained_weights)
    return fold_dir


def _write_training_record(fold_dir: Path, nnunet_trainer, device: str,
                           settings: TrainingSettings, pretrained_weights) -> None:
    import nnunetv2
    import torch

    from stroke_lesion_app import __version__

    record = {
        "trainer": type(nnunet_trainer).__name__,
        "fold": nnunet_trainer.fold,
        "epochs": nnunet_trainer.num_epochs,
        "iterations_per_epoch": nnunet_trainer.num_iterations_per_epoch,
        "val_iterations_per_epoch": nnunet_trainer.num_val_iterations_per_epoch,
        "validated": settings.validate,
        "device": device,
        "pretrained_weights": str(pretrained_weights) if pretrained_weights else None,
        "versions": {"stroke_lesion_app": __version__, "nnunetv2": _version(nnunetv2),
                     "torch": torch.__version__},
    }
    write_json_atomic(fold_dir / _TRAINING_RECORD, record)


def _version(module) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.__name__)
    except PackageNotFoundError:
        return "unknown"
