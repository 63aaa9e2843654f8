"""Full-size nnU-Net v1 → app comparison at the ATLAS plan (issue #15, item 3).

Builds a random-weight v1 network at the ATLAS v2.0 3d_fullres plan with v1's own trainer
(``--network generic``: ``Generic_UNet`` of ExperimentPlanner3D_v21, patch 128³, 6 stages
32-320, 31,194,784 parameters; ``--network fabians``: ``FabiansUNet`` of
ExperimentPlanner3DFabiansResUNet_v21, 72,128,810 parameters; ``generic_mscsa`` and
``fabians_mscsa``: the seed's ``Generic_UNet_MSCSA`` and ``FabiansUNet_MSCSA`` at the published
MSCSA size, saved and predicted by the seed's own v1 fork, ``--seed-nnunet``), predicts a
synthetic 1 mm image
(default 197×233×189, ATLAS's size) with v1's own predictor (mirroring, step 0.5; run in the
side venv that has ``nnunet==1.7.1``), imports the model with ``stroke-lesion-model import`` and
predicts the same image with the app's ``EnsemblePredictor``; reports max |Δp|, the voxels whose
mask at 0.5 differs, and both wall times. Pass: max |Δp| ≤ 1e-3 and ≤ 0.01 % of voxels.

    .venv/bin/python -m benchmarks.v1_import_atlas
        [--network generic|fabians|generic_mscsa|fabians_mscsa] [--seed-nnunet DIR]
        [--shape X Y Z] [--v1-python /work/venvs/nnunet-v1/bin/python] [--folds 1]
        [--work DIR] [--device cpu|cuda]

Slow on 2 CPU cores: at 197×233×189 v1 runs 12 windows of 128³ with 8 mirrorings each (96
forward passes, about half an hour), then the app the same; ``--shape 140 150 150`` gives one
window (8 passes each). Writes ``benchmarks/results/v1_import_atlas_<network>_<device>.md`` and
``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.v1_import_atlas",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="generic",
                        choices=["generic", "fabians", "generic_mscsa", "fabians_mscsa"])
    parser.add_argument("--seed-nnunet", type=Path,
                        help="the seed's nnUNet/ folder (StrokeLesSeg), for the MSCSA networks")
    parser.add_argument("--shape", type=int, nargs=3, default=[197, 233, 189],
                        help="image size, voxels at 1 mm (default: ATLAS's)")
    parser.add_argument("--v1-python", default="/work/venvs/nnunet-v1/bin/python")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None,
                        help="work folder (default /tmp/v1_import_atlas_<network>)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.work = args.work or Path(f"/tmp/v1_import_atlas_{args.network}")

    import nibabel as nib

    from stroke_lesion_app.core.ensemble import EnsemblePredictor
    from stroke_lesion_app.training.model_import import import_bundle

    fixture = args.work / "fixture"
    env = {**os.environ, "SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL": "True",
           "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([args.v1_python, str(ROOT / "scripts" / "make_v1_reference_fixtures.py"),
                    str(fixture), "--plan", "atlas", "--folds", str(args.folds),
                    "--network", args.network, "--shape", *map(str, args.shape),
                    *(["--seed-nnunet", str(args.seed_nnunet)] if args.seed_nnunet else [])],
                   check=True, env=env)
    made = json.loads((fixture / "reference.json").read_text())
    bundle = import_bundle([fixture / "v1_models"], args.work / "bundle",
                           name=f"v1-atlas-{args.network}",
                           overwrite=True)
    image = nib.load(str(fixture / "image.nii.gz"))
    predictor = EnsemblePredictor(bundle.parent, device=args.device, tta=True, step_size=0.5,
                                  num_threads=args.threads)
    start = time.time()
    probability = predictor.predict_probability(np.asarray(image.dataobj, dtype=np.float32),
                                                image.header.get_zooms()[:3])
    seconds = time.time() - start
    reference = np.load(fixture / "reference.npz")["probability"]
    reference_mask = np.asarray(nib.load(str(fixture / "reference_mask.nii.gz")).dataobj) > 0
    max_diff = float(np.abs(probability - reference).max())
    flipped = int(((probability > 0.5) != reference_mask).sum())
    network = predictor.passes[0].predictor.network
    result = {"network": args.network, "v1_trainer": made["trainer"], "v1_code": made["nnunet"],
              "app_network": type(network).__name__,
              "app_network_parameters": sum(p.numel() for p in network.parameters()),
              "parameters_per_network": made["parameters_per_network"], "folds": args.folds,
              "shape": made["shape"], "v1_seconds": made["v1_seconds"],
              "app_seconds": round(seconds, 1), "device": args.device, "threads": args.threads,
              "max_abs_diff": max_diff, "mask_voxels_differing": flipped,
              "mask_fraction_differing": flipped / reference_mask.size,
              "reference_mask_fraction": float(reference_mask.mean()),  # not trivial: 0 < f < 1
              "passed": max_diff <= 1e-3 and flipped / reference_mask.size <= 1e-4,
              "machine": platform.processor() or platform.machine(),
              "load_average": os.getloadavg()}
    out = ROOT / "benchmarks" / "results" / f"v1_import_atlas_{args.network}_{args.device}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# nnU-Net v1 → app, ATLAS plan (128³), {made['trainer']}, "
        f"{'×'.join(map(str, made['shape']))} image\n\n"
        "| quantity | value |\n|---|---|\n" +
        "".join(f"| {key} | {value} |\n" for key, value in result.items()))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
