"""Wall time and peak memory of lesion segmentation on CPU: demo bundle, paper-size model, ensemble.

Run by hand (not by pytest), on an otherwise idle machine::

    .venv/bin/python benchmarks/segmentation.py             # everything, ~16 min on 2 cores
    .venv/bin/python benchmarks/segmentation.py --quick     # smoke run, ~5 min, *_quick.md
    .venv/bin/python benchmarks/segmentation.py --parts b c --work-dir /tmp/segbench

Three parts, each measurement in a fresh subprocess (wall time from the parent; peak resident
set ``VmHWM`` of the worker, and for commands that start processes of their own the largest
resident set of any of them from ``getrusage(RUSAGE_CHILDREN)`` plus the sampled sum over the
process tree):

(a) **demo bundle** (``stroke_lesion_app/data/models/demo``, or ``--bundle``):
    ``core.segmentation.segment_template_t1w`` on one synthetic subject's template-space T1w
    (the generator's head at 1 mm, N4-corrected and resampled onto the 1 mm MNI152NLin2009aSym
    grid with the generator's known affine, i.e. ``stroke-lesion-model convert synthetic
    --resolution 1``), with the default settings (mirroring TTA, step 0.5) and ``--fast``
    (``InferenceSettings.fast()``): network loading and segmentation time, the network passes
    (forward calls counted with hooks on each network), the sliding-window grid, and the Dice
    of the mask against the synthetic truth as a sanity value. Then a whole participant run,
    ``stroke-lesion-app BIDS OUT participant -w WORK --nprocs 2 [--fast]`` on that subject
    (fresh output and work folders; N4, skull-stripping, registration, segmentation,
    back-projection, lesion load, reports; part ``p``, measured last).

(b) **paper-size model, random weights**: a bundle at 1 mm whose one member is
    ``StrokeTrainerDefaultMSCSA`` on the paper's ``3d_fullres`` plan (patch 128³, 6 stages
    32-64-128-256-320-320, strides 1,2,2,2,2,2, 2 convs per stage, InstanceNorm, LeakyReLU;
    plans.json written here in nnU-Net v2's format), segmenting the same 1 mm image with
    ``--fast`` only (no TTA, step 1.0). The default mode (TTA × step 0.5) is *not* run: it is
    estimated as (measured seconds per window pass) × (windows at step 0.5, from nnU-Net's
    ``compute_steps_for_sliding_window`` on the cropped image) × 8 mirrorings.

(c) **in-process ensemble against nnU-Net's CLI**: a 2-member bundle (the demo member and a copy
    whose weights carry 5 % Gaussian noise) predicting ``--n-images`` template-space images on
    the bundle's grid: :class:`EnsemblePredictor` in one process, against
    ``nnUNetv2_predict_from_modelfolder ... --save_probabilities -device cpu -npp 1 -nps 1`` once
    per member (``nnUNet_extTrainer`` from ``ensure_trainer_discovery``) followed by averaging the
    saved probabilities. Both without TTA (``--compare-tta`` to add it), step 0.5. Reports the
    time ratio and the largest absolute difference of the two averaged probabilities.

``--device cuda`` runs the networks on the GPU (parts a, b, c; the participant runs need the
whole app installed and are usually left out there): (b) then also *measures* the default mode
instead of estimating it, and the tables add the peak GPU memory (``max_memory_allocated``).
Network time is taken between ``torch.cuda.synchronize()`` calls on a GPU.

    python benchmarks/segmentation.py --device cuda --parts a b --no-bias-correct

Prepared data (synthetic subjects, converted images, the random paper bundle) are kept in
``--work-dir`` and reused. Results go to
``benchmarks/results/segmentation_{cpu,cuda}[_quick].{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run
from _common import GB, machine_description, mem_available, status_kb, watch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEMO_BUNDLE = ROOT / "stroke_lesion_app" / "data" / "models" / "demo"
BIN = Path(sys.executable).parent

TRAINER = "StrokeTrainerDefaultMSCSA"
CONFIGURATION = "3d_fullres"
PAPER_FEATURES = (32, 64, 128, 256, 320, 320)
PAPER_STRIDES = (1, 2, 2, 2, 2, 2)
PAPER_PATCH, QUICK_PATCH = 128, 64
SEED = 3000  # synthetic subjects: not the demo bundle's training (1000) or test (2000) seeds
DATASET_ID = 951
READING_MARKER = "## Reading (written by hand"  # kept when the tables are rewritten
PAPER_DATASET = "Dataset952_PaperPlanRandom"


# --------------------------------------------------------------------------------------------
# worker side (each runs in a fresh interpreter)
# --------------------------------------------------------------------------------------------
def _instrument(predictor, device: str = "cpu") -> dict:
    """Count and time every network call and record the sliding-window grid of each pass.

    On ``cuda`` each call is timed between two ``torch.cuda.synchronize()`` so the time is the
    kernels' and not only their launch."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    stats = {"forward_calls": 0, "forward_s": 0.0, "windows": [], "image_sizes": [],
             "patch_sizes": []}
    for one in predictor.passes:
        nnunet = one.predictor
        started = []

        def pre_hook(module, args, started=started):
            sync()
            started.append(time.perf_counter())

        def post_hook(module, args, output, started=started):
            sync()
            stats["forward_calls"] += 1
            stats["forward_s"] += time.perf_counter() - started.pop()

        nnunet.network.register_forward_pre_hook(pre_hook)
        nnunet.network.register_forward_hook(post_hook)
        original = nnunet._internal_get_sliding_window_slicers

        def slicers(image_size, original=original, nnunet=nnunet):
            found = original(image_size)
            stats["windows"].append(len(found))
            stats["image_sizes"].append([int(s) for s in image_size])
            stats["patch_sizes"].append([int(s) for s in nnunet.configuration_manager.patch_size])
            return found

        nnunet._internal_get_sliding_window_slicers = slicers  # instance attribute, this run only
    return stats


