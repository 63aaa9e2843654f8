"""The parts of the segmentation benchmark, parent side: inputs, worker processes, derived numbers.

Each ``part_<x>(args, env, mem_cap, cases, work)`` returns the JSON-serialisable result of part
``x`` (stored under ``results[x]`` in ``segmentation_<device>.json``); every measurement runs in
a fresh worker process (:func:`measure`).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks.fixtures import (
    PAPER_PATCH,
    QUICK_PATCH,
    images_on_bundle_grid,
    make_random_bundle,
    make_two_member_bundle,
    paper_plans,
)
from benchmarks.measure import log
from benchmarks.runner import spawn
from benchmarks.segmentation.workers import dice

BIN = Path(sys.executable).parent


def measure(kind: str, cfg: dict, env: dict, mem_cap: int, timeout: float) -> dict:
    """Run worker ``segmentation.<kind>`` in a fresh interpreter, its process tree watched.

    Returns the worker's result plus ``process_wall_s`` and ``tree_peak_rss_bytes`` measured
    here, or ``{"error": ..., "process_wall_s": ...}`` (with the tree peak when it was killed).
    """
    run = spawn(f"segmentation.{kind}", cfg, env=env, mem_cap=mem_cap, timeout=timeout,
                tree=True)
    if run.killed:
        return {"error": run.error, "process_wall_s": run.wall_s,
                "tree_peak_rss_bytes": run.peak_rss_bytes}
    if run.result is None:
        return {"error": run.error, "process_wall_s": run.wall_s}
    return {**run.result, "process_wall_s": run.wall_s,
            "tree_peak_rss_bytes": run.peak_rss_bytes}


def sliding_steps(image_size, patch, step) -> list[list[int]]:
    """nnU-Net's window start positions per axis (``compute_steps_for_sliding_window``)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    return compute_steps_for_sliding_window(tuple(image_size), tuple(patch), step)


def grid(image_size, patch, step) -> str:
    """The sliding-window grid as ``n×n×n``."""
    return "×".join(str(len(s)) for s in sliding_steps(image_size, patch, step))


def part_a(args, env, mem_cap, cases, work) -> dict:
    """(a) ``segment_template_t1w`` with the demo bundle, default settings and ``--fast``."""
    case = cases[0]
    results = {"case": case, "segment": {}}
    for mode in ("default", "fast"):
        log(f"(a) segment_template_t1w, demo bundle, {mode} ...")
        cfg = {"mode": mode, "bundle": str(args.bundle), "image": case["image"],
               "truth": case["truth"], "threads": args.threads, "device": args.device,
               "out_dir": str(work / "out" / f"a-{mode}")}
        res = measure("segment", cfg, env, mem_cap, args.timeout)
        log("    " + (res.get("error") or f"{res['segment_s']:.1f} s, Dice {res['dice']}"))
        results["segment"][mode] = res
    return results


def part_p(args, env, mem_cap, cases, work) -> dict:
    """The participant runs of (a), measured last (they take the longest)."""
    case = cases[0]
    results = {"case": case}
    for mode in ("default", "fast"):
        log(f"(a) participant run, {mode} ...")
        folder = work / "out" / f"participant-{mode}"
        if folder.exists():
            shutil.rmtree(folder)
        label = case["case"].split("_")[0][len("sub-"):]
        cmd = [str(BIN / "stroke-lesion-app"), case["bids"], str(folder / "derivatives"),
               "participant", "-w", str(folder / "work"), "--nprocs", str(args.threads),
               "--participant-label", label, "--model", str(args.bundle),
               "--device", args.device]
        cmd += ["--fast"] if mode == "fast" else []
        res = measure("command", {"cmd": cmd}, env, mem_cap, args.timeout)
        masks = sorted((folder / "derivatives").rglob(
            "*_space-MNI152NLin2009aSym_label-L_mask.nii.gz"))
        if masks and "error" not in res:
            import nibabel as nib

            res["dice"] = dice(nib.load(str(masks[0])).get_fdata(),
                               nib.load(case["truth"]).get_fdata())
            res["mask"] = str(masks[0].relative_to(folder))
        res["cmd"] = " ".join(["stroke-lesion-app", "BIDS", "OUT", "participant", "-w", "WORK",
                               "--nprocs", str(args.threads), "--participant-label", label,
                               "--model", "BUNDLE", "--device", args.device]
                              + (["--fast"] if mode == "fast" else []))
        log("    " + (res.get("error") or f"{res['wall_s']:.1f} s, rc {res['returncode']}"))
        results[mode] = res
    return results


