"""Make nnU-Net v1 reference fixtures for the model-import tests (run with nnU-Net v1 installed).

Builds random-weight nnU-Net v1 models with v1's own trainer code (``--network generic``:
``nnUNetTrainerV2`` with ``nnUNetPlansv2.1``, i.e. ``Generic_UNet``; ``--network fabians``:
``nnUNetTrainerV2_ResencUNet_DA3`` with ``nnUNetPlans_FabiansResUNet_v2.1``, i.e.
``FabiansUNet``, PyPI 1.7.1's bias layout; with ``--seed-nnunet <StrokeLesSeg>/nnUNet``, the
seed's MSCSA models with the seed's own v1 fork: ``--network generic_mscsa``,
``nnUNetTrainerV2_MSCSA_Depth_1_SGD``, i.e. ``Generic_UNet_MSCSA``, 16 heads; ``--network
fabians_mscsa``, ``nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3``, i.e. ``FabiansUNet_MSCSA``,
28 heads), saves them in v1's folder layout
(``3d_fullres/Task<NNN>_<Name>/<Trainer>__<Plans>/plans.pkl`` +
``fold_N/model_final_checkpoint.model(.pkl)``, written by the trainer's own
``save_checkpoint``), and predicts one image with v1's own inference code: the body of
``nnunet.inference.predict.predict_cases`` (preprocess with the trainer's preprocessor, sliding
window with Gaussian weighting and mirroring, softmax averaged over folds, transposed back),
then v1's ``save_segmentation_nifti_from_softmax`` for the mask. Nothing in v1 is patched: on a
machine without CUDA, v1 itself keeps everything on the CPU.

Writes into OUT (default ``tests/data/nnunet_v1/<generic_small|fabians_import_small|
generic_mscsa_import_small|fabians_mscsa_import_small>``)::

    v1_models/3d_fullres/Task900_SmallImport/<Trainer>__<Plans>/...
    image.nii.gz              the input (1 mm, zero background, as ATLAS-space images)
    reference.npz             probability (float32, nibabel axis order) of the 2-fold ensemble
    reference_mask.nii.gz     v1's own exported segmentation of that ensemble
    reference.json            how it was made (versions, plan, folds, settings)

Usage (the side venv of ``shared/design/environment.md``)::

    SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True \\
    /work/venvs/nnunet-v1/bin/python scripts/make_v1_reference_fixtures.py [OUT] \\
        [--network generic|fabians|generic_mscsa|fabians_mscsa] [--seed-nnunet DIR]
        [--plan small|atlas] [--shape X Y Z] [--folds N] [--seed S] [--models-only]

For the seed's networks a temporary copy of the seed's ``nnunet`` package (unchanged) shadows
PyPI nnunet in this process: trainer, restore and predictor are then the seed's own. Its MSCSA
keeps the published size (16 or 28 heads of 40 channels, about 1 M parameters on the small
plan), so the small fixtures are made with ``--folds 1`` (about 4 MB each). The seed's trainer
search imports every trainer module of the fork, one of which needs ``cv2``: install
``opencv-python-headless`` in the side venv.

``--network generic_mscsa_network --seed-nnunet <StrokeLesSeg>/nnUNet`` instead writes
``tests/data/nnunet_v1/generic_mscsa_small``: the seed's ``Generic_UNet_MSCSA``
(``generic_UNet_mscsa_depth_1``, built as its ``nnUNetTrainerV2_MSCSA_Depth_1*`` trainers build
it; 16 heads, ``head_dim_loc`` 40 → 2 so that the fixture stays small, the only source change,
made in a temporary copy of the seed's package, which shadows PyPI nnunet in this process) on a
small plan, every float tensor randomised: ``state_dict.pth``, ``io.pth`` (input and the
eval-mode deep-supervision outputs, full resolution first) and ``config.json``.

``--plan atlas`` uses the plan v1's ``ExperimentPlanner3D_v21`` makes for ATLAS v2.0
(197×233×189 at 1 mm: patch 128³, five 2×2×2 poolings, 32 base features; 31,194,784
parameters), for ``benchmarks/v1_import_atlas.py``; with ``--network fabians`` the plan of
``ExperimentPlanner3DFabiansResUNet_v21`` (same patch and poolings, a leading ``[1, 1, 1]``
pooling, encoder blocks 1-2-3-4-4-4, one conv per decoder stage); the MSCSA networks use the
plan of their backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

os.environ.setdefault("nnUNet_raw_data_base", tempfile.mkdtemp())
os.environ.setdefault("nnUNet_preprocessed", tempfile.mkdtemp())
os.environ.setdefault("RESULTS_FOLDER", tempfile.mkdtemp())

TASK = "Task900_SmallImport"
#: --network → (v1 trainer, v1 plans identifier, default output folder)
NETWORKS = {
    "generic": ("nnUNetTrainerV2", "nnUNetPlansv2.1", "generic_small"),
    "fabians": ("nnUNetTrainerV2_ResencUNet_DA3", "nnUNetPlans_FabiansResUNet_v2.1",
                "fabians_import_small"),
    "generic_mscsa": ("nnUNetTrainerV2_MSCSA_Depth_1_SGD", "nnUNetPlansv2.1",
                      "generic_mscsa_import_small"),
    "fabians_mscsa": ("nnUNetTrainerV2_ResencUNet_MSCSA_Depth_1_DA3",
                      "nnUNetPlans_FabiansResUNet_v2.1", "fabians_mscsa_import_small"),
}
#: the seed's commit the fixtures were made with (nadluru/StrokeLesSeg)
SEED_COMMIT = "6b3c698"
#: the networks that need the seed's v1 fork (``--seed-nnunet``)
SEED_NETWORKS = ("generic_mscsa", "fabians_mscsa")
#: the seed's depth-1 MSCSA modules (``generic_mscsa_network`` patches their head size)
SEED_MSCSA_MODULES = ("generic_UNet_mscsa_depth_1.py", "generic_ResencUNet_mscsa_depth_1.py")


def small_plans(shape_sitk, network: str = "generic") -> dict:
    """A v1 plans dict as ExperimentPlanner3D_v21 (``fabians``:
    ExperimentPlanner3DFabiansResUNet_v21) writes it, for a small network.

    Non-identity transpose and a non-cubic patch, so that an axis mix-up shows; the
    ``FabiansUNet`` plan also has an in-plane-only pooling and 1×3×3 kernels in its first stage.
    """
    transpose_forward = [1, 0, 2]
    if network.startswith("fabians"):
        stage = {
            "batch_size": 2, "num_pool_per_axis": [2, 3, 3],
            "patch_size": np.array([40, 32, 32]),
            "median_patient_size_in_voxels": np.array([shape_sitk[i] for i in transpose_forward]),
            "current_spacing": np.array([1.0, 1.0, 1.0]),
            "original_spacing": np.array([1.0, 1.0, 1.0]), "do_dummy_2D_data_aug": False,
            "pool_op_kernel_sizes": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
            "conv_kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "num_blocks_encoder": (1, 2, 3, 4), "num_blocks_decoder": (1, 1, 1),
        }
        return _plans(stage, base=2, transpose_forward=transpose_forward)
    stage = {
        "batch_size": 2, "num_pool_per_axis": [3, 3, 3], "patch_size": np.array([40, 32, 32]),
        "median_patient_size_in_voxels": np.array([shape_sitk[i] for i in transpose_forward]),
        "current_spacing": np.array([1.0, 1.0, 1.0]), "original_spacing": np.array([1.0, 1.0, 1.0]),
        "do_dummy_2D_data_aug": False,
        "pool_op_kernel_sizes": [[2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "conv_kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    }
    return _plans(stage, base=4, transpose_forward=transpose_forward)


def atlas_plans(network: str = "generic") -> dict:
    """The 3d_fullres plan of v1's ExperimentPlanner3D_v21 (``fabians``:
    ExperimentPlanner3DFabiansResUNet_v21) for ATLAS v2.0 (1 mm, 197×233×189)."""
    if network.startswith("fabians"):
        stage = {
            "batch_size": 2, "num_pool_per_axis": [5, 5, 5],
            "patch_size": np.array([128, 128, 128]),
            "median_patient_size_in_voxels": np.array([189, 233, 197]),
            "current_spacing": np.array([1.0, 1.0, 1.0]),
            "original_spacing": np.array([1.0, 1.0, 1.0]), "do_dummy_2D_data_aug": False,
            "pool_op_kernel_sizes": [[1, 1, 1]] + [[2, 2, 2]] * 5,
            "conv_kernel_sizes": [[3, 3, 3]] * 6,
            "num_blocks_encoder": (1, 2, 3, 4, 4, 4), "num_blocks_decoder": (1, 1, 1, 1, 1),
        }
        return _plans(stage, base=32, transpose_forward=[0, 1, 2])
    stage = {
        "batch_size": 2, "num_pool_per_axis": [5, 5, 5],
        "patch_size": np.array([128, 128, 128]),
        "median_patient_size_in_voxels": np.array([189, 233, 197]),
        "current_spacing": np.array([1.0, 1.0, 1.0]), "original_spacing": np.array([1.0, 1.0, 1.0]),
        "do_dummy_2D_data_aug": False,
        "pool_op_kernel_sizes": [[2, 2, 2]] * 5, "conv_kernel_sizes": [[3, 3, 3]] * 6,
    }
    return _plans(stage, base=32, transpose_forward=[0, 1, 2])


def _plans(stage: dict, *, base: int, transpose_forward) -> dict:
    transpose_backward = [int(np.argsort(transpose_forward)[i]) for i in range(3)]
    return {
        "num_stages": 1, "num_modalities": 1, "modalities": {0: "T1"},
        "normalization_schemes": OrderedDict([(0, "nonCT")]),
        "dataset_properties": {"intensityproperties": None},
        "list_of_npz_files": [], "original_spacings": [], "original_sizes": [],
        "preprocessed_data_folder": "", "num_classes": 1, "all_classes": [1],
        "base_num_features": base, "use_mask_for_norm": OrderedDict([(0, True)]),
        "keep_only_largest_region": None, "min_region_size_per_class": None,
        "min_size_per_class": None, "transpose_forward": list(transpose_forward),
        "transpose_backward": transpose_backward, "data_identifier": "nnUNetData_plans_v2.1",
        "plans_per_stage": {0: stage}, "preprocessor_name": "GenericPreprocessor",
        "conv_per_stage": 2,
    }


def synthetic_image(shape, seed: int) -> np.ndarray:
    """A head-like image (nibabel order): textured ellipsoid, dark blob, zero background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid ** 2 / np.array([0.8, 0.85, 0.75])[:, None, None, None] ** 2).sum(0) <= 1
    texture = gaussian_filter(rng.normal(size=shape), 2.0) * 300
    image = 800 + texture + 200 * grid[0]
    blob = ((grid - np.array([0.3, -0.2, 0.1])[:, None, None, None]) ** 2).sum(0) < 0.05
    image[blob] -= 400
    image[~inside] = 0
    return image.astype(np.float32)