def _peak_gpu_bytes(device: str) -> int | None:
    """``torch.cuda.max_memory_allocated()`` of this worker on ``cuda``; ``None`` on CPU."""
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def _dice(mask, truth) -> float | None:
    import numpy as np

    mask, truth = np.asarray(mask) > 0, np.asarray(truth) > 0
    total = int(mask.sum()) + int(truth.sum())
    return None if total == 0 else 2.0 * int((mask & truth).sum()) / total


def run_segment(cfg: dict) -> dict:
    """(a), (b): ``segment_template_t1w`` with the default or the ``--fast`` settings."""
    start = time.perf_counter()
    import nibabel as nib
    import torch

    from stroke_lesion_app.core.segmentation import (
        InferenceSettings,
        get_predictor,
        segment_template_t1w,
    )

    torch.set_num_threads(cfg["threads"])
    device = cfg.get("device", "cpu")
    settings = (InferenceSettings.fast(device=device, num_threads=cfg["threads"])
                if cfg["mode"] == "fast"
                else InferenceSettings(device=device, num_threads=cfg["threads"]))
    imported = time.perf_counter()
    bundle = str(Path(cfg["bundle"]).absolute())  # the key segment_template_t1w looks up
    predictor = get_predictor(bundle, settings)
    loaded = time.perf_counter()
    stats = _instrument(predictor, device)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    metadata = segment_template_t1w(cfg["image"], bundle, settings, out / "probseg.nii.gz",
                                    out / "mask.nii.gz")
    done = time.perf_counter()
    mask = nib.load(str(out / "mask.nii.gz")).get_fdata()
    truth = nib.load(cfg["truth"]).get_fdata() if cfg.get("truth") else None
    return {
        "import_s": imported - start, "load_s": loaded - imported, "segment_s": done - loaded,
        "worker_s": done - start, **stats,
        "passes": metadata["NetworkPasses"], "inference": metadata["Inference"],
        "model_resolution": metadata["ModelResolution"],
        "lesion_ml": metadata["TemplateLesionVolumeMl"],
        "dice": None if truth is None else _dice(mask, truth),
        "truth_ml": None if truth is None else float((truth > 0).sum()) / 1000.0,
        "params": sum(p.numel() for one in predictor.passes
                      for p in one.predictor.network.parameters()),
        "load_average": os.getloadavg(), "peak_rss_bytes": status_kb("VmHWM") * 1024,
        "peak_gpu_bytes": _peak_gpu_bytes(device),
    }


def run_ensemble(cfg: dict) -> dict:
    """(c): one :class:`EnsemblePredictor`, every image predicted in this process."""
    start = time.perf_counter()
    import torch

    from stroke_lesion_app.core.ensemble import EnsemblePredictor

    torch.set_num_threads(cfg["threads"])
    imported = time.perf_counter()
    device = cfg.get("device", "cpu")
    predictor = EnsemblePredictor(cfg["bundle"], device=device, tta=cfg["tta"],
                                  step_size=cfg["step_size"], num_threads=cfg["threads"],
                                  window_batch_size=cfg.get("window_batch_size"))
    loaded = time.perf_counter()
    stats = _instrument(predictor, device)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    per_image = []
    for image in cfg["images"]:
        case = Path(image).name[: -len("_0000.nii.gz")]
        begin = time.perf_counter()
        predictor.predict_file(image, out / f"{case}_probseg.nii.gz")
        per_image.append(time.perf_counter() - begin)
    return {
        "import_s": imported - start, "load_s": loaded - imported, "per_image_s": per_image,
        "worker_s": time.perf_counter() - start, "passes": [p.label for p in predictor.passes],
        **stats, "load_average": os.getloadavg(),
        "peak_rss_bytes": status_kb("VmHWM") * 1024,
        "peak_gpu_bytes": _peak_gpu_bytes(device),
    }


def run_command(cfg: dict) -> dict:
    """Run a command (its own children included) and report its wall time and peak memory."""
    start = time.perf_counter()
    proc = subprocess.run(cfg["cmd"], capture_output=True, text=True, cwd=cfg.get("cwd"))
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall_s": wall, "returncode": proc.returncode,
        "largest_process_rss_bytes": usage.ru_maxrss * 1024,
        "children_cpu_s": usage.ru_utime + usage.ru_stime,
        "output_tail": (proc.stdout + proc.stderr)[-1500:], "load_average": os.getloadavg(),
    }


