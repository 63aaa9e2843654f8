"""``python -m benchmarks.participant_nodes``: the head, the runs, the replays, the page."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.participant_nodes as package
from benchmarks import RESULTS, ROOT
from benchmarks.fixtures import MRICRON
from benchmarks.measure import default_mem_cap, log, machine_description, watch
from benchmarks.participant_nodes.inputs import wide_field_dataset
from benchmarks.participant_nodes.tables import render
from benchmarks.report import read_json, write_report

NODE_TOOL = Path(__file__).resolve().with_name("node_tool.py")
MODES = ("default", "fast")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.participant_nodes",
                                     description=package.__doc__.splitlines()[0])
    parser.add_argument("--head", type=Path, default=MRICRON / "ch2.nii.gz",
                        help="a 1 mm T1w head with skull (default: Colin27)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run this git revision (checked out in a worktree) and "
                             "report the ratios baseline/current")
    parser.add_argument("--subjects", type=int, default=1,
                        help="participants in the dataset (different poses), run one at a time")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["default"],
                        help="default settings and/or --fast")
    parser.add_argument("--paper-plan", action="store_true",
                        help="segment with a paper-size model (one 128³ MSCSA network, random "
                             "weights, built in the work folder) instead of the demo bundle")
    parser.add_argument("--model", type=Path,
                        help="segment with this bundle (e.g. an imported 20-network ensemble, "
                             "see benchmarks.mapping_ensemble) instead of the demo bundle")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the networks run (the app's --device)")
    parser.add_argument("--no-replay", action="store_true",
                        help="skip replaying every node alone (halves the run time; no "
                             "per-node memory)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "participant_nodes_cpu.md",
                        help="the Markdown page (.md); the raw numbers go beside it as .json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the page from its .json")
    parser.add_argument("--reuse-runs", action="store_true",
                        help="keep the participant runs already in --work (their run.json)")
    parser.add_argument("--replay-only", action="store_true",
                        help="only replay the nodes of the runs in --out's .json (their work "
                             "folders under --work must still exist)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per command, seconds")
    return parser


def version_env(root: Path | None) -> dict:
    """Environment of a code version: ``root`` first on ``PYTHONPATH`` (None: this checkout)."""
    env = dict(os.environ)
    paths = [str(root)] if root is not None else []
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH")]))
    return env


def add_worktree(revision: str, work: Path) -> tuple[Path, str]:
    """``git worktree add`` of ``revision`` (detached) under ``work``; its path and commit."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    path = work / f"baseline-{commit[:10]}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT,
                       check=True, capture_output=True)
    return path, commit


def tool(env: dict, *args: str) -> dict:
    """Run :mod:`.node_tool` with ``env``; its JSON line."""
    done = subprocess.run([sys.executable, str(NODE_TOOL), *args], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"node_tool {args[0]} failed: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def participant_run(version: str, root: Path, env: dict, bids: Path, label: str, mode: str,
                    folder: Path, args, model: Path | None = None) -> dict:
    """One participant run of one code version; wall time, memory, node times, replays.

    The result is also kept as ``folder/run.json``; with ``--reuse-runs`` a folder that has
    one is not run again.
    """
    if args.reuse_runs and (folder / "run.json").is_file():
        log(f"{version} {mode} sub-{label}: reusing {folder / 'run.json'}")
        result = json.loads((folder / "run.json").read_text())
        if not args.no_replay and "replay" not in result:
            result["replay"] = replay_nodes(env, folder / "work", folder / "replay")
            (folder / "run.json").write_text(json.dumps(result, indent=1))
        return result
    if folder.exists():
        shutil.rmtree(folder)
    out, work = folder / "derivatives", folder / "work"
    cmd = [sys.executable, "-m", "stroke_lesion_app", str(bids), str(out), "participant",
           "-w", str(work), "--nprocs", str(args.nprocs), "--participant-label", label,
           "--device", args.device] + (["--fast"] if mode == "fast" else []) + (
        ["--model", str(model)] if model is not None else [])
    log(f"{version} {mode} sub-{label} ...")
    folder.mkdir(parents=True)
    with open(folder / "run.log", "w+") as log_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        killed, peak = watch(proc, default_mem_cap(None), args.timeout, tree=True)
        wall = time.perf_counter() - start
        log_file.seek(0)
        tail = log_file.read()[-1500:]
    result = {"version": version, "mode": mode, "participant": label, "wall_s": round(wall, 1),
              "tree_peak_rss_bytes": peak, "returncode": proc.returncode, "output": str(out)}
    if killed or proc.returncode != 0:
        result["error"] = killed or f"rc {proc.returncode}: {tail}"
        log(f"    failed: {result['error'][:300]}")
        return result
    result["nodes"] = tool(env, "durations", str(work))
    log(f"    {wall:.0f} s; nodes: {sum(result['nodes'].values()):.0f} s")
    if not args.no_replay:
        result["replay"] = replay_nodes(env, work, folder / "replay")
    (folder / "run.json").write_text(json.dumps(result, indent=1))
    return result


def replay_nodes(env: dict, work: Path, scratch: Path) -> dict:
    """Every node of a finished run's ``work`` folder replayed alone (see :mod:`.node_tool`)."""
    replays = {}
    for node_pickle in sorted(work.rglob("_node.pklz")):
        name = node_pickle.parent.name
        target = scratch / name
        try:
            replays[name] = tool(env, "replay", str(node_pickle.parent), str(target))
        except RuntimeError as error:
            replays[name] = {"error": str(error)[-300:]}
        shutil.rmtree(target, ignore_errors=True)
    return replays


