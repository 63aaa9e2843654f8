"""The inputs the benchmarks build: heads, synthetic subjects, the paper's network, bundles.

* :func:`scanner_copy`: a real head (Colin27) stored as a scanner would (preprocessing);
* :func:`prepare_subjects`, :func:`images_on_bundle_grid`: synthetic subjects' 1 mm
  template-space T1w and truth masks, and the same images on a bundle's grid (segmentation);
* :data:`PAPER_FEATURES`, :data:`PAPER_STRIDES`, :func:`paper_network`, :func:`paper_plans`:
  the paper's ``3d_fullres`` plain U-Net plan as a network (MSCSA overhead) and as nnU-Net v2
  plans (segmentation);
* :func:`make_random_bundle`, :func:`make_two_member_bundle`: benchmark-only model bundles;
* :data:`MAPPING_TREE`, :func:`copy_v1_model`: MAPPING's published nnU-Net v1 tree laid out
  from v1 model folders (imported-ensemble benchmark and tests);
* :func:`nnunet_env`: the environment nnU-Net and the app's trainers need.

Prepared files are cached in the work folder the caller passes. Heavy modules are imported
inside the functions: worker processes import this module before they measure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

from benchmarks import ROOT

MRICRON = Path("/usr/share/mricron/templates")  # Colin27 from Debian's mricron-data
DEMO_BUNDLE = ROOT / "stroke_lesion_app" / "data" / "models" / "demo"

#: the paper's plain nnU-Net plan: 6 stages, kernel 3, 2 convs per stage
PAPER_FEATURES = (32, 64, 128, 256, 320, 320)
PAPER_STRIDES = (1, 2, 2, 2, 2, 2)
PAPER_PATCH, QUICK_PATCH = 128, 64

SEED = 3000  # synthetic subjects: not the demo bundle's training (1000) or test (2000) seeds
DATASET_ID = 951
TRAINER = "StrokeTrainerDefaultMSCSA"
CONFIGURATION = "3d_fullres"
PAPER_DATASET = "Dataset952_PaperPlanRandom"
DATASET_JSON = {"channel_names": {"0": "T1w"}, "labels": {"background": 0, "lesion": 1},
                "numTraining": 0, "file_ending": ".nii.gz"}


# --------------------------------------------------------------------------------------------
# a head in scanner pose (preprocessing)
# --------------------------------------------------------------------------------------------
def scanner_copy(head: Path, brain: Path | None, out_dir: Path):
    """Write ``head.nii.gz`` (and ``truth_mask.nii.gz``) in scanner pose; return the pose.

    The head is rotated (12°, -6°, 4°), shifted, resampled to 1.0×1.0×1.2 mm, LPS axis order,
    int16. The pose (4×4 ``numpy`` array) maps native world mm → original (MNI-like) world mm.
    """
    import nibabel as nib
    import numpy as np
    from nibabel.processing import resample_from_to
    from scipy.spatial.transform import Rotation

    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [12, -6, 4], degrees=True).as_matrix()
    pose[:3, 3] = [4.0, -10.0, 8.0]
    image = nib.load(str(head))
    zooms = np.array([1.0, 1.0, 1.2])
    shape = tuple(int(n) for n in np.ceil(np.array(image.shape) * 1.1 / zooms))
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    affine[:3, 3] = [zooms[0] * shape[0] / 2, zooms[1] * shape[1] / 2, -zooms[2] * shape[2] / 2]
    viewed = nib.Nifti1Image(image.get_fdata(), np.linalg.inv(pose) @ image.affine)
    moved = resample_from_to(viewed, (shape, affine), order=1)
    nib.Nifti1Image(np.clip(moved.get_fdata(), 0, None).astype(np.int16),
                    affine).to_filename(out_dir / "head.nii.gz")
    if brain is not None:
        reference = nib.load(str(brain))
        mask = resample_from_to(
            nib.Nifti1Image((reference.get_fdata() > 0).astype(np.float32),
                            np.linalg.inv(pose) @ reference.affine), (shape, affine), order=0)
        nib.Nifti1Image(mask.get_fdata().astype(np.uint8), affine).to_filename(
            out_dir / "truth_mask.nii.gz")
    return pose


# --------------------------------------------------------------------------------------------
# synthetic subjects on the template grid (segmentation)
# --------------------------------------------------------------------------------------------
def prepare_subjects(work: Path, n_subjects: int, bias_correct: bool) -> list[dict]:
    """Synthetic subjects and their 1 mm template-space T1w and truth mask (cached in ``work``).

    ``synthesize_dataset(seed=SEED)``, then ``convert_synthetic(resolution_mm=1.0)`` (N4 unless
    not ``bias_correct``, the generator's known affine onto the 1 mm template grid), as
    ``stroke-lesion-model convert synthetic --resolution 1`` does.

    Returns the cases (``case``, ``image``, ``truth``, ``bids``, ``lesion_ml``), largest truth
    lesion volume first.
    """
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.synthetic import synthesize_dataset
    from stroke_lesion_app.training.convert import convert_synthetic

    tag = f"n{n_subjects}{'' if bias_correct else '-nobc'}"
    bids, raw = work / f"bids-{tag}", work / f"raw-{tag}"
    if not bids.is_dir():
        synthesize_dataset(bids, n_subjects=n_subjects, seed=SEED)
    dataset = raw / f"Dataset{DATASET_ID}_SegBench"
    if not dataset.is_dir():
        convert_synthetic(bids, raw, dataset_id=DATASET_ID, name="SegBench", resolution_mm=1.0,
                          bias_correct=bias_correct)
    cases = []
    for image in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        truth = dataset / "labelsTr" / f"{case}.nii.gz"
        voxels = int((np.asanyarray(nib.load(str(truth)).dataobj) > 0).sum())
        cases.append({"case": case, "image": str(image), "truth": str(truth), "bids": str(bids),
                      "lesion_ml": voxels / 1000.0})
    return sorted(cases, key=lambda c: -c["lesion_ml"])


def images_on_bundle_grid(cases: list[dict], resolution: float, out: Path) -> list[str]:
    """The 1 mm template-space images resampled (linear) to the bundle's grid, as the app does,
    named ``<case>_0000.nii.gz`` for nnU-Net's CLI (cached in ``out``)."""
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core.segmentation import resample_to_grid
    from stroke_lesion_app.core.templates import template_grid

    out.mkdir(parents=True, exist_ok=True)
    shape, affine = template_grid(resolution)
    files = []
    for case in cases:
        target = out / f"{case['case']}_0000.nii.gz"
        if not target.is_file():
            image = nib.load(case["image"])
            data = resample_to_grid(np.asanyarray(image.dataobj, dtype=np.float32), image.affine,
                                    shape, affine, order=1)
            written = nib.Nifti1Image(data.astype(np.float32), affine)
            written.set_qform(affine, code=4)
            written.set_sform(affine, code=4)
            written.to_filename(str(target))
        files.append(str(target))
    return files


# --------------------------------------------------------------------------------------------
# the paper's network plan
# --------------------------------------------------------------------------------------------
def paper_network(net: str, deep_supervision: bool = True):
    """The paper's plain nnU-Net plan as ``PlainConvUNet`` (``net="plain"``) or
    ``PlainConvUNetMSCSA`` (``"mscsa"``, 16 heads), with nnU-Net's initialisation (seed 0)."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    from stroke_lesion_app.nets import PlainConvUNetMSCSA

    n = len(PAPER_FEATURES)
    kwargs = {
        "input_channels": 1, "n_stages": n, "features_per_stage": list(PAPER_FEATURES),
        "conv_op": nn.Conv3d, "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[s, s, s] for s in PAPER_STRIDES], "n_conv_per_stage": [2] * n,
        "num_classes": 2, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": nn.InstanceNorm3d, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True}, "deep_supervision": deep_supervision,
    }
    cls = PlainConvUNetMSCSA if net == "mscsa" else PlainConvUNet
    torch.manual_seed(0)
    model = cls(**kwargs)
    model.apply(model.initialize)
    return model


def paper_plans(patch: int, features=PAPER_FEATURES, strides=PAPER_STRIDES,
                spacing: float = 1.0) -> dict:
    """nnU-Net v2 plans with one ``3d_fullres`` configuration: the paper's plain U-Net plan.

    The entries are those ``ExperimentPlanner`` writes (nnU-Net 2.8); normalisation is z-score
    over the image (ATLAS-like heads with skull: no mask for normalisation), data resampled with
    third-order splines, probabilities linearly. At 1 mm on the 1 mm template grid nothing is
    resampled.
    """
    n = len(features)
    resample = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": PAPER_DATASET, "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [spacing] * 3,
        "original_median_shape_after_transp": [189, 233, 197],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: {
            "data_identifier": f"nnUNetPlans_{CONFIGURATION}",
            "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [patch] * 3,
            "median_image_size_in_voxels": [189.0, 233.0, 197.0],
            "spacing": [spacing] * 3,
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resample,
            "resampling_fn_seg_kwargs": {**resample, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resample, "order": 1},
            "architecture": {
                "network_class_name":
                    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {
                    "n_stages": n, "features_per_stage": list(features),
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [[3, 3, 3]] * n, "strides": [[s] * 3 for s in strides],
                    "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1),
                    "conv_bias": True,
                    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                    "dropout_op": None, "dropout_op_kwargs": None,
                    "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
            "batch_dice": False,
        }},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 1600.0, "mean": 700.0, "median": 650.0, "min": 0.0,
            "percentile_00_5": 20.0, "percentile_99_5": 1500.0, "std": 300.0}},
    }


# --------------------------------------------------------------------------------------------
# benchmark-only bundles
# --------------------------------------------------------------------------------------------
def make_random_bundle(out: Path, plans: dict, resolution_mm: float, seed: int = 0) -> Path:
    """A bundle with one ``TRAINER`` member (fold 0) holding random weights of ``plans``
    (kept: an existing ``out/bundle.json`` is reused)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from stroke_lesion_app.core.nnunet_lookup import find_trainer_class
    from stroke_lesion_app.training.package import MemberSource, package_bundle

    if (out / "bundle.json").is_file():
        return out
    staging = out.with_name(f".{out.name}-source") / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
    if staging.parent.exists():
        shutil.rmtree(staging.parent)
    (staging / "fold_0").mkdir(parents=True)
    (staging / "plans.json").write_text(json.dumps(plans, indent=1))
    (staging / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=1))
    manager = PlansManager(plans)
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's trainer search prints
        trainer_class = find_trainer_class(TRAINER)
    network = trainer_class.build_network_architecture(
        manager, manager.get_configuration(CONFIGURATION), 1, 2, enable_deep_supervision=True)
    torch.save({"network_weights": network.state_dict(), "trainer_name": TRAINER,
                "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": 0,
                              "dataset_json": DATASET_JSON},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0},
               staging / "fold_0" / "checkpoint_final.pth")
    package_bundle(out, [MemberSource("paper_mscsa", staging, (0,), 1.0)],
                   name="paper-plan-random", version="0.0.0", resolution_mm=resolution_mm,
                   description="benchmark only: paper 3d_fullres plan, random weights",
                   overwrite=True)
    shutil.rmtree(staging.parent)
    return out


