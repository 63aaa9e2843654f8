"""Wall time and peak memory of each preprocessing step at 1 mm on this machine.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/preprocessing.py [--head ch2.nii.gz] [--brain ch2bet.nii.gz]
        [--threads 2] [--out benchmarks/results/preprocessing_cpu.md]

The input head is stored the way a scanner might: rotated (12°, -6°, 4°), shifted, resampled to
1.0×1.0×1.2 mm, LPS axis order, int16. By default it is Colin27 (``ch2.nii.gz``, a real T1w head
with skull, from Debian's ``mricron-data``; its brain ``ch2bet.nii.gz`` gives a reference mask).
Every step runs in a fresh subprocess so its peak resident memory (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy.spatial.transform import Rotation

MRICRON = Path("/usr/share/mricron/templates")
ROOT = Path(__file__).resolve().parents[1]


def scanner_copy(head: Path, brain: Path | None, out_dir: Path) -> np.ndarray:
    """Write ``head.nii.gz`` (and ``truth_mask.nii.gz``) in scanner pose; return the pose.

    The pose maps native world mm → original (MNI-like) world mm.
    """
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


STEP_PRELUDE = """
import json, os, sys, time
sys.path.insert(0, {root!r})
os.chdir({work!r})
import nibabel as nib, numpy as np
from stroke_lesion_app.core import brainmask, images, intensity, registration, templates
threads = {threads}
start = time.perf_counter()
"""

STEP_EPILOGUE = """
elapsed = time.perf_counter() - start
peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print('RESULT ' + json.dumps({'seconds': elapsed, 'peak_mb': int(peak) / 1024, **extra}))
"""

STEPS = {
    "conform + N4": """
image = images.conform_t1w(images.load_t1w('head.nii.gz'))
image.to_filename('conformed.nii.gz')
intensity.n4_bias_correct('conformed.nii.gz', 't1w_n4.nii.gz', threads)
extra = {}
""",
    "skull-strip deepbet": """
t1w = nib.load('t1w_n4.nii.gz')
mask = brainmask.brain_mask(t1w, 'deepbet', num_threads=threads)
mask.to_filename('mask_deepbet.nii.gz')
data = t1w.get_fdata() * mask.get_fdata()
nib.Nifti1Image(data.astype(np.float32), t1w.affine).to_filename('brain.nii.gz')
extra = {}
""",
    "skull-strip ants": """
mask = brainmask.brain_mask(nib.load('t1w_n4.nii.gz'), 'ants', num_threads=threads)
mask.to_filename('mask_ants.nii.gz')
extra = {}
""",
    "template brain": """
brain, mask = templates.template_brain(templates.get_template())
brain.to_filename('tpl_brain.nii.gz'); mask.to_filename('tpl_mask.nii.gz')
extra = {'source': templates.get_template().source}
""",
    "register affine": """
registration.register_to_template('brain.nii.gz', 'tpl_brain.nii.gz', 'affine',
    mode='affine', moving_mask='mask_deepbet.nii.gz', fixed_mask='tpl_mask.nii.gz',
    moving_full='t1w_n4.nii.gz', num_threads=threads)
extra = {}
""",
    "register syn": """
registration.register_to_template('brain.nii.gz', 'tpl_brain.nii.gz', 'syn',
    mode='syn', moving_mask='mask_deepbet.nii.gz', fixed_mask='tpl_mask.nii.gz',
    moving_full='t1w_n4.nii.gz', num_threads=threads)
extra = {}
""",
    "back-project mask (affine)": """
registration.apply_transform('tpl_mask.nii.gz', 't1w_n4.nii.gz', 'affine/std2anat_xfm.mat',
    'tplmask_native.nii.gz', 'genericLabel')
extra = {}
""",
}


def run_step(name: str, work: Path, threads: int) -> dict:
    code = (STEP_PRELUDE.format(root=str(ROOT), work=str(work), threads=threads)
            + textwrap.dedent(STEPS[name]) + STEP_EPILOGUE)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env)
    if process.returncode:
        raise RuntimeError(f"{name} failed:\n{process.stderr[-2000:]}")
    result = json.loads(next(line for line in process.stdout.splitlines()
                             if line.startswith("RESULT "))[7:])
    result["process_seconds"] = time.perf_counter() - started
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def accuracy(work: Path, pose: np.ndarray) -> dict:
    """Mask Dice against the reference brain, and the registration's distance to the pose.

    Colin27 lies in (pre-2009) MNI space, so the pose is only approximately the true
    native → MNI152NLin2009aSym transform: the "registration vs pose" numbers include the
    difference between the two MNI spaces.
    """
    sys.path.insert(0, str(ROOT))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", type=Path, default=MRICRON / "ch2.nii.gz")
    parser.add_argument("--brain", type=Path, default=MRICRON / "ch2bet.nii.gz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="step names to skip")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "preprocessing_cpu.md")
    args = parser.parse_args()
    if not args.head.exists():
        parser.error(f"{args.head}: not found; apt-get install mricron-data or pass --head")
    work = Path(tempfile.mkdtemp(prefix="bench_preproc_"))
    pose = scanner_copy(args.head, args.brain if args.brain.exists() else None, work)
    stored = nib.load(work / "head.nii.gz")
    rows = []
    for name in STEPS:
        if name in args.skip:
            continue
        result = run_step(name, work, args.threads)
        rows.append((name, result))
        print(f"{name:28s} {result['seconds']:7.1f} s  {result['peak_mb']:7.0f} MB", flush=True)
    scores = accuracy(work, pose)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    lines = [
        "# Preprocessing: time and peak memory per step",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads per step; "
        f"Python {platform.python_version()}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Input: `{args.head.name}` stored as a scanner would: shape {stored.shape}, voxels "
        f"{tuple(round(float(z), 2) for z in stored.header.get_zooms())} mm, "
        f"{''.join(nib.aff2axcodes(stored.affine))}, int16, rotated (12°, -6°, 4°) and shifted.",
        "Command: `.venv/bin/python benchmarks/preprocessing.py`",
        "",
        "| step | wall time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {result['seconds']:.1f} | {result['peak_mb']:.0f} |"
              for name, result in rows]
    lines += ["", "Accuracy on this head:", ""]
    for key, value in scores.items():
        lines.append(f"- {key}: " + (f"mean {value[0]:.2f} mm, median {value[1]:.2f} mm"
                                     if isinstance(value, tuple) else f"{value:.3f}"))
    lines += ["", "Notes: the reference mask is Colin27's own `ch2bet` (BET-style, tighter around "
              "the cortex than deepbet's, which includes more extracerebral CSF). The 'vs pose' "
              "distances compare the estimated transform with the known scanner pose, which "
              "ignores the difference between Colin27's MNI space and MNI152NLin2009aSym."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