def part_b(args, env, mem_cap, cases, work) -> dict:
    """(b) the paper-plan MSCSA model, random weights: ``--fast`` measured, default estimated
    on CPU (measured on ``cuda``)."""
    patch = QUICK_PATCH if args.quick else PAPER_PATCH
    bundle = make_random_bundle(work / f"paper-bundle-{patch}", paper_plans(patch), 1.0)
    log(f"(b) paper plan ({patch}³), random weights, --fast ...")
    cfg = {"mode": "fast", "bundle": str(bundle), "image": cases[0]["image"], "truth": None,
           "threads": args.threads, "device": args.device,
           "out_dir": str(work / "out" / "b-fast")}
    res = measure("segment", cfg, env, mem_cap, args.timeout)
    result = {"patch": patch, "fast": res}
    if args.device == "cuda" and "error" not in res:  # affordable on a GPU: measure it
        log(f"(b) paper plan ({patch}³), random weights, default ...")
        result["default"] = measure("segment", {**cfg, "mode": "default",
                                                "out_dir": str(work / "out" / "b-default")},
                                    env, mem_cap, args.timeout)
        log("    " + (result["default"].get("error")
                      or f"{result['default']['segment_s']:.1f} s"))
    if "error" in res:
        log(f"    {res['error']}")
        return result
    size, patch_size = res["image_sizes"][0], res["patch_sizes"][0]
    per_pass = res["forward_s"] / res["forward_calls"]
    windows_half = math.prod(len(s) for s in sliding_steps(size, patch_size, 0.5))
    network_full = per_pass * windows_half * 8
    overhead = res["segment_s"] - res["forward_s"]
    result["estimate"] = {
        "seconds_per_pass": per_pass, "windows_step_0.5": windows_half,
        "grid_step_0.5": grid(size, patch_size, 0.5),
        "grid_step_1.0": grid(size, patch_size, 1.0),
        "mirrorings": 8, "network_s": network_full, "non_network_s": overhead,
        "total_s": network_full + overhead,
    }
    log(f"    {res['segment_s']:.1f} s ({res['forward_calls']} passes of {per_pass:.2f} s); "
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
            log(f"(w) {label}, {size} window(s) per call ...")
            out_file = work / "out" / f"w-{label}-{size}.npy"
            out_file.parent.mkdir(parents=True, exist_ok=True)
            cfg = {"bundle": str(bundle), "image": image, "device": args.device,
                   "threads": args.threads, "tta": result["tta"], "window_batch_size": size,
                   "out_file": str(out_file)}
            res = measure("windows", cfg, env, mem_cap, args.timeout)
            if "error" not in res:
                probability = np.load(out_file)
                reference = probability if reference is None else reference
                res["max_abs_difference"] = float(np.abs(probability - reference).max())
            log("    " + (res.get("error") or f"{res['predict_s']:.2f} s"))
            rows[size] = res
        result["models"][label] = {"bundle": str(bundle), "resolution": resolution,
                                   "image": image, "rows": rows}
    return result


def part_c(args, env, mem_cap, cases, work) -> dict:
    """(c) the in-process ensemble of two members against nnU-Net's CLI once per member."""
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
    log(f"(c) EnsemblePredictor, 2 members, {len(images)} image(s) ...")
    ours_dir = work / "out" / "c-ensemble"
    if ours_dir.exists():
        shutil.rmtree(ours_dir)
    ours = measure("ensemble", {"bundle": str(bundle_dir), "images": images,
                                "tta": args.compare_tta, "step_size": 0.5,
                                "threads": args.threads, "device": args.device,
                                "window_batch_size": 1,  # nnU-Net's CLI runs one at a time
                                "out_dir": str(ours_dir)}, env, mem_cap, args.timeout)
    log("    " + (ours.get("error") or f"{ours['process_wall_s']:.1f} s"))
    result = {"n_images": len(images), "tta": args.compare_tta, "ensemble": ours, "cli": {}}
    for member in bundle.members:
        log(f"(c) nnUNetv2_predict_from_modelfolder, member {member.name} ...")
        out = work / "out" / "c-cli" / member.name
        if out.exists():
            shutil.rmtree(out)
        cmd = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(in_dir), "-o", str(out),
               "-m", str(member.folder), "-f", *[str(f) for f in member.folds],
               "-chk", member.checkpoint, "-step_size", "0.5", "--save_probabilities",
               "-device", args.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"]
        cmd += [] if args.compare_tta else ["--disable_tta"]
        res = measure("command", {"cmd": cmd}, env, mem_cap, args.timeout)
        res["cmd"] = " ".join(["nnUNetv2_predict_from_modelfolder", "-i", "IN", "-o", "OUT", "-m",
                               f"BUNDLE/{member.name}"] + cmd[7:])
        log("    " + (res.get("error") or f"{res['wall_s']:.1f} s, rc {res['returncode']}"))
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
    log(f"    CLI total {result['cli_total_s']:.1f} s, ratio "
        f"{result['ratio_cli_over_ensemble']:.2f}, max |diff| {worst:.2e}")
    return result


#: the parts by letter, in their default order
PARTS = {"a": part_a, "b": part_b, "c": part_c, "w": part_w, "p": part_p}