def run_windows(cfg: dict) -> dict:
    """(w): one bundle's ensemble probability with ``window_batch_size`` windows per call."""
    start = time.perf_counter()
    import nibabel as nib
    import numpy as np
    import torch

    from stroke_lesion_app.core.ensemble import EnsemblePredictor

    torch.set_num_threads(cfg["threads"])
    device = cfg["device"]
    image = nib.load(cfg["image"])
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    predictor = EnsemblePredictor(cfg["bundle"], device=device, tta=cfg["tta"], step_size=0.5,
                                  num_threads=cfg["threads"],
                                  window_batch_size=cfg["window_batch_size"])
    stats = _instrument(predictor, device)
    if device == "cuda":  # cuDNN picks its kernels on the first calls: warm up, then measure
        predictor.predict_probability(data, spacing)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        stats.update(forward_calls=0, forward_s=0.0)
    begin = time.perf_counter()
    probability = predictor.predict_probability(data, spacing)
    if device == "cuda":
        torch.cuda.synchronize()
    predict_s = time.perf_counter() - begin
    np.save(cfg["out_file"], probability)
    return {
        "predict_s": predict_s, "worker_s": time.perf_counter() - start,
        "forward_calls": stats["forward_calls"], "forward_s": stats["forward_s"],
        "windows": stats["windows"][-1:], "patch_sizes": stats["patch_sizes"][-1:],
        "peak_rss_bytes": status_kb("VmHWM") * 1024,
        "peak_gpu_bytes": _peak_gpu_bytes(device),
    }


WORKERS = {"segment": run_segment, "ensemble": run_ensemble, "command": run_command,
           "windows": run_windows}


# --------------------------------------------------------------------------------------------
# parent side: preparing inputs and bundles
# --------------------------------------------------------------------------------------------
def nnunet_env(work: Path, threads: int) -> dict:
    """Environment of every worker: nnU-Net folders in ``work``, our trainers, CPU threads."""
    from stroke_lesion_app.training.trainers import TRAINER_ENV_VAR, ensure_trainer_discovery

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               nnUNet_compile="f",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (work / "nnunet" / name).mkdir(parents=True, exist_ok=True)
        env[name] = str(work / "nnunet" / name)
    env[TRAINER_ENV_VAR] = ensure_trainer_discovery(dict(env))
    return env


def prepare_subjects(work: Path, n_subjects: int, bias_correct: bool) -> list[dict]:
    """Synthetic subjects and their 1 mm template-space T1w and truth mask (cached in ``work``).

    Returns the cases, largest truth lesion volume first (the first is the subject of (a)).
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


DATASET_JSON = {"channel_names": {"0": "T1w"}, "labels": {"background": 0, "lesion": 1},
                "numTraining": 0, "file_ending": ".nii.gz"}


def make_random_bundle(out: Path, plans: dict, resolution_mm: float, seed: int = 0) -> Path:
    """A bundle with one ``TRAINER`` member (fold 0) holding random weights of ``plans``."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from stroke_lesion_app.training.package import MemberSource, package_bundle
    from stroke_lesion_app.training.trainers import find_trainer_class

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
    """The first member of ``source`` twice: as it is, and with Gaussian noise on its weights."""
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
                for key, value in checkpoint["network_weights"].items():
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