def make_two_member_bundle(source: Path, out: Path, noise: float = 0.05) -> Path:
    """The first member of ``source`` twice: as it is, and with Gaussian noise on its weights
    (``noise`` × each tensor's standard deviation); ``out`` is rebuilt."""
    import torch

    from stroke_lesion_app.core.bundle import load_bundle, write_bundle_manifest

    bundle = load_bundle(source)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    member = bundle.members[0]
    entries = []
    for name, perturb in (("a", False), ("b", True)):
        shutil.copytree(member.folder, out / name)
        if perturb:
            generator = torch.Generator().manual_seed(1)
            for fold in member.folds:
                path = out / name / f"fold_{fold}" / member.checkpoint
                checkpoint = torch.load(path, map_location="cpu", weights_only=False)
                for value in checkpoint["network_weights"].values():
                    if value.is_floating_point() and value.numel() > 1:
                        scale = noise * float(value.std())
                        value.add_(scale * torch.randn(value.shape, generator=generator))
                torch.save(checkpoint, path)
        entries.append({"name": name, "folder": name, "trainer": member.trainer,
                        "configuration": member.configuration, "folds": list(member.folds),
                        "checkpoint": member.checkpoint, "weight": 1.0})
    write_bundle_manifest(out, name="bench-two-members", version="0.0.0", members=entries,
                          resolution_mm=bundle.resolution_mm, threshold=bundle.threshold,
                          min_component_voxels=bundle.min_component_voxels,
                          connectivity=bundle.connectivity, demo=True,
                          description="benchmark only: two copies of one member")
    return out