def _trainer_class(name: str):
    """The v1 trainer class ``name``, found as v1's own model restore finds it."""
    import nnunet
    from nnunet.training.model_restore import recursive_find_python_class

    found = recursive_find_python_class(
        [os.path.join(nnunet.__path__[0], "training", "network_training")], name,
        current_module="nnunet.training.network_training")
    if found is None:
        raise SystemExit(f"{name}: no such trainer in {nnunet.__path__[0]}")
    return found


def use_seed_package(seed_nnunet: Path, head_dim: int | None) -> Path:
    """Put a temporary copy of the seed's ``nnunet`` package first on ``sys.path``.

    ``head_dim``: replace the depth-1 MSCSA modules' ``head_dim_loc = 40`` (small fixtures);
    ``None`` keeps the seed's source unchanged. Returns the copy's package folder.
    """
    import shutil

    if "nnunet" in sys.modules:
        raise SystemExit("nnunet was imported before the seed's copy could shadow it.")
    package = Path(tempfile.mkdtemp()) / "nnunet"
    shutil.copytree(seed_nnunet / "nnunet", package)
    if head_dim is not None:
        for name in SEED_MSCSA_MODULES:
            module = package / "network_architecture" / name
            source = module.read_text()
            if source.count("head_dim_loc = 40") != 1:
                raise SystemExit(f"{module}: the seed's source changed; update the patch.")
            module.write_text(source.replace("head_dim_loc = 40", f"head_dim_loc = {head_dim}"))
    sys.path.insert(0, str(package.parent))
    import nnunet

    assert Path(nnunet.__file__).parent == package, "PyPI nnunet was imported"
    return package


