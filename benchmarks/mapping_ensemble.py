"""A MAPPING-size imported ensemble per subject: 20 nnU-Net v1 networks at the ATLAS plan.

Issue #15, item 6. Builds MAPPING's published tree (:data:`benchmarks.fixtures.MAPPING_TREE`:
Task100 Default, DTK10, ResUNet-DA3, Task103 self-training; 5 folds each) with random weights at
the ATLAS v2.0 3d_fullres plans, each network made by v1's own trainer code in the side venv
(``scripts/make_v1_reference_fixtures.py --plan atlas --models-only``: ``Generic_UNet``
31,194,784 parameters, ``FabiansUNet`` 72,128,810), imports it with one
``stroke-lesion-model import`` (timed), then runs ``stroke-lesion-app ... participant --model
<bundle>`` on Colin27 in a scanner pose through :mod:`benchmarks.participant_nodes` (its page:
``participant_nodes_mapping_<mode>_<device>.md`` beside ``--out``).

``--fast`` runs the first fold of each member (4 networks), no mirroring, step 1.0. The default
settings (20 networks, 8 mirrorings, step 0.5) take hours on 2 CPU cores; unless ``--modes``
names ``default``, their segmentation time is estimated from the fast run: its segmentation
node time per network pass × the passes the default makes, counted from the sliding-window
region the fast run recorded in its sidecar (``SlidingWindowRegion``) and the plans' patch.

    .venv/bin/python -m benchmarks.mapping_ensemble [--modes fast|default ...] [--device cpu|cuda]
        [--work /tmp/mapping_ensemble] [--v1-python /work/venvs/nnunet-v1/bin/python]
        [--generic DIR] [--fabians DIR]

On a GPU machine (``--device cuda --modes fast default``) both settings are measured; the
v1 models can be built here and carried over with ``--generic``/``--fabians``.

Disk: the v1 models (2.1 GB; the tree hard-links them) and the bundle (3.3 GB) in ``--work``.
Writes ``benchmarks/results/mapping_ensemble_<device>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import RESULTS, ROOT
from benchmarks.fixtures import MAPPING_TREE, copy_v1_model
from benchmarks.measure import log, machine_description
from benchmarks.report import read_json, write_report

FIXTURE_SCRIPT = ROOT / "scripts" / "make_v1_reference_fixtures.py"
#: v1 folder names the fixture script writes, per network kind
V1_FOLDERS = {"generic": "nnUNetTrainerV2__nnUNetPlansv2.1",
              "fabians": "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1"}
#: test-time mirrorings of the default settings (all three axes)
MIRRORINGS = 8
#: the default settings' and ``--fast``'s sliding-window step, fraction of the patch
STEP = {"default": 0.5, "fast": 1.0}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mapping_ensemble",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=sorted(STEP), default=["fast"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mapping_ensemble"))
    parser.add_argument("--v1-python", default="/work/venvs/nnunet-v1/bin/python")
    parser.add_argument("--generic", type=Path,
                        help="an existing v1 Generic_UNet model folder at the ATLAS plan "
                             "(default: build 5 folds in --work)")
    parser.add_argument("--fabians", type=Path,
                        help="an existing v1 FabiansUNet model folder at the ATLAS plan")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path,
                        help="the page (default results/mapping_ensemble_<device>.md)")
    return parser


def v1_model(kind: str, work: Path, v1_python: str) -> Path:
    """A 5-fold random-weight v1 model of ``kind`` at the ATLAS plan, made by v1's trainer."""
    out = work / f"v1-{kind}"
    folder = out / "v1_models" / "3d_fullres" / "Task900_SmallImport" / V1_FOLDERS[kind]
    if (folder / "fold_4" / "model_final_checkpoint.model.pkl").is_file():
        return folder
    env = {**os.environ, "SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL": "True"}
    subprocess.run([v1_python, str(FIXTURE_SCRIPT), str(out), "--network", kind, "--plan",
                    "atlas", "--folds", "5", "--models-only"], check=True, env=env)
    return folder