def replay_only(args) -> int:
    """``--replay-only``: replay the nodes of the runs recorded in ``--out``'s JSON again."""
    stem = args.out.with_suffix("")
    payload = read_json(stem)
    for run in payload["runs"]:
        if "error" in run:
            continue
        folder = Path(run["output"]).parent
        root = None
        if run["version"] == "baseline":
            root = args.work / f"baseline-{payload['baseline']['commit'][:10]}"
        log(f"replaying {folder.name} ...")
        run["replay"] = replay_nodes(version_env(root), folder / "work", folder / "replay")
    write_report(stem, render(payload), payload)
    return 0


def compare_outputs(first: Path, second: Path) -> dict:
    """Template-space brain-mask Dice, transform distance, largest probability difference."""
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core.registration import transform_points

    def one(folder: Path, pattern: str) -> Path:
        found = sorted(folder.rglob(pattern))
        if not found:
            raise FileNotFoundError(f"{folder}: no {pattern}")
        return found[0]

    result = {}
    brain = [nib.load(one(f, "*_desc-brain_mask.nii.gz")).get_fdata() > 0
             for f in (first, second)]
    result["native_brain_mask_dice"] = round(float(
        2 * (brain[0] & brain[1]).sum() / max(brain[0].sum() + brain[1].sum(), 1)), 4)
    probabilities = [np.asanyarray(nib.load(one(
        f, "*_space-MNI152NLin2009aSym_label-L_probseg.nii.gz")).get_fdata()) for f in (first,
                                                                                    second)]
    result["std_probability_max_abs_diff"] = round(float(np.abs(probabilities[0] -
                                                                 probabilities[1]).max()), 4)
    native_mask = nib.load(one(first, "*_desc-brain_mask.nii.gz"))
    native = np.argwhere(np.asanyarray(native_mask.dataobj) > 0)[::503]
    points = nib.affines.apply_affine(native_mask.affine, native)
    # ANTs maps points with the inverse direction: std2anat moves native points to the template
    mapped = [transform_points(points, one(f, "*_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.[mh]*"))
              for f in (first, second)]
    distance = np.linalg.norm(mapped[0] - mapped[1], axis=1)
    result["transform_distance_mm"] = {"mean": round(float(distance.mean()), 2),
                                       "max": round(float(distance.max()), 2)}
    return result


def bundle_summary(bundle: Path) -> str:
    """``--model``'s description for the page: name, version, members, networks."""
    from stroke_lesion_app.core.bundle import load_bundle

    loaded = load_bundle(bundle)
    networks = sum(len(member.folds) for member in loaded.members)
    return (f"`{loaded.name}` {loaded.version} ({len(loaded.members)} member(s), "
            f"{networks} network(s), {bundle})")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        payload = read_json(args.out.with_suffix(""))
        write_report(args.out.with_suffix(""), render(payload), None)
        return 0
    if args.replay_only:
        if args.work is None:
            raise SystemExit("--replay-only needs --work, the folder of the earlier run")
        return replay_only(args)
    if not args.head.exists():
        raise SystemExit(f"{args.head}: not found; install Debian's mricron-data or pass --head")
    work = args.work or Path(tempfile.mkdtemp(prefix="participant_nodes_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.paper_plan and args.model:
        raise SystemExit("--paper-plan and --model: choose one")
    payload = {"machine": machine_description(args.nprocs), "nprocs": args.nprocs,
               "head": args.head.name, "runs": [],
               "model": "paper plan, 128³ MSCSA, random weights" if args.paper_plan else "demo"}
    model = args.model
    if model is not None:
        payload["model"] = bundle_summary(model)
    if args.paper_plan:
        from benchmarks.fixtures import make_random_bundle, paper_plans

        model = make_random_bundle(work / "paper-plan-bundle", paper_plans(128), 1.0)
    bids, inputs = wide_field_dataset(args.head, work / "bids", args.subjects)
    payload["inputs"] = inputs
    versions = [("current", ROOT, version_env(None))]
    if args.baseline:
        path, commit = add_worktree(args.baseline, work)
        versions.insert(0, ("baseline", path, version_env(path)))
        payload["baseline"] = {"revision": args.baseline, "commit": commit}
    payload["current"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                        capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    for mode in args.modes:
        for label in sorted(inputs):
            outputs = {}
            for version, root, env in versions:
                suffix = "" if model is None else "-paper" if args.paper_plan else "-model"
                folder = work / "runs" / f"{version}-{mode}-{label}{suffix}"
                run = participant_run(version, root, env, bids, label, mode, folder, args,
                                      model)
                payload["runs"].append(run)
                outputs[version] = folder / "derivatives"
            if args.baseline and all("error" not in r for r in payload["runs"][-2:]):
                comparison = compare_outputs(outputs["baseline"], outputs["current"])
                payload.setdefault("accuracy", []).append(
                    {"mode": mode, "participant": label, **comparison})
    payload["minutes"] = round((time.perf_counter() - started) / 60, 1)
    payload["machine"]["load_average_end"] = os.getloadavg()
    page = write_report(args.out.with_suffix(""), render(payload), payload)
    log(f"wrote {page}")
    return 0
