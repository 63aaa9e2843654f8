"""End to end through nnU-Net v2 on CPU: plan, preprocess, train an MSCSA trainer, predict.

A synthetic dataset is written on the fly in nnU-Net's raw format (one channel, 32³ volumes,
a bright blob as label 1). Everything goes through nnU-Net's own Python API and code paths:

* ``plan_and_preprocess_api``: ``extract_fingerprints``, ``plan_experiments``, ``preprocess``
  (1 process, ``3d_fullres`` only);
* ``run_training.get_trainer_from_args``: the trainer is looked up *by name*, as
  ``nnUNetv2_train`` does, with ``nnUNet_extTrainer`` set by our loader; only the epoch and
  iteration counts are lowered before ``run_training()``;
* ``nnUNetPredictor.initialize_from_trained_model_folder``: the predictor rebuilds our network
  from the checkpoint's trainer name, then ``predict_from_files_sequential`` writes NIfTI masks.

The plan is edited after planning, on a deep copy, only to shrink the batch to 1 (nnU-Net's own
minimum is 2). The test takes about a minute on 2 CPU cores (2 epochs of 2 training and 1
validation iteration; fingerprinting and preprocessing start one worker process each).
"""

from __future__ import annotations

import json
import math
import os
from copy import deepcopy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from stroke_lesion_app.core.nnunet_lookup import TRAINER_ENV_VAR, ensure_trainer_discovery

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DATASET_ID = 987
DATASET_NAME = f"Dataset{DATASET_ID:03d}_SyntheticStroke"
TRAINER = "StrokeTrainerDefaultMSCSA"
PLANS = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
FOLD = 0
SHAPE = (32, 32, 32)
SPACING = (1.0, 1.0, 1.0)
N_TRAIN = 6
#: Tiny training run: epochs, training iterations per epoch, validation iterations per epoch.
EPOCHS, TRAIN_ITERATIONS, VAL_ITERATIONS = 2, 2, 1