def build_models(model_folder: Path, plans: dict, folds, seed: int,
                 trainer_name: str = "nnUNetTrainerV2") -> None:
    import torch

    trainer_class = _trainer_class(trainer_name)

    model_folder.mkdir(parents=True, exist_ok=True)
    plans_file = model_folder / "plans.pkl"
    with open(plans_file, "wb") as handle:
        pickle.dump(plans, handle)
    for fold in folds:
        torch.manual_seed(seed + fold)
        trainer = trainer_class(str(plans_file), fold, output_folder=str(model_folder),
                                  dataset_directory=str(model_folder), batch_dice=True, stage=0,
                                  unpack_data=False, deterministic=True, fp16=False)
        trainer.initialize(training=False)
        with torch.no_grad():  # random biases, norm affines and statistics: every key matters
            for name, parameter in trainer.network.named_parameters():
                if parameter.ndim == 1:  # conv biases, segmentation biases, norm affines
                    parameter.add_(torch.randn_like(parameter) * 0.1)
            for name, buffer in trainer.network.named_buffers():  # the seed's BatchNorms
                if name.endswith("running_mean"):
                    buffer.add_(torch.randn_like(buffer) * 0.1)
                elif name.endswith("running_var"):
                    buffer.mul_(0.5 + torch.rand_like(buffer))
        trainer.save_checkpoint(str(model_folder / f"fold_{fold}" /
                                    "model_final_checkpoint.model"), save_optimizer=False)
        for log in (model_folder / f"fold_{fold}").glob("training_log_*.txt"):
            log.unlink()  # the trainer's own log of this initialisation; not part of a model


