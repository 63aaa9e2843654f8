"""Lesion-aware normalisation on synthetic heads with large lesions and a known transform
(issue #17, item 1).

Each head comes from the app's generator (``stroke_lesion_app.synthetic``): the template
anatomy with one large unilateral lesion (≥ ``--min-ml`` mL, territorial), seen through a
random pose and a smooth non-linear deformation (1.5-4 mm), with bias field and noise, at
1 mm. The true map native mm → template mm is therefore known: ``T(p) = A p + u(A p)``.

The head is N4-corrected as in the pipeline; the skull is removed with the generator's true
brain mask (skull-stripping is not what is measured). Every method starts from the app's first-pass affine (``register_to_template``):

* ``affine``: that first pass alone;
* ``syn``: plain SyN on top of it;
* ``cost-function``: SyN with the lesion (grown by 2 mm) out of the metric;
* ``enantiomorphic``: SyN of the brain whose lesion was filled with the mirrored hemisphere.

All use the true native lesion mask. Error of a template point q: |T(p̂) − q| in mm, where p̂
is the native point the estimated transform maps q to; reported over the template brain in
three regions: the healthy (contralateral) hemisphere, the lesion's surroundings (1-10 mm
from it, outside it), and the lesion itself.

    .venv/bin/python -m benchmarks.lesion_normalisation [--heads 3] [--seed 7] [--threads 2]

Writes ``benchmarks/results/lesion_normalisation_cpu.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("affine", "syn", "cost-function", "enantiomorphic")
REGIONS = ("healthy_hemisphere", "surroundings", "lesion")


def _large_unilateral_anatomy(rng, template, min_ml: float):
    from stroke_lesion_app.synthetic.head import build_anatomy

    for _ in range(60):
        anatomy = build_anatomy(rng, n_lesions=1, small_lesion_fraction=0.0, template=template)
        mask = anatomy.lesions.mask
        x = np.argwhere(mask)[:, 0] - 98  # template x, mm
        if mask.sum() / 1000 >= min_ml and (min((x < 0).sum(), (x > 0).sum())
                                            <= 0.02 * mask.sum()):
            return anatomy
    raise RuntimeError(f"no unilateral lesion of ≥ {min_ml} mL in 60 draws")


def _true_template_points(native_mm: np.ndarray, anatomy, acquisition) -> np.ndarray:
    """T(p) = A p + u(A p), template mm (the generator's own mapping)."""
    from stroke_lesion_app.synthetic.head import _LATTICE
    from stroke_lesion_app.synthetic.template import HEAD_ORIGIN

    linear = nib.affines.apply_affine(acquisition.native_to_template, native_mm)
    lattice = ((linear - HEAD_ORIGIN) / _LATTICE).T
    u = np.stack([ndi.map_coordinates(anatomy.displacement[c], lattice, order=1,
                                      mode="nearest") for c in range(3)], axis=1)
    return linear + u


def _regions(lesion: np.ndarray, brain: np.ndarray, stride: int) -> dict[str, np.ndarray]:
    """Template voxel indices of each region (every ``stride``-th voxel per axis)."""
    sub = np.zeros(lesion.shape, bool)
    sub[::stride, ::stride, ::stride] = True
    distance = ndi.distance_transform_edt(~lesion)
    side = np.sign(np.argwhere(lesion)[:, 0].mean() - 98)
    x = np.arange(lesion.shape[0])[:, None, None] - 98
    contralateral = (np.sign(x) == -side) & (np.abs(x) > 2)
    return {"healthy_hemisphere": np.argwhere(brain & contralateral & sub),
            "surroundings": np.argwhere(brain & (distance > 0) & (distance <= 10) & sub),
            "lesion": np.argwhere(lesion & sub)}


def _one_head(index: int, rng, template, args, work: Path) -> dict:
    from stroke_lesion_app.core import intensity, lesion_normalisation, registration, templates
    from stroke_lesion_app.synthetic.head import draw_acquisition, render_scan

    anatomy = _large_unilateral_anatomy(rng, template, args.min_ml)
    anatomy.displacement *= args.deformation_scale
    anatomy.max_displacement_mm *= args.deformation_scale
    acquisition = draw_acquisition(rng, voxel_size=(1.0, 1.0, 1.0), orientation="LIA",
                                   dtype="float32", fov_crop="none")
    scan = render_scan(anatomy, acquisition, rng, template=template)
    folder = work / f"head{index}"
    folder.mkdir()
    nib.Nifti1Image(scan.t1w.astype(np.float32), scan.affine).to_filename(folder / "head.nii.gz")
    intensity.n4_bias_correct(folder / "head.nii.gz", folder / "head_n4.nii.gz",
                              num_threads=args.threads)  # as the pipeline does
    brain = np.asarray(nib.load(folder / "head_n4.nii.gz").dataobj) * (scan.brain_mask > 0)
    for name, data in (("brain", brain.astype(np.float32)), ("mask", scan.brain_mask),
                       ("lesion", scan.lesion_mask)):
        nib.Nifti1Image(data, scan.affine).to_filename(folder / f"{name}.nii.gz")
    template_brain, template_mask = templates.template_brain(templates.get_template())
    template_brain.to_filename(folder / "template.nii.gz")
    template_mask.to_filename(folder / "template_mask.nii.gz")

    start = time.time()
    first = registration.register_to_template(
        folder / "brain.nii.gz", folder / "template.nii.gz", folder / "affine",
        moving_mask=folder / "mask.nii.gz", num_threads=args.threads)
    transforms = {"affine": (first.anat2std_xfm, time.time() - start)}
    records = {}
    for branch in METHODS[1:]:
        start = time.time()
        result = lesion_normalisation.normalise_with_lesion(
            folder / "brain.nii.gz", folder / "mask.nii.gz", folder / "lesion.nii.gz",
            first.anat2std_xfm, first.std2anat_xfm, folder / "template.nii.gz",
            folder / "template_mask.nii.gz", folder / branch, branch=branch,
            num_threads=args.threads)
        transforms[branch] = (result.anat2group_xfm, time.time() - start)
        records[branch] = result.record
    auto_branch, reason = lesion_normalisation.choose_branch(
        lesion_normalisation.LesionGeometry(**records["syn"]["LesionGeometry"]))

    regions = _regions(anatomy.lesions.mask > 0, template.brain, args.stride)
    rows = {}
    for method, (transform, seconds) in transforms.items():
        errors = {}
        for region, voxels in regions.items():
            points = nib.affines.apply_affine(templates.TEMPLATE_AFFINE, voxels)
            native = registration.transform_points(points, transform)
            error = np.linalg.norm(_true_template_points(native, anatomy, acquisition) - points,
                                   axis=1)
            errors[region] = {"mean_mm": round(float(error.mean()), 3),
                              "p95_mm": round(float(np.percentile(error, 95)), 3)}
        rows[method] = {"errors": errors, "seconds": round(seconds, 1)}
    return {"head": index, "lesion_ml": round(float(anatomy.lesions.mask.sum()) / 1000, 1),
            "max_deformation_mm": round(anatomy.max_displacement_mm, 2),
            "auto_branch": auto_branch, "auto_reason": reason,
            "points": {region: len(v) for region, v in regions.items()},
            "methods": rows}


def _markdown(result: dict) -> str:
    lines = ["# Lesion-aware normalisation on synthetic heads (known transform)", "",
             (f"{len(result['heads'])} heads, 1 mm, one large unilateral lesion each "
             f"(≥ {result['min_ml']} mL), deformation × {result['deformation_scale']:g}, "
             "N4, true brain mask as skull-stripping; "
             f"{result['machine']}, {result['threads']} threads. Error = distance between "
             "where the estimated transform and the true one send a template point (mm), "
             "mean (95th percentile)."), ""]
    header = "| head | lesion mL | method | " + " | ".join(REGIONS) + " | time s |"
    lines += [header, "|" + "---|" * (len(REGIONS) + 4)]
    for head in result["heads"]:
        for method in METHODS:
            row = head["methods"][method]
            cells = [f"{row['errors'][r]['mean_mm']:.2f} ({row['errors'][r]['p95_mm']:.2f})"
                     for r in REGIONS]
            label = f"**{method}**" if method == head["auto_branch"] else method
            lines.append(f"| {head['head']} | {head['lesion_ml']} | {label} | "
                         + " | ".join(cells) + f" | {row['seconds']} |")
    lines += ["", "Mean over heads (mm):", "",
              "| method | " + " | ".join(REGIONS) + " |", "|" + "---|" * (len(REGIONS) + 1)]
    for method in METHODS:
        means = [np.mean([h["methods"][method]["errors"][r]["mean_mm"] for h in result["heads"]])
                 for r in REGIONS]
        lines.append(f"| {method} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    lines += ["", "Bold: the branch `--group-normalisation auto` picks for that head.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lesion_normalisation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-ml", type=float, default=40.0)
    parser.add_argument("--deformation-scale", type=float, default=1.0,
                        help="multiply the generator's non-linear deformation (1.5-4 mm at most) "
                             "to approach inter-subject differences (e.g. 2.5)")
    parser.add_argument("--stride", type=int, default=3, help="template voxels sampled per axis")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "lesion_normalisation_cpu")
    args = parser.parse_args(argv)

    from stroke_lesion_app.synthetic.template import load_template

    template = load_template()
    rng = np.random.default_rng(args.seed)
    heads = []
    with tempfile.TemporaryDirectory(prefix="lesion_norm_") as work:
        for index in range(args.heads):
            heads.append(_one_head(index, rng, template, args, Path(work)))
            print(json.dumps(heads[-1]), flush=True)
    result = {"heads": heads, "min_ml": args.min_ml, "threads": args.threads,
              "deformation_scale": args.deformation_scale,
              "seed": args.seed, "machine": platform.processor() or platform.machine(),
              "load_average": os.getloadavg()}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
