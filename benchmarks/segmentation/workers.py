"""The measured side of the segmentation benchmark: each function runs in a fresh interpreter
(``python -m benchmarks.runner segmentation.<kind> CONFIG``, started by
:func:`benchmarks.segmentation.parts.measure`) and returns JSON-serialisable numbers.

Imports of the app, torch and nnU-Net happen inside the functions, after their clocks start.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

from benchmarks.measure import status_kb


def instrument(predictor, device: str = "cpu") -> dict:
    """Count and time every network call and record the sliding-window grid of each pass.

    On ``cuda`` each call is timed between two ``torch.cuda.synchronize()`` so the time is the
    kernels' and not only their launch. Returns the dict the hooks fill in.
    """
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


def peak_gpu_bytes(device: str) -> int | None:
    """``torch.cuda.max_memory_allocated()`` of this worker on ``cuda``; ``None`` on CPU."""
    import torch

    return torch.cuda.max_memory_allocated() if device == "cuda" else None


def dice(mask, truth) -> float | None:
    """Dice of two masks (non-zero = inside); ``None`` when both are empty."""
    import numpy as np

    mask, truth = np.asarray(mask) > 0, np.asarray(truth) > 0
    total = int(mask.sum()) + int(truth.sum())
    return None if total == 0 else 2.0 * int((mask & truth).sum()) / total


def app_predictor(bundle_path: Path, settings):
    """The bundle checked as the app checks it once per run (structure, space, checksums:
    ``core.bundle.validate_bundle``) and its predictor from ``core.segmentation.get_predictor``,
    the one ``segment_template_t1w`` then finds in its cache for the same bundle and settings.

    Returns
    -------
    (EnsemblePredictor, ModelBundle)
    """
    from stroke_lesion_app.core.bundle import validate_bundle
    from stroke_lesion_app.core.segmentation import get_predictor

    bundle = validate_bundle(bundle_path)
    return get_predictor(bundle, settings), bundle


def run_segment(cfg: dict) -> dict:
    """(a), (b): ``segment_template_t1w`` with the default or the ``--fast`` settings."""
    start = time.perf_counter()
    import nibabel as nib
    import torch

    from stroke_lesion_app.core.segmentation import InferenceSettings, segment_template_t1w

    torch.set_num_threads(cfg["threads"])
    device = cfg.get("device", "cpu")
    settings = InferenceSettings.from_options(device=device, fast=cfg["mode"] == "fast",
                                              num_threads=cfg["threads"]).resolved()
    imported = time.perf_counter()
    predictor, bundle = app_predictor(Path(cfg["bundle"]).absolute(), settings)
    loaded = time.perf_counter()
    stats = instrument(predictor, device)
    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    metadata = segment_template_t1w(cfg["image"], bundle, settings, out / "probseg.nii.gz",
                                    out / "mask.nii.gz")
    done = time.perf_counter()
    if not stats["forward_calls"]:
        raise RuntimeError("segment_template_t1w did not use the instrumented predictor "
                           "(get_predictor's cache missed): the numbers would be wrong")
    mask = nib.load(str(out / "mask.nii.gz")).get_fdata()
    truth = nib.load(cfg["truth"]).get_fdata() if cfg.get("truth") else None
    return {
        "import_s": imported - start, "load_s": loaded - imported, "segment_s": done - loaded,
        "worker_s": done - start, **stats,
        "passes": metadata["NetworkPasses"], "inference": metadata["Inference"],
        "model_resolution": metadata["ModelResolution"],
        "lesion_ml": metadata["TemplateLesionVolumeMl"],
        "dice": None if truth is None else dice(mask, truth),
        "truth_ml": None if truth is None else float((truth > 0).sum()) / 1000.0,
        "params": sum(p.numel() for one in predictor.passes
                      for p in one.predictor.network.parameters()),
        "load_average": os.getloadavg(), "peak_rss_bytes": status_kb("VmHWM") * 1024,
        "peak_gpu_bytes": peak_gpu_bytes(device),
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
    stats = instrument(predictor, device)
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
        "peak_gpu_bytes": peak_gpu_bytes(device),
    }


def run_command(cfg: dict) -> dict:
    """(p), (c): run a command (its own children included); its wall time and peak memory."""
    start = time.perf_counter()
    proc = subprocess.run(cfg["cmd"], capture_output=True, text=True, cwd=cfg.get("cwd"),
                          check=False)
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
    stats = instrument(predictor, device)
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
        "peak_gpu_bytes": peak_gpu_bytes(device),
    }


#: ``python -m benchmarks.runner segmentation.<kind>``
WORKERS = {"segment": run_segment, "ensemble": run_ensemble, "command": run_command,
           "windows": run_windows}
