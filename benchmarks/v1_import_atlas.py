"""Full-size nnU-Net v1 → app comparison at the ATLAS plan (issue #15, item 3).

Builds a random-weight v1 ``Generic_UNet`` at the 3d_fullres plan v1's ExperimentPlanner3D_v21
makes for ATLAS v2.0 (patch 128³, 6 stages 32-320; 31,194,784 parameters) with v1's own trainer,
predicts a 197×233×189 1 mm image with v1's own predictor (mirroring, step 0.5; run in the side
venv that has ``nnunet==1.7.1``), imports the model with ``stroke-lesion-model import`` and
predicts the same image with the app's ``EnsemblePredictor``; reports max |Δp|, the voxels whose
mask at 0.5 differs, and both wall times. Pass: max |Δp| ≤ 1e-3 and ≤ 0.01 % of voxels.

    .venv/bin/python -m benchmarks.v1_import_atlas [--v1-python /work/venvs/nnunet-v1/bin/python]
        [--folds 1] [--work /tmp/v1_atlas] [--device cpu|cuda]

Slow on 2 CPU cores (two sliding windows of 128³ with 8 mirrorings each: about an hour in
all); writes ``benchmarks/results/v1_import_atlas_<device>.md`` and ``.json``.
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
    parser.add_argument("--v1-python", default="/work/venvs/nnunet-v1/bin/python")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/v1_import_atlas"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import nibabel as nib

    from stroke_lesion_app.core.ensemble import EnsemblePredictor
    from stroke_lesion_app.training.model_import import import_bundle

    fixture = args.work / "fixture"
    env = {**os.environ, "SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL": "True",
           "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([args.v1_python, str(ROOT / "scripts" / "make_v1_reference_fixtures.py"),
                    str(fixture), "--plan", "atlas", "--folds", str(args.folds)],
                   check=True, env=env)
    made = json.loads((fixture / "reference.json").read_text())
    bundle = import_bundle([fixture / "v1_models"], args.work / "bundle", name="v1-atlas",
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
    result = {"parameters_per_network": made["parameters_per_network"], "folds": args.folds,
              "shape": made["shape"], "v1_seconds": made["v1_seconds"],
              "app_seconds": round(seconds, 1), "device": args.device, "threads": args.threads,
              "max_abs_diff": max_diff, "mask_voxels_differing": flipped,
              "mask_fraction_differing": flipped / reference_mask.size,
              "passed": max_diff <= 1e-3 and flipped / reference_mask.size <= 1e-4,
              "machine": platform.processor() or platform.machine(),
              "load_average": os.getloadavg()}
    out = ROOT / "benchmarks" / "results" / f"v1_import_atlas_{args.device}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        "# nnU-Net v1 → app, ATLAS plan (128³, 197×233×189)\n\n"
        "| quantity | value |\n|---|---|\n" +
        "".join(f"| {key} | {value} |\n" for key, value in result.items()))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
