"""``python -m benchmarks.preprocessing``: the head, the steps in order, accuracy, the results."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import benchmarks.preprocessing as package
from benchmarks import RESULTS
from benchmarks.fixtures import MRICRON, scanner_copy
from benchmarks.measure import machine_description
from benchmarks.preprocessing.workers import STEPS
from benchmarks.report import write_report
from benchmarks.runner import spawn

NOTES = ("Notes: the reference mask is Colin27's own `ch2bet` (BET-style, tighter around "
         "the cortex than deepbet's, which includes more extracerebral CSF). The 'vs pose' "
         "distances compare the estimated transform with the known scanner pose, which "
         "ignores the difference between Colin27's MNI space and MNI152NLin2009aSym.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocessing",
                                     description=package.__doc__.splitlines()[0])
    parser.add_argument("--head", type=Path, default=MRICRON / "ch2.nii.gz")
    parser.add_argument("--brain", type=Path, default=MRICRON / "ch2bet.nii.gz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=list(STEPS),
                        metavar="STEP", help=f"step names to skip: {', '.join(STEPS)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "preprocessing_cpu.md",
                        help="the Markdown page (.md); the raw numbers go beside it as .json")
    return parser


def run_step(name: str, work: Path, threads: int) -> dict:
    """Step ``name`` in a fresh interpreter; its result plus ``process_seconds`` (the whole
    process, from here). Raises ``RuntimeError`` when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
    run = spawn("preprocessing.step", {"step": name, "work": str(work), "threads": threads},
                env=env)
    if run.result is None:
        raise RuntimeError(f"{name} failed: {run.error}")
    return {**run.result, "process_seconds": run.wall_s}


def dice(a, b) -> float:
    import numpy as np

    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def accuracy(work: Path, pose) -> dict:
    """Mask Dice against the reference brain, and the registration's distance to the pose.

    Colin27 lies in (pre-2009) MNI space, so the pose is only approximately the true
    native → MNI152NLin2009aSym transform: the "registration vs pose" numbers include the
    difference between the two MNI spaces.
    """
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core import registration

    result = {}
    truth_path = work / "truth_mask.nii.gz"
    if truth_path.exists():
        # masks are computed on the conformed (RAS+) grid; the stored head is LPS
        truth = nib.as_closest_canonical(nib.load(truth_path)).get_fdata() > 0
        for method in ("deepbet", "ants"):
            path = work / f"mask_{method}.nii.gz"
            if path.exists():
                result[f"dice_{method}_vs_reference"] = dice(nib.load(path).get_fdata() > 0,
                                                             truth)
    mask = nib.load(work / "tpl_mask.nii.gz")
    points = nib.affines.apply_affine(mask.affine,
                                      np.argwhere(np.asanyarray(mask.dataobj) > 0)[::997])
    expected = nib.affines.apply_affine(np.linalg.inv(pose), points)
    for mode, name in (("affine", "anat2std_xfm.mat"), ("syn", "anat2std_xfm.h5")):
        path = work / mode / name
        if path.exists():
            distance = np.linalg.norm(registration.transform_points(points, path) - expected,
                                      axis=1)
            result[f"{mode}_vs_pose_mm"] = (float(distance.mean()), float(np.median(distance)))
    return result


def page(saved: dict) -> list[str]:
    """The lines of ``preprocessing_cpu.md`` from its JSON payload."""
    info, head = saved["machine"], saved["input"]
    zooms = tuple(round(float(z), 2) for z in head["zooms"])
    lines = [
        "# Preprocessing: time and peak memory per step",
        "",
        (f"Machine: {info['cpu']}, {info['logical_cpus']} cores, {info['threads']} threads per "
         f"step; Python {info['python']}. Date: {info['date'][:10]}."),
        (f"Input: `{head['name']}` stored as a scanner would: shape {tuple(head['shape'])}, "
         f"voxels {zooms} mm, {head['axcodes']}, int16, rotated (12°, -6°, 4°) and shifted."),
        "Command: `.venv/bin/python -m benchmarks.preprocessing`",
        "",
        "| step | wall time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {row['step']} | {row['seconds']:.1f} | {row['peak_mb']:.0f} |"
              for row in saved["rows"]]
    lines += ["", "Accuracy on this head:", ""]
    for key, value in saved["accuracy"].items():
        lines.append(f"- {key}: " + (f"mean {value[0]:.2f} mm, median {value[1]:.2f} mm"
                                     if isinstance(value, (tuple, list)) else f"{value:.3f}"))
    return [*lines, "", NOTES]


def main(argv=None) -> int:
    import nibabel as nib

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.head.exists():
        parser.error(f"{args.head}: not found; apt-get install mricron-data or pass --head")
    work = Path(tempfile.mkdtemp(prefix="bench_preproc_"))
    pose = scanner_copy(args.head, args.brain if args.brain.exists() else None, work)
    stored = nib.load(work / "head.nii.gz")
    info = machine_description(args.threads)
    rows = []
    for name in STEPS:
        if name in args.skip:
            continue
        result = run_step(name, work, args.threads)
        rows.append({"step": name, **result})
        print(f"{name:28s} {result['seconds']:7.1f} s  {result['peak_mb']:7.0f} MB", flush=True)
    info["load_average_end"] = os.getloadavg()
    saved = {"machine": info,
             "input": {"name": args.head.name, "shape": list(stored.shape),
                       "zooms": [float(z) for z in stored.header.get_zooms()],
                       "axcodes": "".join(nib.aff2axcodes(stored.affine)), "work": str(work)},
             "rows": rows, "accuracy": accuracy(work, pose)}
    stem = args.out.with_suffix("") if args.out.suffix == ".md" else args.out
    lines = page(saved)
    write_report(stem, lines, saved)
    print("\n".join(lines))
    return 0