def mapping_tree(root: Path, models: dict) -> Path:
    """MAPPING's ``nnUNet_trained_models`` tree under ``root`` (rebuilt), weights hard-linked."""
    if root.exists():
        shutil.rmtree(root)
    base = root / "nnUNet_trained_models" / "nnUNet" / "3d_fullres"
    for task, folder, trainer, kind in MAPPING_TREE:
        copy_v1_model(models[kind], base / task / folder, trainer, link=True)
    return root / "nnUNet_trained_models"


def windows_in_region(region_text: str, patch, step: float) -> int:
    """Sliding windows nnU-Net places over the box a sidecar's ``SlidingWindowRegion`` names
    (``i a:b, j c:d, k e:f`` on the 1 mm grid; the plans' patch in the same axis order)."""
    from stroke_lesion_app.core.ensemble import window_count

    lengths = [int(stop) - int(start) for start, stop in
               re.findall(r"[ijk] (\d+):(\d+)", region_text)]
    if len(lengths) != 3:
        raise ValueError(f"no i/j/k box in {region_text!r}")
    return math.prod(window_count(n, p, step) for n, p in zip(lengths, patch))


def plans_patch(member) -> tuple[int, ...]:
    """A bundle member's ``3d_fullres`` patch in the input's ``(i, j, k)`` axis order."""
    plans = json.loads((member.folder / "plans.json").read_text())
    patch = plans["configurations"][member.configuration]["patch_size"]
    transpose = plans.get("transpose_forward", [0, 1, 2])
    ijk = [0, 0, 0]  # nnU-Net axis a is the input's axis 2 - transpose[a]
    for axis, size in enumerate(patch):
        ijk[2 - transpose[axis]] = size
    return tuple(ijk)


def member_parameters(bundle) -> str:
    """``"<v1 trainer> × <folds>: <parameters per network>; ..."`` of an imported bundle."""
    import torch

    parts = []
    for member in bundle.members:
        weights = torch.load(member.folder / f"fold_{member.folds[0]}" / member.checkpoint,
                             map_location="cpu", weights_only=False)["network_weights"]
        count = sum({v.data_ptr(): v.numel() for k, v in weights.items() if not k.endswith(
            ("running_mean", "running_var", "num_batches_tracked"))}.values())
        parts.append(f"{(member.source or {}).get('trainer', member.trainer)} × "
                     f"{len(member.folds)}: {count:,}")
    return "; ".join(parts)