def predict_v1(model_folder: Path, image_file: Path, folds, out_mask: Path) -> np.ndarray:
    """v1's predict_cases, one case, float32 probabilities kept (nibabel order)."""
    import SimpleITK as sitk
    from nnunet.inference.segmentation_export import save_segmentation_nifti_from_softmax
    from nnunet.training.model_restore import load_model_and_checkpoint_files

    trainer, params = load_model_and_checkpoint_files(str(model_folder), folds,
                                                      mixed_precision=True,
                                                      checkpoint_name="model_final_checkpoint")
    data, _, properties = trainer.preprocess_patient([str(image_file)])
    softmax = []
    for p in params:
        trainer.load_checkpoint_ram(p, False)
        softmax.append(trainer.predict_preprocessed_data_return_seg_and_softmax(
            data, do_mirroring=True, mirror_axes=trainer.data_aug_params["mirror_axes"],
            use_sliding_window=True, step_size=0.5, use_gaussian=True, all_in_gpu=False,
            mixed_precision=True)[1][None])
    softmax = np.vstack(softmax).mean(0)
    transpose_backward = trainer.plans.get("transpose_backward")
    softmax = softmax.transpose([0] + [i + 1 for i in transpose_backward])
    save_segmentation_nifti_from_softmax(softmax, str(out_mask), properties, 1, None, None, None,
                                         None, None, None, 0)
    # the float32 probability on the input grid: no resampling happened (1 mm in, 1 mm plan),
    # so only the crop is undone, as save_segmentation_nifti_from_softmax does
    assert tuple(softmax.shape[1:]) == tuple(properties["size_after_cropping"]), "resampled?"
    full = np.zeros(properties["original_size_of_raw_data"], dtype=np.float32)
    bbox = properties["crop_bbox"]
    full[bbox[0][0]:bbox[0][1], bbox[1][0]:bbox[1][1], bbox[2][0]:bbox[2][1]] = softmax[1]
    reference = full.transpose(2, 1, 0)  # SimpleITK (z, y, x) -> nibabel (x, y, z)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out_mask))).transpose(2, 1, 0)
    agree = ((reference > 0.5) == (mask > 0)).mean()
    print(f"v1 export vs float32 probability > 0.5: {agree:.6f} of voxels agree", flush=True)
    return reference