def images_on_bundle_grid(cases: list[dict], resolution: float, out: Path) -> list[str]:
    """The 1 mm template-space images resampled (linear) to the bundle's grid, as the app does,
    named ``<case>_0000.nii.gz`` for nnU-Net's CLI."""
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
# parent side: running and reporting
# --------------------------------------------------------------------------------------------
def spawn(kind: str, cfg: dict, env: dict, mem_cap: int, timeout: float) -> dict:
    """Run worker ``kind`` in a fresh interpreter; wall time and sampled tree memory from here."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(cfg)]
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env,
                                cwd=ROOT, start_new_session=True)
        killed, peak = watch(proc, mem_cap, timeout, tree=True)
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if killed:
        return {"error": killed, "process_wall_s": wall, "tree_peak_rss_bytes": peak}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result.update(process_wall_s=wall, tree_peak_rss_bytes=peak)
            return result
    return {"error": f"worker failed (rc {proc.returncode}): {err.strip()[-800:]}",
            "process_wall_s": wall}


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _steps(image_size, patch, step) -> list[list[int]]:
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    return compute_steps_for_sliding_window(tuple(image_size), tuple(patch), step)


def _grid(image_size, patch, step) -> str:
    steps = _steps(image_size, patch, step)
    return "×".join(str(len(s)) for s in steps)


def part_a(args, env, mem_cap, cases, work) -> dict:
    case = cases[0]
    results = {"case": case, "segment": {}}
    for mode in ("default", "fast"):
        _log(f"(a) segment_template_t1w, demo bundle, {mode} ...")
        cfg = {"mode": mode, "bundle": str(args.bundle), "image": case["image"],
               "truth": case["truth"], "threads": args.threads, "device": args.device,
               "out_dir": str(work / "out" / f"a-{mode}")}
        res = spawn("segment", cfg, env, mem_cap, args.timeout)
        _log("    " + (res.get("error") or f"{res['segment_s']:.1f} s, Dice {res['dice']}"))
        results["segment"][mode] = res
    return results


def part_p(args, env, mem_cap, cases, work) -> dict:
    """The participant runs of (a), measured last (they take the longest)."""
    case = cases[0]
    results = {"case": case}
    for mode in ("default", "fast"):
        _log(f"(a) participant run, {mode} ...")
        folder = work / "out" / f"participant-{mode}"
        if folder.exists():
            shutil.rmtree(folder)
        label = case["case"].split("_")[0][len("sub-"):]
        cmd = [str(BIN / "stroke-lesion-app"), case["bids"], str(folder / "derivatives"),
               "participant", "-w", str(folder / "work"), "--nprocs", str(args.threads),
               "--participant-label", label, "--model", str(args.bundle),
               "--device", args.device]
        cmd += ["--fast"] if mode == "fast" else []
        res = spawn("command", {"cmd": cmd}, env, mem_cap, args.timeout)
        masks = sorted((folder / "derivatives").rglob(
            "*_space-MNI152NLin2009aSym_label-L_mask.nii.gz"))
        if masks and "error" not in res:
            import nibabel as nib

            res["dice"] = _dice(nib.load(str(masks[0])).get_fdata(),
                                nib.load(case["truth"]).get_fdata())
            res["mask"] = str(masks[0].relative_to(folder))
        res["cmd"] = " ".join(["stroke-lesion-app", "BIDS", "OUT", "participant", "-w", "WORK",
                               "--nprocs", str(args.threads), "--participant-label", label,
                               "--model", "BUNDLE", "--device", args.device]
                              + (["--fast"] if mode == "fast" else []))
        _log("    " + (res.get("error") or f"{res['wall_s']:.1f} s, rc {res['returncode']}"))
        results[mode] = res
    return results


def part_b(args, env, mem_cap, cases, work) -> dict:
    patch = QUICK_PATCH if args.quick else PAPER_PATCH
    bundle = make_random_bundle(work / f"paper-bundle-{patch}", paper_plans(patch), 1.0)
    _log(f"(b) paper plan ({patch}³), random weights, --fast ...")
    cfg = {"mode": "fast", "bundle": str(bundle), "image": cases[0]["image"], "truth": None,
           "threads": args.threads, "device": args.device,
           "out_dir": str(work / "out" / "b-fast")}
    res = spawn("segment", cfg, env, mem_cap, args.timeout)
    result = {"patch": patch, "fast": res}
    if args.device == "cuda" and "error" not in res:  # affordable on a GPU: measure it
        _log(f"(b) paper plan ({patch}³), random weights, default ...")
        result["default"] = spawn("segment", {**cfg, "mode": "default",
                                              "out_dir": str(work / "out" / "b-default")},
                                  env, mem_cap, args.timeout)
        _log("    " + (result["default"].get("error")
                       or f"{result['default']['segment_s']:.1f} s"))
    if "error" in res:
        _log(f"    {res['error']}")
        return result
    size, patch_size = res["image_sizes"][0], res["patch_sizes"][0]
    per_pass = res["forward_s"] / res["forward_calls"]
    windows_half = math.prod(len(s) for s in _steps(size, patch_size, 0.5))
    network_full = per_pass * windows_half * 8
    overhead = res["segment_s"] - res["forward_s"]
    result["estimate"] = {
        "seconds_per_pass": per_pass, "windows_step_0.5": windows_half,
        "grid_step_0.5": _grid(size, patch_size, 0.5),
        "grid_step_1.0": _grid(size, patch_size, 1.0),
        "mirrorings": 8, "network_s": network_full, "non_network_s": overhead,
        "total_s": network_full + overhead,
    }
    _log(f"    {res['segment_s']:.1f} s ({res['forward_calls']} passes of {per_pass:.2f} s); "
         f"full mode estimate {network_full + overhead:.0f} s")
    return result


def part_w(args, env, mem_cap, cases, work) -> dict:
    """(w) windows per network call: the demo bundle on its 2 mm grid, the paper-plan model
    (random weights) at 1 mm; each batch size in a fresh process, compared with 1 window."""
    import numpy as np

    from stroke_lesion_app.core.bundle import load_bundle

    patch = QUICK_PATCH if args.quick else PAPER_PATCH
    models = {}
    if "demo" in args.window_models:
        models["demo"] = (args.bundle, load_bundle(args.bundle).resolution_mm)
    if "paper" in args.window_models:
        models["paper"] = (make_random_bundle(work / f"paper-bundle-{patch}",
                                              paper_plans(patch), 1.0), 1.0)
    result = {"tta": not args.no_tta_windows, "models": {}}
    for label, (bundle, resolution) in models.items():
        image = images_on_bundle_grid(cases[:1], resolution, work / f"inputs-{resolution:g}mm")[0]
        rows, reference = {}, None
        for size in args.window_batch_sizes:
            _log(f"(w) {label}, {size} window(s) per call ...")
            out_file = work / "out" / f"w-{label}-{size}.npy"
            out_file.parent.mkdir(parents=True, exist_ok=True)
            cfg = {"bundle": str(bundle), "image": image, "device": args.device,
                   "threads": args.threads, "tta": result["tta"], "window_batch_size": size,
                   "out_file": str(out_file)}
            res = spawn("windows", cfg, env, mem_cap, args.timeout)
            if "error" not in res:
                probability = np.load(out_file)
                reference = probability if reference is None else reference
                res["max_abs_difference"] = float(np.abs(probability - reference).max())
            _log("    " + (res.get("error") or f"{res['predict_s']:.2f} s"))
            rows[size] = res
        result["models"][label] = {"bundle": str(bundle), "resolution": resolution,
                                   "image": image, "rows": rows}
    return result


def part_c(args, env, mem_cap, cases, work) -> dict:
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core.bundle import load_bundle

    bundle_dir = make_two_member_bundle(args.bundle, work / "two-member-bundle")
    bundle = load_bundle(bundle_dir)
    chosen = cases[: args.n_images]
    images = images_on_bundle_grid(chosen, bundle.resolution_mm,
                                   work / f"inputs-{bundle.resolution_mm:g}mm")
    in_dir = work / "out" / "c-inputs"
    if in_dir.exists():
        shutil.rmtree(in_dir)
    in_dir.mkdir(parents=True)
    for image in images:  # only the chosen images, for nnU-Net's folder input
        os.symlink(image, in_dir / Path(image).name)
    _log(f"(c) EnsemblePredictor, 2 members, {len(images)} image(s) ...")
    ours_dir = work / "out" / "c-ensemble"
    if ours_dir.exists():
        shutil.rmtree(ours_dir)
    ours = spawn("ensemble", {"bundle": str(bundle_dir), "images": images, "tta": args.compare_tta,
                              "step_size": 0.5, "threads": args.threads, "device": args.device,
                              "window_batch_size": 1,  # nnU-Net's CLI runs one at a time
                              "out_dir": str(ours_dir)}, env, mem_cap, args.timeout)
    _log("    " + (ours.get("error") or f"{ours['process_wall_s']:.1f} s"))
    result = {"n_images": len(images), "tta": args.compare_tta, "ensemble": ours, "cli": {}}
    for member in bundle.members:
        _log(f"(c) nnUNetv2_predict_from_modelfolder, member {member.name} ...")
        out = work / "out" / "c-cli" / member.name
        if out.exists():
            shutil.rmtree(out)
        cmd = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(in_dir), "-o", str(out),
               "-m", str(member.folder), "-f", *[str(f) for f in member.folds],
               "-chk", member.checkpoint, "-step_size", "0.5", "--save_probabilities",
               "-device", args.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"]
        cmd += [] if args.compare_tta else ["--disable_tta"]
        res = spawn("command", {"cmd": cmd}, env, mem_cap, args.timeout)
        res["cmd"] = " ".join(["nnUNetv2_predict_from_modelfolder", "-i", "IN", "-o", "OUT", "-m",
                               f"BUNDLE/{member.name}"] + cmd[7:])
        _log("    " + (res.get("error") or f"{res['wall_s']:.1f} s, rc {res['returncode']}"))
        result["cli"][member.name] = res
    if "error" in ours or any("error" in r or r["returncode"] for r in result["cli"].values()):
        return result
    start = time.perf_counter()
    weights = [m.weight for m in bundle.members]
    worst = 0.0
    for image in images:
        case = Path(image).name[: -len("_0000.nii.gz")]
        probabilities = [np.load(work / "out" / "c-cli" / m.name / f"{case}.npz")["probabilities"]
                         for m in bundle.members]
        # (class, k, j, i) → foreground in nibabel order, weighted mean of the members
        average = sum(w * p[1:].sum(axis=0).transpose(2, 1, 0).astype(np.float64)
                      for w, p in zip(weights, probabilities)) / sum(weights)
        ensemble = nib.load(str(ours_dir / f"{case}_probseg.nii.gz")).get_fdata()
        worst = max(worst, float(np.abs(ensemble - average).max()))
    result["average_s"] = time.perf_counter() - start
    result["max_abs_difference"] = worst
    result["cli_total_s"] = sum(r["wall_s"] for r in result["cli"].values()) + result["average_s"]
    result["ratio_cli_over_ensemble"] = result["cli_total_s"] / ours["process_wall_s"]
    _log(f"    CLI total {result['cli_total_s']:.1f} s, ratio "
         f"{result['ratio_cli_over_ensemble']:.2f}, max |diff| {worst:.2e}")
    return result


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _gb(value) -> str:
    return "-" if value is None else f"{value / GB:.2f}"


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_markdown(path: Path, info: dict, results: dict, args) -> None:
    quick = " --quick" if args.quick else ""
    simd = ", ".join(info["simd"]) or "no AVX2"
    load_start = tuple(round(v, 2) for v in info["load_average_start"])
    load_end = tuple(round(v, 2) for v in info["load_average_end"])
    gpu = args.device == "cuda"
    lines = [
        f"# Segmentation speed and memory: {'GPU' if gpu else 'CPU'}"
        f"{' (quick)' if args.quick else ''}",
        "",
        f"Generated by `benchmarks/segmentation.py{quick}` on {info['date']}"
        f" in {info['elapsed_s'] / 60:.1f} min.",
        "",
        (f"* CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs ({simd}), "
         f"{info['memory_gb']} GB RAM; Python {info['python']}, torch {info['torch']}, "
         f"nnunetv2 {info.get('nnunetv2', '?')}, {info['threads']} torch threads, fp32"),
        *([f"* GPU: {info.get('gpu', '?')}; networks on `cuda` (nnU-Net's predictor: "
           "fp32 weights, autocast on CUDA), peak GPU memory = "
           "`torch.cuda.max_memory_allocated()` of the worker"] if gpu else []),
        f"* Load average (1, 5, 15 min): at start {load_start}, at end {load_end}",
        *[(f"* Part ({part}) added later (`--merge`) on {added['date']}, torch "
           f"{added['torch']}, {added['threads']} threads, load average at start "
           f"{tuple(round(v, 2) for v in added['load_average_start'])}, at end "
           f"{tuple(round(v, 2) for v in added['load_average_end'])}")
          for part, added in info.get("added_parts", {}).items()],
        ("* Every row is a fresh process. *process wall*: from starting the interpreter to its "
         "exit (imports, loading, work, writing), measured by the parent; *peak RSS*: `VmHWM` "
         "of the worker; for commands that start processes of their own, *largest process* is "
         "`getrusage(RUSAGE_CHILDREN).ru_maxrss` and *tree* the highest sampled (0.2 s) sum of "
         "the resident sets of all its processes (shared pages counted once per process)."),
        "",
    ]
    if "a" in results or "p" in results:
        lines += _markdown_a(results.get("a"), results.get("p"), info, gpu)
    if "b" in results:
        lines += _markdown_b(results["b"], info, gpu)
    if "c" in results:
        lines += _markdown_c(results["c"], info["threads"], gpu)
    if "w" in results:
        lines += _markdown_w(results["w"], info["threads"], gpu)
    text = "\n".join(lines) + "\n"
    previous = path.read_text() if path.is_file() else ""
    if READING_MARKER in previous:  # keep the hand-written reading
        text += "\n" + previous[previous.index(READING_MARKER):]
    path.write_text(text)


def _gpu_cell(res: dict, gpu: bool) -> str:
    """`` peak GPU GB |`` for a table row on ``cuda``, nothing on CPU."""
    return f" {_gb(res.get('peak_gpu_bytes'))} |" if gpu else ""


def _markdown_a(a: dict | None, p: dict | None, info: dict, gpu: bool = False) -> list[str]:
    case = (a or p)["case"]
    corrected = "N4-corrected" if info.get("bias_correct", True) else "not bias-corrected"
    lines = [
        "## (a) Demo bundle",
        "",
        (f"Input: `{case['case']}` of a synthetic dataset (`synthesize_dataset(seed={SEED})`), "
         f"{corrected} and resampled with the generator's known affine onto the 1 mm "
         "MNI152NLin2009aSym grid (197×233×189), as `stroke-lesion-model convert synthetic "
         f"--resolution 1` does; truth lesion volume {case['lesion_ml']:.1f} mL. Bundle: "
         f"`{info['bundle']}`."),
        "",
        ("`segment_template_t1w` (the app's segmentation step: resample to the bundle's grid, "
         "ensemble, resample back, threshold, small-component rule). *load*: building the "
         "networks and checking the bundle; *segment*: the call itself; *network*: time inside "
         "the networks' forward calls; *passes*: forward calls counted with hooks (windows × "
         "mirrorings × folds); *windows*: sliding-window grid on the cropped image at the "
         "bundle's resolution."),
        "",
        ("| mode | settings | passes | windows | load (s) | segment (s) | network (s) "
         "| process wall (s) | peak RSS (GB) | Dice vs truth | lesion (mL) |"
         + (" peak GPU (GB) |" if gpu else "")),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    for mode, res in (a or {"segment": {}})["segment"].items():
        if "error" in res:
            lines.append(f"| {mode} | {res['error']} |||||||||| ")
            continue
        inf = res["inference"]
        settings = (f"TTA {inf['TestTimeAugmentation']}, step {inf['SlidingWindowStep']}, "
                    f"folds {inf['FoldsPerMember']}")
        windows = ", ".join(
            f"{_grid(s, p, inf['SlidingWindowStep'])} = {w} on {'×'.join(map(str, s))}"
            for s, p, w in zip(res["image_sizes"], res["patch_sizes"], res["windows"]))
        dice = "-" if res["dice"] is None else f"{res['dice']:.3f}"
        lines.append(
            f"| {'--fast' if mode == 'fast' else 'default'} | {settings} | "
            f"{res['forward_calls']} | {windows} | {res['load_s']:.1f} | {res['segment_s']:.1f} "
            f"| {res['forward_s']:.1f} | {res['process_wall_s']:.1f} | "
            f"{_gb(res['peak_rss_bytes'])} | {dice} | {res['lesion_ml']:.1f} |"
            + _gpu_cell(res, gpu))
    lines.append("")
    if p:
        lines += [
            ("Whole participant run on the same subject (its raw T1w), fresh output and work "
             "folders: N4, skull-stripping, affine registration, segmentation, "
             "back-projection, lesion load, reports. *Dice* of the template-space output mask "
             "against the truth (registration estimated, not the known affine)."),
            "",
            ("*tree*: the sampled sum over the run's processes is the memory figure to read "
             "here: nipype's MultiProc workers come from a forkserver that is never waited for, "
             "so `getrusage(RUSAGE_CHILDREN)` (*largest waited-for process*) misses them."),
            "",
            "| command | wall (s) | tree (GB) | largest waited-for process (GB) | Dice | exit |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for mode, res in ((m, p[m]) for m in ("default", "fast") if m in p):
            if "error" in res:
                lines.append(f"| {mode} | {res['error']} |||||")
                continue
            dice = "-" if res.get("dice") is None else f"{res['dice']:.3f}"
            lines.append(
                f"| `{res['cmd']}` | {res['wall_s']:.0f} | {_gb(res['tree_peak_rss_bytes'])} | "
                f"{_gb(res['largest_process_rss_bytes'])} | {dice} | {res['returncode']} |")
        lines.append("")
    return lines


def _markdown_b(b: dict, info: dict, gpu: bool = False) -> list[str]:
    res, patch = b["fast"], b["patch"]
    lines = [
        "## (b) Paper-size model, random weights",
        "",
        (f"One member `{TRAINER}` on the paper's `3d_fullres` plan: patch {patch}³, 6 stages "
         f"{'-'.join(map(str, PAPER_FEATURES))}, strides {list(PAPER_STRIDES)}, 2 convs per "
         "stage, InstanceNorm, LeakyReLU, MSCSA (16 heads); random weights; bundle at 1 mm, "
         "so the 1 mm image of (a) goes to the network unresampled (nnU-Net crops it to its "
         "non-zero box, z-scores it)."),
        "",
    ]
    if "error" in res:
        return lines + [f"Failed: {res['error']}", ""]
    est = b["estimate"]
    size = "×".join(map(str, res["image_sizes"][0]))
    lines += [
        ("| mode | params | windows (cropped image) | passes | s per pass | load (s) "
         "| segment (s) | network (s) | process wall (s) | peak RSS (GB) |"
         + (" peak GPU (GB) |" if gpu else "")),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
        (f"| --fast (no TTA, step 1.0), measured | {res['params'] / 1e6:.1f} M | "
         f"{est['grid_step_1.0']} = {res['windows'][0]} on {size} | {res['forward_calls']} | "
         f"{est['seconds_per_pass']:.2f} | {res['load_s']:.1f} | {res['segment_s']:.1f} | "
         f"{res['forward_s']:.1f} | {res['process_wall_s']:.1f} | "
         f"{_gb(res['peak_rss_bytes'])} |" + _gpu_cell(res, gpu)),
    ]
    full = b.get("default")
    if full and "error" not in full:
        lines.append(
            f"| default (TTA, step 0.5), measured | {full['params'] / 1e6:.1f} M | "
            f"{est['grid_step_0.5']} = {full['windows'][0]} on {size} | "
            f"{full['forward_calls']} | {full['forward_s'] / full['forward_calls']:.3f} | "
            f"{full['load_s']:.1f} | {full['segment_s']:.1f} | {full['forward_s']:.1f} | "
            f"{full['process_wall_s']:.1f} | {_gb(full['peak_rss_bytes'])} |"
            + _gpu_cell(full, gpu))
        return lines + [
            "",
            ("On a GPU the default mode is measured; the first window pass of a process carries "
             "cuDNN's kernel selection, so seconds per pass from the 8 passes of --fast overstate "
             "the steady state."),
            "",
        ]
    lines += [
        (f"| default (TTA, step 0.5), **estimate, not run** | | {est['grid_step_0.5']} = "
         f"{est['windows_step_0.5']} | {est['windows_step_0.5'] * 8} | | | "
         f"**≈ {est['total_s']:.0f}** | ≈ {est['network_s']:.0f} | | |" + (" |" if gpu else "")),
        "",
        (f"Estimate = {est['seconds_per_pass']:.2f} s per window pass (measured above) × "
         f"{est['windows_step_0.5']} windows at step 0.5 (`compute_steps_for_sliding_window` on "
         f"the cropped {size} image) × 8 mirrorings = {est['network_s']:.0f} s of network time, "
         f"+ {est['non_network_s']:.1f} s outside the networks (pre-/post-processing, measured "
         f"in --fast) = {est['total_s']:.0f} s ({est['total_s'] / 60:.1f} min) per member "
         "and fold. The paper's ensemble multiplies this by members × folds."),
        "",
    ]
    return lines


def _markdown_w(w: dict, threads: int, gpu: bool = False) -> list[str]:
    lines = [
        "## (w) Sliding windows per network call",
        "",
        ("`EnsemblePredictor.predict_probability` on one template-space image on each bundle's "
         f"grid, {'with' if w['tta'] else 'without'} mirroring TTA, step 0.5, "
         + ("GPU (one warm-up prediction first, then measured)" if gpu
            else f"CPU, {threads} threads") +
         "; each batch size in a fresh process. *max |diff|*: largest absolute difference of "
         "the probability from the first row's (nnU-Net's half-precision accumulation and "
         "batch-size-dependent kernels)."),
        "",
        "| model | windows per call | windows | network calls | predict (s) | network (s) "
        "| peak RSS (GB) | max \\|diff\\| |" + (" peak GPU (GB) |" if gpu else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if gpu else ""),
    ]
    for label, model in w["models"].items():
        for size, res in model["rows"].items():
            if "error" in res:
                lines.append(f"| {label} | {size} | {res['error']} |||||||")
                continue
            lines.append(
                f"| {label} ({model['resolution']:g} mm, patch "
                f"{'×'.join(map(str, res['patch_sizes'][0]))}) | {size} | {res['windows'][0]} | "
                f"{res['forward_calls']} | {res['predict_s']:.2f} | {res['forward_s']:.2f} | "
                f"{_gb(res['peak_rss_bytes'])} | {res['max_abs_difference']:.1e} |"
                + _gpu_cell(res, gpu))
    lines.append("")
    return lines


def _markdown_c(c: dict, threads: int, gpu: bool = False) -> list[str]:
    ours = c["ensemble"]
    lines = [
        "## (c) In-process ensemble against nnU-Net's CLI",
        "",
        (f"Two members (the demo bundle's member, and a copy with 5 % Gaussian noise on its "
         f"weights), {c['n_images']} template-space image(s) on the bundle's grid, "
         f"{'with' if c['tta'] else 'without'} TTA, step 0.5, "
         f"{'GPU' if gpu else f'CPU, {threads} threads'}."),
        "",
        "| way | wall (s) | peak RSS, largest process (GB) | tree (GB) |",
        "|---|---:|---:|---:|",
    ]
    if "error" in ours:
        lines.append(f"| EnsemblePredictor | {ours['error']} | | |")
    else:
        per_image = ", ".join(f"{t:.1f}" for t in ours["per_image_s"])
        lines.append(
            f"| `EnsemblePredictor`, one process (load {ours['load_s']:.1f} s, images "
            f"{per_image} s) | {ours['process_wall_s']:.1f} | {_gb(ours['peak_rss_bytes'])} | "
            f"{_gb(ours['tree_peak_rss_bytes'])} |")
    for name, res in c["cli"].items():
        if "error" in res:
            lines.append(f"| CLI member {name} | {res['error']} | | |")
            continue
        lines.append(f"| `{res['cmd']}` | {res['wall_s']:.1f} | "
                     f"{_gb(res['largest_process_rss_bytes'])} | "
                     f"{_gb(res['tree_peak_rss_bytes'])} |")
    if "cli_total_s" in c:
        lines += [
            f"| averaging the saved probabilities (load `.npz`, mean) | {c['average_s']:.1f} | | |",
            f"| **CLI total** | **{c['cli_total_s']:.1f}** | | |",
            "",
            (f"Time ratio CLI / in-process: **{c['ratio_cli_over_ensemble']:.2f}**. Largest "
             f"absolute difference of the averaged lesion probabilities: "
             f"**{c['max_abs_difference']:.1e}**."),
        ]
    lines.append("")
    return lines


# --------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: no participant runs, (b) at {QUICK_PATCH}³, (c) with "
                             "one image; writes segmentation_cpu_quick.md")
    parser.add_argument("--parts", nargs="+", choices=["a", "b", "c", "p", "w"], default=None,
                        help="a: demo bundle segmentation; p: (a)'s participant runs; b: paper-"
                             "size model; c: ensemble vs CLI; w: windows per network call "
                             "(default: a b c w p; a b c w with --quick), run in the order given")
    parser.add_argument("--window-batch-sizes", nargs="+", type=int, default=[1, 2, 4],
                        help="(w) windows per network call to compare (the first is the "
                             "reference)")
    parser.add_argument("--window-models", nargs="+", choices=["demo", "paper"],
                        default=["demo", "paper"], help="(w) models to compare")
    parser.add_argument("--no-tta-windows", action="store_true",
                        help="(w) without mirroring TTA (8× fewer passes)")
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE,
                        help="bundle of (a) and source member of (c) (default: the demo bundle)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="images predicted in (c) (default 3; 1 with --quick)")
    parser.add_argument("--compare-tta", action="store_true", help="(c) with mirroring TTA")
    parser.add_argument("--no-bias-correct", dest="bias_correct", action="store_false",
                        help="skip N4 when preparing the inputs (saves time in quick checks)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, --nprocs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the networks run; results go to segmentation_<device>.md")
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "stroke-lesion-segmentation-bench",
                        help="prepared inputs and outputs (kept and reused)")
    parser.add_argument("--mem-cap-gb", type=float, default=None,
                        help="kill a worker whose process tree passes this resident set "
                             "(default: min(16, 0.7 × available memory))")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--merge", action="store_true",
                        help="add the parts run now to the existing results (the other parts' "
                             "tables are kept; the added parts' date and load are listed)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown from the JSON of an earlier run")
    args = parser.parse_args(argv)
    if args.n_images is None:
        args.n_images = 1 if args.quick else 3
    if args.parts is None:
        args.parts = ["a", "b", "c", "w"] if args.quick else ["a", "b", "c", "w", "p"]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, cfg = args.worker
        sys.path.insert(0, str(ROOT))
        print("RESULT " + json.dumps(WORKERS[kind](json.loads(cfg))), flush=True)
        return 0

    from importlib.metadata import version

    stem = args.out_dir / f"segmentation_{args.device}{'_quick' if args.quick else ''}"
    if args.render:
        saved = json.loads(stem.with_suffix(".json").read_text())
        write_markdown(stem.with_suffix(".md"), saved["machine"], saved["results"], args)
        return 0
    start = time.perf_counter()
    if {"a", "c", "p"} & set(args.parts) and not (args.bundle / "bundle.json").is_file():
        sys.exit(f"{args.bundle}: no bundle.json; train the demo bundle "
                 "(scripts/train_demo_bundle.sh) or pass --bundle, or run --parts b only.")
    args.bundle = args.bundle.absolute()
    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    mem_cap = int((args.mem_cap_gb * GB) if args.mem_cap_gb
                  else min(16 * GB, 0.7 * mem_available()))
    info = machine_description(args.threads)
    info.update(nnunetv2=version("nnunetv2"), bias_correct=args.bias_correct,
                bundle=(str(args.bundle.relative_to(ROOT)) if args.bundle.is_relative_to(ROOT)
                        else str(args.bundle)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(work, args.threads)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                           "nnUNet_results", "nnUNet_compile")})
    _log("preparing synthetic inputs (cached in the work folder) ...")
    cases = prepare_subjects(work, max(3, args.n_images), args.bias_correct)
    results, header = {}, info
    if args.merge and stem.with_suffix(".json").is_file():  # keep the other parts' results
        saved = json.loads(stem.with_suffix(".json").read_text())
        results, header = saved["results"], saved["machine"]
    parts = {"a": part_a, "b": part_b, "c": part_c, "p": part_p, "w": part_w}
    for part in args.parts:  # results are written after each part, so a cut run keeps them
        results[part] = parts[part](args, env, mem_cap, cases, work)
        info["load_average_end"] = os.getloadavg()
        info["elapsed_s"] = time.perf_counter() - start
        if header is not info:
            header.setdefault("added_parts", {})[part] = {
                key: info[key] for key in ("date", "load_average_start", "load_average_end",
                                           "elapsed_s", "threads", "torch")}
        stem.with_suffix(".json").write_text(
            json.dumps({"machine": header, "results": results}, indent=1))
        write_markdown(stem.with_suffix(".md"), header, results, args)
    _log(f"Wrote {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