#: MAPPING's published tree (``King-HAW/ATLAS-R2-Docker-Submission``): task, trainer folder,
#: the trainer its checkpoints name (v1 restores the class named in ``.model.pkl``; their
#: predict script names Task103's ``nnUNetTrainerV2_DA3``), network kind (``generic``:
#: ``Generic_UNet``, ``fabians``: ``FabiansUNet``). 5 folds each: 20 networks.
MAPPING_TREE = (
    ("Task100_ATLAS_v2", "nnUNetTrainerV2__nnUNetPlansv2.1", "nnUNetTrainerV2", "generic"),
    ("Task100_ATLAS_v2", "nnUNetTrainerV2_800epochs_Loss_DiceTopK10__nnUNetPlansv2",
     "nnUNetTrainerV2_800epochs_Loss_DiceTopK10", "generic"),
    ("Task100_ATLAS_v2", "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1",
     "nnUNetTrainerV2_ResencUNet_DA3", "fabians"),
    ("Task103_ATLAS_v2_Self_Training", "nnUNetTrainerV2_DA3__nnUNetPlansv2.1",
     "nnUNetTrainerV2_DA3", "generic"),
)


def copy_v1_model(model: Path, target: Path, trainer: str, folds=(0, 1, 2, 3, 4),
                  spacing_mm: float | None = None, link: bool = False) -> Path:
    """A v1 model folder (``plans.pkl``, ``fold_N/model_final_checkpoint.model(.pkl)``) as
    ``target``, its checkpoints naming ``trainer``.

    Parameters
    ----------
    model : path
        The source folder; its folds are reused in turn when it has fewer than ``folds``.
    target : path
        The new folder (created; must not exist).
    trainer : str
        The v1 trainer class the copies' ``.model.pkl`` name.
    folds : sequence of int
        The folds to write.
    spacing_mm : float, optional
        Set the plans' target spacing to this isotropic voxel size, mm.
    link : bool
        Hard-link the weight files instead of copying them (large models).
    """
    import pickle

    import numpy as np

    target.mkdir(parents=True)
    plans = pickle.loads((model / "plans.pkl").read_bytes())
    if spacing_mm is not None:
        for stage in plans["plans_per_stage"].values():
            stage["current_spacing"] = np.array([spacing_mm] * 3)
            stage["original_spacing"] = np.array([spacing_mm] * 3)
    (target / "plans.pkl").write_bytes(pickle.dumps(plans))
    available = sorted(int(p.name.split("_")[1]) for p in model.glob("fold_*"))
    for index, fold in enumerate(folds):
        source = model / f"fold_{available[index % len(available)]}"
        (target / f"fold_{fold}").mkdir()
        weights = target / f"fold_{fold}" / "model_final_checkpoint.model"
        (os.link if link else shutil.copyfile)(source / "model_final_checkpoint.model", weights)
        info = pickle.loads((source / "model_final_checkpoint.model.pkl").read_bytes())
        info["name"] = trainer
        weights.with_name(weights.name + ".pkl").write_bytes(pickle.dumps(info))
    return target


def nnunet_env(work: Path, threads: int) -> dict:
    """Environment of every segmentation worker: nnU-Net's folders in ``work``, the app's
    trainers (``nnUNet_extTrainer``), ``threads`` CPU threads, no ``torch.compile``."""
    from stroke_lesion_app.core.nnunet_lookup import TRAINER_ENV_VAR, ensure_trainer_discovery

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               nnUNet_compile="f",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / "nnunet" / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(work / "nnunet" / name)
    env[TRAINER_ENV_VAR] = ensure_trainer_discovery(dict(env))
    return env