#: ``generic_mscsa_network``: the small plan (3 poolings, the first in-plane only), MSCSA head size
MSCSA_POOLS = [[1, 2, 2], [2, 2, 2], [2, 2, 2]]
MSCSA_KERNELS = [[3, 3, 3]] * 4  # uniform: see model_import (v1 decoder kernels)
MSCSA_BASE, MSCSA_PATCH, SMALL_HEAD_DIM = 4, [16, 32, 32], 2


def make_generic_mscsa(out: Path, seed_nnunet: Path, seed: int) -> None:
    """``generic_mscsa_small``: the seed's ``Generic_UNet_MSCSA`` state dict and outputs."""
    use_seed_package(seed_nnunet, SMALL_HEAD_DIM)

    import torch
    from nnunet.network_architecture.generic_UNet_mscsa_depth_1 import Generic_UNet_MSCSA
    from nnunet.network_architecture.initialization import InitWeights_He
    from torch import nn

    torch.manual_seed(seed)
    # exactly as the seed's nnUNetTrainerV2_MSCSA_Depth_1(_SGD, _SGD_DA3) and
    # nnUNetTrainerV2_800epochs_Loss_DiceTopK10_MSCSA_Depth_1_SGD build it
    net = Generic_UNet_MSCSA(
        1, MSCSA_BASE, 2, len(MSCSA_POOLS), 2, 2, nn.Conv3d, nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True}, nn.LeakyReLU,
        {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x,
        InitWeights_He(1e-2), MSCSA_POOLS, MSCSA_KERNELS, False, True, True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every float tensor random: biases, affines, BatchNorm statistics
        for name, tensor in net.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif tensor.ndim == 1:
                tensor.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                tensor.copy_(noise * (float(tensor.std()) or 0.1))
    net.eval()
    net.do_ds = True
    x = torch.randn(1, 1, *MSCSA_PATCH, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        outputs = [o.contiguous() for o in net(x)]
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach() for k, v in net.state_dict().items()}, out / "state_dict.pth")
    torch.save({"input": x, "outputs": outputs}, out / "io.pth")
    config = {
        "made_by": "scripts/make_v1_reference_fixtures.py --network generic_mscsa_network",
        "source": f"nadluru/StrokeLesSeg nnUNet fork (setup.py 1.7.0), commit {SEED_COMMIT}",
        "v1_class": "generic_UNet_mscsa_depth_1.Generic_UNet_MSCSA",
        "source_change": f"head_dim_loc = 40 -> {SMALL_HEAD_DIM}",
        "pool_op_kernel_sizes": MSCSA_POOLS, "conv_kernel_sizes": MSCSA_KERNELS,
        "base_num_features": MSCSA_BASE, "conv_per_stage": 2, "patch_size": MSCSA_PATCH,
        "input_channels": 1, "num_classes": 2, "mscsa_num_heads": 16,
        "mscsa_head_dim": SMALL_HEAD_DIM, "seed": seed, "torch": torch.__version__,
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "output_shapes": [list(o.shape) for o in outputs],
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"wrote {out} ({config['num_parameters']} parameters)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=None)
    parser.add_argument("--network", choices=[*sorted(NETWORKS), "generic_mscsa_network"],
                        default="generic")
    parser.add_argument("--seed-nnunet", type=Path, default=None,
                        help="the MSCSA networks: the seed's nnUNet/ folder (StrokeLesSeg)")
    parser.add_argument("--plan", choices=["small", "atlas"], default="small")
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models-only", action="store_true",
                        help="only the v1 model folder (no image, no v1 prediction): the "
                             "random-weight networks of benchmarks/mapping_ensemble.py")
    args = parser.parse_args(argv)
    if args.network in (*SEED_NETWORKS, "generic_mscsa_network") and args.seed_nnunet is None:
        parser.error(f"--network {args.network} needs --seed-nnunet <StrokeLesSeg>/nnUNet")
    if args.network == "generic_mscsa_network":
        make_generic_mscsa(args.out or (Path(__file__).resolve().parents[1] / "tests" / "data" /
                                        "nnunet_v1" / "generic_mscsa_small"),
                           args.seed_nnunet, args.seed)
        return 0

    if args.network in SEED_NETWORKS:
        use_seed_package(args.seed_nnunet, None)
    import nibabel as nib
    import nnunet
    import torch

    trainer_name, plans_name, default_out = NETWORKS[args.network]
    shape = tuple(args.shape or ((61, 73, 59) if args.plan == "small" else (197, 233, 189)))
    plans = (small_plans(shape[::-1], args.network) if args.plan == "small" else
             atlas_plans(args.network))
    folds = tuple(range(args.folds))
    out = args.out or (Path(__file__).resolve().parents[1] / "tests" / "data" / "nnunet_v1" /
                       default_out)
    out.mkdir(parents=True, exist_ok=True)
    model_folder = out / "v1_models" / "3d_fullres" / TASK / f"{trainer_name}__{plans_name}"
    build_models(model_folder, plans, folds, args.seed, trainer_name)
    if args.models_only:
        print(f"wrote {model_folder} ({len(folds)} fold(s))")
        return 0
    image = synthetic_image(shape, args.seed)
    image_file = out / "image.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 1.0, 1.0])), str(image_file))
    start = time.time()
    reference = predict_v1(model_folder, image_file, folds, out / "reference_mask.nii.gz")
    seconds = time.time() - start
    for log in model_folder.glob("fold_*/training_log_*.txt"):
        log.unlink()  # v1's restore of the trainer logs too; not part of a model
    np.savez_compressed(out / "reference.npz", probability=reference)
    state = torch.load(model_folder / "fold_0" / "model_final_checkpoint.model",
                       weights_only=False)["state_dict"]
    # FabiansUNet registers its decoder layers twice (shared tensors): count each tensor once
    n_parameters = sum({v.data_ptr(): v.numel() for k, v in state.items()
                        if not k.endswith(("running_mean", "running_var",
                                           "num_batches_tracked"))}.values())
    (out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/make_v1_reference_fixtures.py",
        "nnunet": (f"the seed's v1 fork (nadluru/StrokeLesSeg {SEED_COMMIT}, unchanged)"
                   if args.network in SEED_NETWORKS else getattr(nnunet, "__version__", "1.7.1")),
        "torch": torch.__version__,
        "python": sys.version.split()[0], "plan": args.plan, "shape": list(shape),
        "folds": list(folds), "seed": args.seed, "network": args.network,
        "trainer": trainer_name, "plans": plans_name,
        "task": TASK, "parameters_per_network": n_parameters,
        "v1_settings": {"do_mirroring": True, "mirror_axes": [0, 1, 2], "step_size": 0.5,
                        "use_gaussian": True, "device": "cpu"},
        "v1_seconds": round(seconds, 1)}, indent=2) + "\n")
    print(f"wrote {out} ({n_parameters} parameters per network, v1 took {seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
