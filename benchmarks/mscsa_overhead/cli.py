"""``python -m benchmarks.mscsa_overhead``: options, the configurations in order, the results."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import benchmarks.mscsa_overhead as package
from benchmarks import RESULTS
from benchmarks.fixtures import PAPER_PATCH, QUICK_PATCH
from benchmarks.measure import default_mem_cap, log, machine_description
from benchmarks.mscsa_overhead.tables import MODES, fmt_time, mean_time, page, paired_page
from benchmarks.mscsa_overhead.workers import NETS
from benchmarks.report import write_json, write_report
from benchmarks.runner import spawn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mscsa_overhead",
                                     description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PATCH}³ patch instead of {PAPER_PATCH}³ (smoke run)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["forward", "train"])
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="default: cpu, plus cuda when available")
    parser.add_argument("--target", type=float, default=1.05,
                        help="forward ratio above which the CPU forward pass is profiled")
    parser.add_argument("--profile", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--profile-batch", type=int, default=1)
    parser.add_argument("--mem-cap-gb", type=float, default=None,
                        help="kill a worker above this resident set "
                             "(default: min(16, 0.7 × available memory))")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--paired", action="store_true",
                        help="forward only, plain and MSCSA passes alternated in one process per "
                             "batch size: a time ratio robust to other jobs on the machine "
                             "(no memory figures); writes mscsa_overhead_cpu_paired.md")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def measure(kind: str, cfg: dict, mem_cap: int, timeout: float) -> dict:
    """Run worker ``mscsa_overhead.<kind>`` in a fresh interpreter with ``cfg["threads"]`` CPU
    threads, its resident set watched; its result, or ``{"error": ...}`` (with
    ``watch_peak_rss_bytes`` when it was killed)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]),
               MKL_NUM_THREADS=str(cfg["threads"]))
    run = spawn(f"mscsa_overhead.{kind}", cfg, env=env, mem_cap=mem_cap, timeout=timeout)
    if run.killed:
        return {"error": run.error, "watch_peak_rss_bytes": run.peak_rss_bytes}
    return run.result if run.result is not None else {"error": run.error}


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    patch = QUICK_PATCH if args.quick else PAPER_PATCH
    mem_cap = default_mem_cap(args.mem_cap_gb)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    if args.paired:
        return paired_main(args, patch, mem_cap, suffix)
    for device in devices:
        info = machine_description(args.threads)
        rows = []
        stem = args.out_dir / f"mscsa_overhead_{device}{suffix}"
        for mode in args.modes:  # lightest first
            for batch in args.batches:
                for net in NETS:
                    cfg = {"device": device, "net": net, "batch": batch, "mode": mode,
                           "patch": patch, "repeats": args.repeats, "threads": args.threads}
                    log(f"{device} {net} batch {batch} {MODES[mode]} ...")
                    result = measure("time", cfg, mem_cap, args.timeout)
                    print(f"    {fmt_time(result)} s", flush=True)
                    rows.append({"cfg": cfg, "result": result})
                    write_json(stem, {"machine": info, "rows": rows})
        by_key = {(r["cfg"]["mode"], r["cfg"]["batch"], r["cfg"]["net"]): r["result"]
                  for r in rows}
        profile_result = None
        fwd = [(by_key.get(("forward", b, "mscsa"), {}), by_key.get(("forward", b, "plain"), {}))
               for b in args.batches]
        over = any(mean_time(m) and mean_time(p) and mean_time(m) / mean_time(p) > args.target
                   for m, p in fwd)
        if device == "cpu" and (args.profile == "always" or (args.profile == "auto" and over)):
            log("profiling the MSCSA forward pass ...")
            cfg = {"device": "cpu", "batch": args.profile_batch, "patch": patch,
                   "threads": args.threads}
            profile_result = measure("profile", cfg, mem_cap, args.timeout)
        info["load_average_end"] = os.getloadavg()
        written = write_report(stem, page(info, rows, profile_result, args),
                               {"machine": info, "rows": rows, "profile": profile_result})
        print(f"Wrote {written}", flush=True)
    return 0


def paired_main(args, patch: int, mem_cap: int, suffix: str) -> int:
    """``--paired``: one process per batch size, plain and MSCSA forward passes alternated."""
    info = machine_description(args.threads)
    stem = args.out_dir / f"mscsa_overhead_cpu_paired{suffix}"
    results = {}
    for batch in args.batches:
        cfg = {"batch": batch, "patch": patch, "repeats": args.repeats, "threads": args.threads}
        log(f"paired forward, batch {batch} ...")
        results[batch] = measure("paired", cfg, mem_cap, args.timeout)
    info["load_average_end"] = os.getloadavg()
    written = write_report(stem, paired_page(info, results, args, patch),
                           {"machine": info, "results": results})
    print(f"Wrote {written}", flush=True)
    return 0