def synthetic_case(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with one bright ellipsoidal blob; the blob is label 1."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centre = rng.uniform(10, np.array(shape) - 10)[:, None, None, None]
    radii = rng.uniform(3.0, 6.0, size=3)[:, None, None, None]
    blob = (((grid - centre) / radii) ** 2).sum(axis=0) <= 1.0
    image = rng.normal(100.0, 10.0, shape) + 80.0 * blob
    return image.astype(np.float32), blob.astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> None:
    affine = np.diag([*SPACING, 1.0])
    nib.Nifti1Image(array, affine).to_filename(path)


def write_raw_dataset(raw: Path) -> Path:
    """``DatasetXXX_Name/{imagesTr,labelsTr,imagesTs}`` and ``dataset.json`` in nnU-Net v2 format."""
    root = raw / DATASET_NAME
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for i in range(N_TRAIN):
        image, label = synthetic_case(seed=i)
        _save(image, root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        _save(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
    image, _ = synthetic_case(seed=100)
    _save(image, root / "imagesTs" / "test_000_0000.nii.gz")
    dataset_json = {
        "channel_names": {"0": "T1w"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": N_TRAIN,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return root


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnU-Net folders in ``tmp_path``, CPU settings, our trainers discoverable, 2 threads.

    Everything is restored afterwards. One test holds the whole run so that pytest-xdist never
    splits it across workers (a module-scoped fixture would run once per worker).
    """
    folders = {name: tmp_path / name for name in ("nnUNet_raw", "nnUNet_preprocessed",
                                                   "nnUNet_results")}
    for name, path in folders.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))  # nnunetv2 >= 2.8 reads these at use time
    monkeypatch.setenv("nnUNet_compile", "f")
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")  # the planner sets torch's threads to this
    monkeypatch.setenv(TRAINER_ENV_VAR, ensure_trainer_discovery(dict(os.environ)))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield folders
    torch.set_num_threads(n_threads)


def plan_and_preprocess(folders: dict[str, Path]) -> dict:
    """Fingerprint, plan and preprocess ``3d_fullres`` with 1 process; return the plan as made.

    The saved plan is a deep copy with batch size 1.
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True,
                         show_progress_bar=False)
    assert plan_experiments([DATASET_ID]) == PLANS
    plans_file = folders["nnUNet_preprocessed"] / DATASET_NAME / f"{PLANS}.json"
    planned = json.loads(plans_file.read_text())
    plans = deepcopy(planned)
    plans["configurations"][CONFIGURATION]["batch_size"] = 1
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess([DATASET_ID], PLANS, configurations=(CONFIGURATION,), num_processes=(1,),
               show_progress_bar=False)
    return planned


def train(monkeypatch):
    """Train :data:`TRAINER` for a few iterations, constructed as ``nnUNetv2_train`` does."""
    from nnunetv2.run.run_training import get_trainer_from_args

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # single-threaded augmenter: no worker processes
    trainer = get_trainer_from_args(
        DATASET_NAME, CONFIGURATION, FOLD, TRAINER, PLANS, device=torch.device("cpu")
    )
    trainer.num_epochs = EPOCHS
    trainer.num_iterations_per_epoch = TRAIN_ITERATIONS
    trainer.num_val_iterations_per_epoch = VAL_ITERATIONS
    trainer.run_training()
    return trainer


def check_plan(planned: dict) -> None:
    configuration = planned["configurations"][CONFIGURATION]
    assert configuration["patch_size"] == list(SHAPE)
    architecture = configuration["architecture"]
    assert architecture["network_class_name"].endswith(".PlainConvUNet")
    assert architecture["arch_kwargs"]["n_stages"] >= 3


def check_training(trainer, results: Path) -> None:
    assert type(trainer).__name__ == TRAINER
    assert type(trainer).__module__ == "stroke_lesion_trainers"  # found through nnUNet_extTrainer
    assert type(trainer.network).__name__ == "PlainConvUNetMSCSA"
    assert trainer.network.mscsa.block.csa1.num_heads == 16
    assert trainer.current_epoch == EPOCHS
    losses = trainer.logger.get_value("train_losses", step=None)
    assert len(losses) == EPOCHS and all(math.isfinite(v) for v in losses)

    fold_dir = Path(trainer.output_folder)
    assert fold_dir == (
        results / DATASET_NAME / f"{TRAINER}__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}"
    )
    checkpoint = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["init_args"]["configuration"] == CONFIGURATION
    assert any(k.startswith("mscsa.block.csa1.") for k in checkpoint["network_weights"])


def predict_and_check(model_dir: str, raw_root: Path, out_dir: Path) -> None:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False
    )
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=(FOLD,))
    assert predictor.trainer_name == TRAINER
    assert type(predictor.network).__name__ == "PlainConvUNetMSCSA"
    assert predictor.network.decoder.deep_supervision is False

    cases = {
        "test_000": raw_root / "imagesTs" / "test_000_0000.nii.gz",  # unseen case
        "case_000": raw_root / "imagesTr" / "case_000_0000.nii.gz",
    }
    out_dir.mkdir()
    # sequential: no worker processes; same preprocessing, sliding window and export
    predictor.predict_from_files_sequential(
        [[str(p)] for p in cases.values()], [str(out_dir / stem) for stem in cases],
        save_probabilities=False, overwrite=True,
    )
    for stem, source in cases.items():
        written = out_dir / f"{stem}.nii.gz"
        assert written.is_file(), sorted(os.listdir(out_dir))
        seg, image = nib.load(written), nib.load(source)
        assert seg.shape == image.shape == SHAPE
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-5)
        labels = set(np.unique(np.asarray(seg.dataobj)).tolist())
        assert labels <= {0, 1}


def test_plan_preprocess_train_predict_mscsa_on_cpu(nnunet_env, monkeypatch, tmp_path):
    raw_root = write_raw_dataset(nnunet_env["nnUNet_raw"])
    check_plan(plan_and_preprocess(nnunet_env))
    trainer = train(monkeypatch)
    check_training(trainer, nnunet_env["nnUNet_results"])
    predict_and_check(trainer.output_folder_base, raw_root, tmp_path / "pred")