def render(payload: dict) -> list[str]:
    """The Markdown page of :func:`main`'s payload."""
    machine, bundle = payload["machine"], payload["bundle"]
    lines = [
        "# MAPPING-size imported ensemble (20 nnU-Net v1 networks) per subject", "",
        f"Generated by `python -m benchmarks.mapping_ensemble` on {machine['date']}.", "",
        (f"* CPU: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
         f"{machine['memory_gb']} GB RAM; torch {machine['torch']}; load average at start "
         f"{', '.join(f'{v:.2f}' for v in machine['load_average_start'])}"),
        (f"* Bundle: {bundle['members']} members, {bundle['networks']} networks, "
         f"{bundle['gigabytes']:.2f} GB, random weights; parameters per network: "
         f"{bundle['parameters']}"),
        (f"* Import (`stroke-lesion-model import`, one command): "
         f"{payload['import_seconds']:.0f} s"),
        (f"* Networks on `{payload['device']}`" + (f" ({machine['gpu']})" if "gpu" in machine
                                                    else "")),
        "* Input: Colin27 with skull in a scanner pose (see the node-by-node page)", "",
        ("| settings | network passes | windows per pass | forward passes | wall (s) | "
         "segmentation node (s) | measured or estimated |"),
        "|---|---:|---:|---:|---:|---:|---|"]
    for row in payload["rows"]:
        lines.append(f"| {row['mode']} | {row['network_passes']} | {row['windows']} | "
                     f"{row['forward_passes']} | {row.get('wall_s', '-')} | "
                     f"{row['segment_s']:.0f} | {row['kind']} |")
    lines += ["", ("*forward passes*: network passes × windows × mirrorings (8 in the default "
                   "settings, 1 with `--fast`). An estimated row scales the measured fast "
                   "segmentation node by the ratio of forward passes (the node's fixed costs, "
                   "loading 4 instead of 20 networks and preprocessing, are scaled with it)."),
              "", "Node by node: " + ", ".join(f"`{name}`" for name in
                                               payload["participant_pages"]) + ".", ""]
    return lines


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.out = args.out or RESULTS / f"mapping_ensemble_{args.device}.md"
    from benchmarks.participant_nodes.cli import main as participant_nodes
    from stroke_lesion_app.core.bundle import load_bundle

    args.work.mkdir(parents=True, exist_ok=True)
    models = {"generic": args.generic or v1_model("generic", args.work, args.v1_python),
              "fabians": args.fabians or v1_model("fabians", args.work, args.v1_python)}
    tree = mapping_tree(args.work / "tree", models)
    bundle_dir = args.work / "bundle"
    log("importing MAPPING's tree ...")
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("stroke-lesion-model")), "import",
                    str(tree), "-o", str(bundle_dir), "--name", "mapping-random", "--version",
                    "0.0.0", "--description", "benchmark only: MAPPING's tree, random weights",
                    "--force"], check=True, cwd=ROOT)
    import_seconds = time.perf_counter() - start
    bundle = load_bundle(bundle_dir)
    networks = sum(len(member.folds) for member in bundle.members)
    patch = plans_patch(bundle.members[0])
    payload = {"machine": machine_description(2), "device": args.device,
               "import_seconds": round(import_seconds, 1),
               "bundle": {"members": len(bundle.members), "networks": networks,
                          "gigabytes": sum(f.stat().st_size for f in bundle_dir.rglob("*")
                                           if f.is_file()) / 1e9,
                          "parameters": member_parameters(bundle)},
               "rows": []}
    measured = {}
    for mode in args.modes:
        page = args.out.parent / f"participant_nodes_mapping_{mode}_{args.device}.md"
        participant_nodes(["--model", str(bundle_dir), "--modes", mode, "--no-replay",
                           "--device", args.device,
                           "--work", str(args.work / f"participant-{mode}"),
                           "--out", str(page)])
        payload.setdefault("participant_pages", []).append(page.name)
        run = read_json(page.with_suffix(""))["runs"][0]
        if "error" in run:
            raise SystemExit(f"{mode} run failed: {run['error'][:300]}")
        sidecar = next(Path(run["output"]).rglob(
            "*_space-MNI152NLin2009aSym_label-L_probseg.json"))
        meta = json.loads(sidecar.read_text())
        windows = windows_in_region(meta["SlidingWindowRegion"], patch, STEP[mode])
        passes = len(meta["NetworkPasses"])
        measured[mode] = {"mode": mode, "network_passes": passes, "windows": windows,
                          "forward_passes": passes * windows * (MIRRORINGS if mode ==
                                                                "default" else 1),
                          "wall_s": run["wall_s"], "segment_s": run["nodes"]["segment_lesion"],
                          "kind": "measured", "region": meta["SlidingWindowRegion"]}
        payload["rows"].append(measured[mode])
    if "fast" in measured and "default" not in measured:
        fast = measured["fast"]
        windows = windows_in_region(fast["region"], patch, STEP["default"])
        forward = networks * windows * MIRRORINGS
        payload["rows"].append({
            "mode": "default", "network_passes": networks, "windows": windows,
            "forward_passes": forward, "kind": "estimated from the fast run",
            "segment_s": fast["segment_s"] * forward / fast["forward_passes"]})
    write_report(args.out.with_suffix(""), render(payload), payload)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
