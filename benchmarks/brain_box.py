"""Sliding window over the brain box against the whole template grid: accuracy and windows.

Run by hand (not by pytest), from the repository root::

    .venv/bin/python -m benchmarks.brain_box [--subjects 6] [--out benchmarks/results/brain_box_cpu.md]

Held-out synthetic heads (``synthesize_dataset(seed=3000)``; the demo bundle was trained on
seed 1000) on the 1 mm template grid, as ``benchmarks.segmentation`` prepares them, are
segmented by the app's segmentation step (``segment_template_t1w``) with the demo bundle and
the template brain mask, once with ``brain_box=False`` (the whole grid, as nnU-Net would) and
once with the brain box (the default). Per subject: the largest probability difference, the
Dice of each mask against the truth and of the two masks against each other, and the sliding
windows per pass. The window counts of the paper's 128³ plan on the same boxes come from
nnU-Net's own ``compute_steps_for_sliding_window``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS
from benchmarks.measure import log, machine_description
from benchmarks.report import rounded_load, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.brain_box",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--context-mm", type=float, nargs="+", default=None,
                        help="context around the brain box (mm) to compare; default: the "
                             "app's BRAIN_BOX_CONTEXT_MM")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "brain_box_cpu.md")
    return parser


def windows(shape, patch, step) -> int:
    """Sliding windows nnU-Net places over ``shape`` (its own step function)."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(s, p) for s, p in zip(shape, patch)]
    return math.prod(len(s) for s in compute_steps_for_sliding_window(padded, patch, step))


def dice(a, b) -> float:
    import numpy as np

    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def main(argv=None) -> int:
    import nibabel as nib
    import numpy as np

    from benchmarks.fixtures import prepare_subjects
    from stroke_lesion_app.core.bundle import load_bundle
    from stroke_lesion_app.core.ensemble import window_region
    from stroke_lesion_app.core.segmentation import (
        BRAIN_BOX_CONTEXT_MM,
        BRAIN_MARGIN_MM,
        InferenceSettings,
        brain_region,
        region_on_grid,
        segment_template_t1w,
    )
    from stroke_lesion_app.core.templates import get_template, template_brain, template_grid

    args = build_parser().parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="brain_box_"))
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_description(2)
    bundle = load_bundle("demo")
    cases = prepare_subjects(work, args.subjects, bias_correct=True)
    _, template_mask = template_brain(get_template())
    brain_file = work / "template_brain_mask.nii.gz"
    template_mask.to_filename(brain_file)
    brain = np.asanyarray(template_mask.dataobj) > 0
    contexts = args.context_mm or [BRAIN_BOX_CONTEXT_MM]
    shape_2mm, affine_2mm = template_grid(2.0)
    boxes = {}
    for context in contexts:
        region = brain_region(brain, BRAIN_MARGIN_MM + context)
        coarse_region = region_on_grid(region, template_mask.affine, affine_2mm, shape_2mm)
        boxes[context] = {
            "region_1mm": [r.stop - r.start for r in region],
            "region_2mm": [r.stop - r.start for r in coarse_region],
            "demo_windows": windows([r.stop - r.start for r in window_region(
                [(r.start, r.stop) for r in coarse_region], shape_2mm, (64,) * 3, 0.5)],
                (64,) * 3, 0.5),
            "paper_windows": windows([r.stop - r.start for r in window_region(
                [(r.start, r.stop) for r in region], (197, 233, 189), (128,) * 3, 0.5)],
                (128,) * 3, 0.5)}
    rows = []
    for case in cases:
        truth = nib.load(case["truth"]).get_fdata() > 0
        runs = [("whole", InferenceSettings(brain_box=False), None)] + [
            (f"box{context:g}", InferenceSettings(brain_box=True), context)
            for context in contexts]
        outputs = {}
        for name, settings, context in runs:
            start = time.perf_counter()
            probseg = work / f"{case['case']}_{name}_p.nii.gz"
            mask = work / f"{case['case']}_{name}_m.nii.gz"
            extra = {} if context is None else {"brain_box_context_mm": context}
            segment_template_t1w(case["image"], bundle, settings, probseg, mask,
                                 brain_mask=brain_file, **extra)
            outputs[name] = (nib.load(probseg).get_fdata(), nib.load(mask).get_fdata() > 0,
                             time.perf_counter() - start)
        p_whole, m_whole, t_whole = outputs["whole"]
        for context in contexts:
            p_box, m_box, t_box = outputs[f"box{context:g}"]
            row = {"case": case["case"], "context_mm": context, "lesion_ml": case["lesion_ml"],
                   "max_abs_dp": float(np.abs(p_whole - p_box).max()),
                   "dice_whole": dice(m_whole, truth), "dice_box": dice(m_box, truth),
                   "dice_whole_vs_box": dice(m_whole, m_box), "seconds_whole": t_whole,
                   "seconds_box": t_box}
            rows.append(row)
            log(f"{case['case']} context {context:g} mm: max |dp| {row['max_abs_dp']:.4f}, "
                f"Dice {row['dice_whole']:.4f} -> {row['dice_box']:.4f}")
    demo_whole = windows(shape_2mm, (64,) * 3, 0.5)
    paper_whole = windows((197, 233, 189), (128,) * 3, 0.5)
    payload = {"machine": machine, "rows": rows, "boxes": {str(k): v for k, v in boxes.items()},
               "demo_windows_whole": demo_whole, "paper_windows_whole": paper_whole}
    payload["machine"]["load_average_end"] = __import__("os").getloadavg()
    lines = ["# Brain box against the whole template grid", "",
             f"Generated by `python -m benchmarks.brain_box` on {machine['date']}; "
             f"{machine['cpu']}, load average at start "
             f"{rounded_load(machine['load_average_start'])}.", "",
             "Box: the template brain mask ± (2 mm kept + *context*), then grown to whole "
             "windows. Sliding windows per pass counted with nnU-Net's step function (step "
             f"0.5); whole grid: demo bundle (64³ at 2 mm) {demo_whole}, paper's 128³ plan at "
             f"1 mm {paper_whole}.", "",
             "| context (mm) | box at 1 mm | box at 2 mm | demo windows | paper-plan windows |",
             "|---:|---|---|---:|---:|"]
    for context, box in boxes.items():
        lines.append(f"| {context:g} | {'×'.join(map(str, box['region_1mm']))} | "
                     f"{'×'.join(map(str, box['region_2mm']))} | {box['demo_windows']} | "
                     f"{box['paper_windows']} |")
    lines += ["", "Demo bundle, TTA on, held-out synthetic heads (seed 3000), the app's "
              "segmentation step with the template brain mask:", "",
              "| subject | context (mm) | truth lesion (mL) | max \\|Δp\\| | Dice whole | "
              "Dice box | Dice change | Dice whole vs box | seconds whole | seconds box |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['context_mm']:g} | {row['lesion_ml']:.1f} | "
                     f"{row['max_abs_dp']:.4f} | {row['dice_whole']:.4f} | "
                     f"{row['dice_box']:.4f} | {row['dice_box'] - row['dice_whole']:+.4f} | "
                     f"{row['dice_whole_vs_box']:.4f} | {row['seconds_whole']:.1f} | "
                     f"{row['seconds_box']:.1f} |")
    page = write_report(args.out.with_suffix(""), lines, payload)
    log(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
