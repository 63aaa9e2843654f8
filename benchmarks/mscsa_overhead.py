"""Wall time and peak memory of the MSCSA U-Net against nnU-Net's plain U-Net.

Run by hand (not by pytest)::

    .venv/bin/python benchmarks/mscsa_overhead.py                 # paper plan, 128³, CPU (+ GPU)
    .venv/bin/python benchmarks/mscsa_overhead.py --quick         # 64³ smoke run (about 1 min)
    .venv/bin/python benchmarks/mscsa_overhead.py --paired --batches 1 --repeats 4

Network: the paper's 128³ ``3d_fullres`` plan (6 stages 32-64-128-256-320-320, kernel 3,
strides [1,2,2,2,2,2], 2 convs per stage in encoder and decoder, InstanceNorm, LeakyReLU,
deep supervision, 1 input channel, 2 classes) as ``PlainConvUNet`` ("plain") and as
:class:`~stroke_lesion_app.nets.PlainConvUNetMSCSA` with its published 16 heads ("mscsa").

Configurations: {plain, mscsa} × batch {1, 2} × {forward, forward+backward}:

* *forward*: inference as nnU-Net's predictor runs it (``eval()``, deep supervision off,
  ``torch.inference_mode``);
* *forward+backward*: training mode with deep supervision, ``sum(mean(o²))`` over all outputs
  as a stand-in loss, ``backward()``, gradients dropped (no optimiser step).

Each configuration runs in a fresh subprocess (so its peak resident set, ``VmHWM`` from
``/proc/self/status``, is its own), with 1 warm-up pass and ``--repeats`` timed passes. On CPU
the process uses ``--threads`` threads; on CUDA (when ``torch.cuda.is_available()``) passes run
under bf16 autocast and peak memory is ``torch.cuda.max_memory_allocated``. The parent kills a
worker whose resident set passes ``--mem-cap-gb`` or when the machine's available memory falls
under 2 GB (the machine may be shared), and reports it as killed.

When the CPU forward ratio MSCSA/plain is above ``--target`` (1.05 by default: the paper's MAC
overhead is +2.3 %), a last subprocess profiles one MSCSA forward pass with ``torch.profiler``
and attributes the time to the MSCSA sub-modules (stage resizing, CSA layers, FFNs, injections).

``--paired`` measures only the forward ratio, with both networks in one process and their passes
alternated, so that other jobs on a shared machine slow both alike (no memory figures).

Results go to ``benchmarks/results/mscsa_overhead_<device>[_paired][_quick].{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported, not run
from _common import GB, machine_description, mem_available, status_kb, watch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

FEATURES = (32, 64, 128, 256, 320, 320)
STRIDES = (1, 2, 2, 2, 2, 2)
PATCH, QUICK_PATCH = 128, 64
NETS = ("plain", "mscsa")
MODES = {"forward": "forward", "train": "forward+backward"}


# --------------------------------------------------------------------------------------------
# worker side (runs in a fresh subprocess)
# --------------------------------------------------------------------------------------------
def build_network(net: str, deep_supervision: bool = True):
    """The paper's plain nnU-Net plan as ``PlainConvUNet`` or ``PlainConvUNetMSCSA``."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    from stroke_lesion_app.nets import PlainConvUNetMSCSA

    n = len(FEATURES)
    kwargs = {
        "input_channels": 1, "n_stages": n, "features_per_stage": list(FEATURES),
        "conv_op": nn.Conv3d, "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[s, s, s] for s in STRIDES], "n_conv_per_stage": [2] * n,
        "num_classes": 2, "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": nn.InstanceNorm3d, "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True}, "deep_supervision": deep_supervision,
    }
    cls = PlainConvUNetMSCSA if net == "mscsa" else PlainConvUNet
    torch.manual_seed(0)
    model = cls(**kwargs)
    model.apply(model.initialize)
    return model


def run_worker(cfg: dict) -> dict:
    """Time one configuration; return times (s), peak memory and parameter count."""
    import torch

    cuda = cfg["device"] == "cuda"
    device = torch.device(cfg["device"])
    torch.set_num_threads(cfg["threads"])
    model = build_network(cfg["net"], deep_supervision=True).to(device)
    params = sum(p.numel() for p in model.parameters())
    rss_built = status_kb("VmRSS") * 1024
    x = torch.randn(cfg["batch"], 1, *[cfg["patch"]] * 3, device=device)

    if cfg["mode"] == "forward":
        model.eval()
        model.decoder.deep_supervision = False

        def step():
            with torch.inference_mode():
                return model(x)
    else:
        model.train()

        def step():
            out = model(x)
            loss = sum(o.float().square().mean() for o in out)
            loss.backward()
            model.zero_grad(set_to_none=True)
            return loss

    cpu_times = []

    def timed() -> float:
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            step()
        if cuda:
            torch.cuda.synchronize()
        cpu_times.append(time.process_time() - cpu_start)
        return time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warmup = timed()
    times = [timed() for _ in range(cfg["repeats"])]
    cpu_times = cpu_times[1:]  # drop the warm-up
    result = {
        "params": params, "warmup_s": warmup, "times_s": times, "cpu_times_s": cpu_times,
        "cores_busy": sum(cpu_times) / sum(times),
        "load_average": os.getloadavg(),
        "peak_rss_bytes": status_kb("VmHWM") * 1024, "rss_after_build_bytes": rss_built,
    }
    if cuda:
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    return result


def run_paired(cfg: dict) -> dict:
    """Alternate plain and MSCSA forward passes in one process (ratio robust to other jobs)."""
    import torch

    torch.set_num_threads(cfg["threads"])
    models = {}
    for net in NETS:
        models[net] = build_network(net).eval()
        models[net].decoder.deep_supervision = False
    x = torch.randn(cfg["batch"], 1, *[cfg["patch"]] * 3)
    wall = {net: [] for net in NETS}
    cpu = {net: [] for net in NETS}
    with torch.inference_mode():
        for net in NETS:
            models[net](x)  # warm-up
        for repeat in range(cfg["repeats"]):
            for net in NETS if repeat % 2 == 0 else NETS[::-1]:
                start, cpu_start = time.perf_counter(), time.process_time()
                models[net](x)
                wall[net].append(time.perf_counter() - start)
                cpu[net].append(time.process_time() - cpu_start)
    return {"wall_s": wall, "cpu_s": cpu, "load_average": os.getloadavg()}


def run_profile(cfg: dict) -> dict:
    """Profile one MSCSA forward (inference) pass on CPU; times per labelled sub-module."""
    import torch
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(cfg["threads"])
    model = build_network("mscsa").eval()
    model.decoder.deep_supervision = False
    mscsa = model.mscsa
    labels = {
        "encoder": model.encoder,
        "decoder": model.decoder,
        "mscsa (all)": mscsa,
        "mscsa.block.csa1": mscsa.block.csa1,
        "mscsa.block.intra_ffn": mscsa.block.intra_ffn,
        "mscsa.block.csa2": mscsa.block.csa2,
        "mscsa.block.ffn": mscsa.block.ffn,
        "mscsa.norm": mscsa.norm,
    }
    for i, inj in enumerate(mscsa.injections):
        labels[f"mscsa.injections[{i}]"] = inj
    open_ranges: dict[int, list] = {}

    def pre_hook(label):
        def hook(module, args):
            rf = record_function(label)
            rf.__enter__()
            open_ranges.setdefault(id(module), []).append(rf)
        return hook

    def post_hook(module, args, output):
        open_ranges[id(module)].pop().__exit__(None, None, None)

    for label, module in labels.items():
        module.register_forward_pre_hook(pre_hook(label))
        module.register_forward_hook(post_hook)
    for i, inj in enumerate(mscsa.injections):
        for part in (inj.gate, inj.embed):
            part.register_forward_pre_hook(pre_hook(f"mscsa.injections[{i}].gate+embed convs"))
            part.register_forward_hook(post_hook)

    x = torch.randn(cfg["batch"], 1, *[cfg["patch"]] * 3)
    with torch.inference_mode():
        model(x)  # warm-up
        start = time.perf_counter()
        model(x)
        mscsa_wall = time.perf_counter() - start  # un-profiled MSCSA forward, for reference
        with profile(activities=[ProfilerActivity.CPU]) as prof, record_function("total"):
            model(x)
    events = prof.key_averages()
    by_label = {e.key: e.cpu_time_total / 1e6 for e in events
                if e.key in labels or e.key == "total" or e.key.endswith("gate+embed convs")}
    # The injections' 1x1 convs run at the MSCSA working size; the rest of an injection is the
    # two (tri)linear resizes to the skip's size and the multiply-add there.
    counts = {e.key: e.count for e in events if e.key in by_label}
    # top aten ops by self time over the whole pass, and inside the MSCSA module only
    ops = sorted(
        ((e.key, e.self_cpu_time_total / 1e6, e.count) for e in events
         if e.key.startswith("aten::")), key=lambda t: -t[1],
    )[:15]
    with torch.inference_mode():
        skips = model.encoder(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof_mscsa:
            mscsa(skips)
    mscsa_ops = sorted(
        ((e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof_mscsa.key_averages()
         if e.key.startswith("aten::")), key=lambda t: -t[1],
    )[:15]
    return {
        "wall_unprofiled_s": mscsa_wall, "labels_s": by_label, "label_counts": counts,
        "top_ops": ops, "mscsa_ops": mscsa_ops,
    }


# --------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------
def spawn(kind: str, cfg: dict, mem_cap: int, timeout: float) -> dict:
    """Run ``kind`` ("worker" or "profile") in a fresh interpreter; watch its memory."""
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg["threads"]),
               MKL_NUM_THREADS=str(cfg["threads"]), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(cfg)]
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env,
                                cwd=ROOT)
        killed, peak = watch(proc, mem_cap, timeout)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if killed:
        return {"error": killed, "watch_peak_rss_bytes": peak}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": f"worker failed (rc {proc.returncode}): {err.strip()[-800:]}"}


def _fmt_time(r: dict) -> str:
    if "error" in r:
        return r["error"]
    t = r["times_s"]
    sd = statistics.stdev(t) if len(t) > 1 else 0.0
    return f"{statistics.mean(t):.2f} ± {sd:.2f}"


def _mean(r: dict) -> float | None:
    return statistics.mean(r["times_s"]) if "times_s" in r else None


def write_markdown(path: Path, info: dict, rows: list[dict], profile_result: dict | None,
                   args) -> None:
    device = rows[0]["cfg"]["device"] if rows else "cpu"
    mem_key, mem_name = (
        ("peak_cuda_bytes", "peak CUDA alloc (GB)") if device == "cuda"
        else ("peak_rss_bytes", "peak RSS (GB)")
    )
    quick = " --quick" if args.quick else ""
    simd = ", ".join(info["simd"]) or "no AVX2"
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    load_start = tuple(round(v, 2) for v in info["load_average_start"])
    load_end = tuple(round(v, 2) for v in info["load_average_end"])
    precision = "bf16 autocast" if device == "cuda" else "fp32"
    peak_source = (
        "`torch.cuda.max_memory_allocated`" if device == "cuda"
        else "VmHWM of the worker process (includes ~0.3-0.5 GB of imported libraries)"
    )
    lines = [
        f"# MSCSA overhead: {device.upper()}{' (quick)' if args.quick else ''}",
        "",
        f"Generated by `benchmarks/mscsa_overhead.py{quick}` on {info['date']}.",
        "",
        (f"* CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs ({simd}), "
         f"{info['memory_gb']} GB RAM"),
        (f"* Python {info['python']}, torch {info['torch']}, dynamic_network_architectures "
         f"{info.get('dynamic_network_architectures', '?')}, {info['threads']} torch "
         f"threads{gpu}"),
        f"* Load average (1, 5, 15 min): at start {load_start}, at end {load_end}",
        (f"* Network: paper plan, patch {rows[0]['cfg']['patch']}³, 6 stages "
         f"{'-'.join(map(str, FEATURES))}, strides {list(STRIDES)}, 2 convs per stage, "
         "InstanceNorm, LeakyReLU, deep supervision; MSCSA with 16 heads"),
        (f"* Each row: fresh process, 1 warm-up pass, then {args.repeats} timed passes "
         "(mean ± sd). *forward* = inference (`eval`, no deep supervision, `inference_mode`); "
         "*forward+backward* = training mode with deep supervision, backward of a stand-in "
         f"loss, no optimiser step. {precision}."),
        ("* *CPU time*: process CPU time (all threads) of the timed passes, less sensitive "
         "than wall time to other jobs on the machine; *CPU cores busy*: CPU time / wall time "
         "(close to the thread count when the machine is otherwise idle); *1-min load*: load "
         "average when the worker finished (other users' jobs show up here)."),
        f"* Peak memory: {peak_source}.",
        "",
        (f"| configuration | params | time (s) | {mem_name} | time MSCSA/plain "
         "| CPU time MSCSA/plain | memory MSCSA/plain | CPU cores busy | 1-min load |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["cfg"]["mode"], r["cfg"]["batch"], r["cfg"]["net"]): r["result"] for r in rows}
    for r in rows:
        cfg, res = r["cfg"], r["result"]
        name = f"{cfg['net']}, batch {cfg['batch']}, {MODES[cfg['mode']]}"
        params = f"{res['params'] / 1e6:.2f} M" if "params" in res else "-"
        mem = f"{res[mem_key] / GB:.2f}" if mem_key in res else "-"
        ratio_t = ratio_m = ratio_c = ""
        if cfg["net"] == "mscsa":
            base = by_key.get((cfg["mode"], cfg["batch"], "plain"), {})
            if _mean(res) and _mean(base):
                ratio_t = f"{_mean(res) / _mean(base):.3f}"
            if "cpu_times_s" in res and "cpu_times_s" in base:
                ratio_c = f"{sum(res['cpu_times_s']) / sum(base['cpu_times_s']):.3f}"
            if mem_key in res and mem_key in base:
                ratio_m = f"{res[mem_key] / base[mem_key]:.3f}"
        busy = f"{res['cores_busy']:.2f}" if "cores_busy" in res else "-"
        load = f"{res['load_average'][0]:.2f}" if "load_average" in res else "-"
        lines.append(f"| {name} | {params} | {_fmt_time(res)} | {mem} | {ratio_t} | {ratio_c} "
                     f"| {ratio_m} | {busy} | {load} |")
    lines.append("")
    ratios = [(_mean(by_key.get(("forward", b, "mscsa"), {})) or 0)
              / (_mean(by_key.get(("forward", b, "plain"), {})) or float("inf"))
              for b in args.batches]
    ratios = [r for r in ratios if r > 0]
    if ratios:
        verdict = "met" if max(ratios) <= args.target else "NOT met"
        listed = ", ".join(f"{r:.3f}" for r in ratios)
        lines += [
            (f"Target MSCSA forward ≤ {args.target:.2f}× plain: **{verdict}** "
             f"(forward ratios {listed})."),
            "",
        ]
    if profile_result is not None:
        lines += _profile_markdown(profile_result, by_key, args)
    path.write_text("\n".join(lines) + "\n")


def _profile_markdown(p: dict, by_key: dict, args) -> list[str]:
    if "error" in p:
        return ["## Profile", "", f"Profiling failed: {p['error']}", ""]
    labels = p["labels_s"]
    total = labels.get("total", float("nan"))
    plain = _mean(by_key.get(("forward", args.profile_batch, "plain"), {}))
    lines = [
        f"## Where the extra forward time goes (torch.profiler, CPU, batch {args.profile_batch})",
        "",
        f"One profiled MSCSA forward pass took {total:.2f} s "
        f"(un-profiled: {p['wall_unprofiled_s']:.2f} s"
        + (f"; plain forward in the table: {plain:.2f} s" if plain else "") + ").",
        "",
        "| range | time (s) | % of MSCSA forward |" + (" % of plain forward |" if plain else ""),
        "|---|---:|---:|" + ("---:|" if plain else ""),
    ]
    mscsa_all = labels.get("mscsa (all)", 0.0)
    inner = sum(v for k, v in labels.items()
                if k.startswith("mscsa.") and "gate+embed" not in k)
    derived = dict(labels)
    derived["mscsa: stage resizes, concat, split, residual adds (rest)"] = mscsa_all - inner
    inj_total = sum(v for k, v in labels.items()
                    if k.startswith("mscsa.injections[") and "gate+embed" not in k)
    derived["mscsa.injections (all stages)"] = inj_total
    order = ["encoder", "mscsa (all)", "mscsa.block.csa1", "mscsa.block.intra_ffn",
             "mscsa.block.csa2", "mscsa.block.ffn", "mscsa.norm",
             "mscsa: stage resizes, concat, split, residual adds (rest)",
             "mscsa.injections (all stages)"]
    order += sorted(k for k in labels if k.startswith("mscsa.injections["))
    order += ["decoder"]
    for key in order:
        if key not in derived:
            continue
        value = derived[key]
        row = f"| {key} | {value:.3f} | {100 * value / total:.1f} |"
        if plain:
            row += f" {100 * value / plain:.1f} |"
        lines.append(row)
    lines += ["", "Top aten ops inside the MSCSA module (self CPU time, one pass):", "",
              "| op | self time (s) | calls |", "|---|---:|---:|"]
    lines += [f"| `{k}` | {t:.3f} | {c} |" for k, t, c in p["mscsa_ops"]]
    lines += ["", "Top aten ops over the whole MSCSA U-Net forward pass:", "",
              "| op | self time (s) | calls |", "|---|---:|---:|"]
    lines += [f"| `{k}` | {t:.3f} | {c} |" for k, t, c in p["top_ops"]]
    lines.append("")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PATCH}³ patch instead of {PATCH}³ (smoke run)")
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", help=argparse.SUPPRESS)
    parser.add_argument("--paired-worker", help=argparse.SUPPRESS)
    parser.add_argument("--paired", action="store_true",
                        help="forward only, plain and MSCSA passes alternated in one process per "
                             "batch size: a time ratio robust to other jobs on the machine "
                             "(no memory figures); writes mscsa_overhead_cpu_paired.md")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for fn, cfg in ((run_worker, args.worker), (run_profile, args.profile_worker),
                    (run_paired, args.paired_worker)):
        if cfg:
            sys.path.insert(0, str(ROOT))
            print("RESULT " + json.dumps(fn(json.loads(cfg))), flush=True)
            return 0

    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    patch = QUICK_PATCH if args.quick else PATCH
    mem_cap = int((args.mem_cap_gb * GB) if args.mem_cap_gb
                  else min(16 * GB, 0.7 * mem_available()))
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
                    print(f"[{time.strftime('%H:%M:%S')}] {device} {net} batch {batch} "
                          f"{MODES[mode]} ...", flush=True)
                    result = spawn("worker", cfg, mem_cap, args.timeout)
                    print(f"    {_fmt_time(result)} s", flush=True)
                    rows.append({"cfg": cfg, "result": result})
                    stem.with_suffix(".json").write_text(
                        json.dumps({"machine": info, "rows": rows}, indent=1))
        by_key = {(r["cfg"]["mode"], r["cfg"]["batch"], r["cfg"]["net"]): r["result"]
                  for r in rows}
        profile_result = None
        fwd = [(by_key.get(("forward", b, "mscsa"), {}), by_key.get(("forward", b, "plain"), {}))
               for b in args.batches]
        over = any(_mean(m) and _mean(p) and _mean(m) / _mean(p) > args.target for m, p in fwd)
        if device == "cpu" and (args.profile == "always" or (args.profile == "auto" and over)):
            print(f"[{time.strftime('%H:%M:%S')}] profiling the MSCSA forward pass ...",
                  flush=True)
            cfg = {"device": "cpu", "batch": args.profile_batch, "patch": patch,
                   "threads": args.threads}
            profile_result = spawn("profile-worker", cfg, mem_cap, args.timeout)
        info["load_average_end"] = os.getloadavg()
        stem.with_suffix(".json").write_text(json.dumps(
            {"machine": info, "rows": rows, "profile": profile_result}, indent=1))
        write_markdown(stem.with_suffix(".md"), info, rows, profile_result, args)
        print(f"Wrote {stem.with_suffix('.md')}", flush=True)
    return 0


def paired_main(args, patch: int, mem_cap: int, suffix: str) -> int:
    """``--paired``: one process per batch size, plain and MSCSA forward passes alternated."""
    info = machine_description(args.threads)
    stem = args.out_dir / f"mscsa_overhead_cpu_paired{suffix}"
    results = {}
    for batch in args.batches:
        cfg = {"batch": batch, "patch": patch, "repeats": args.repeats, "threads": args.threads}
        print(f"[{time.strftime('%H:%M:%S')}] paired forward, batch {batch} ...", flush=True)
        results[batch] = spawn("paired-worker", cfg, mem_cap, args.timeout)
    info["load_average_end"] = os.getloadavg()
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": info, "results": results}, indent=1))
    load = tuple(round(v, 2) for v in info["load_average_start"])
    lines = [
        f"# MSCSA overhead: CPU forward, paired{' (quick)' if args.quick else ''}",
        "",
        (f"Generated by `benchmarks/mscsa_overhead.py --paired{' --quick' if args.quick else ''}"
         f" --repeats {args.repeats}` on {info['date']}: {info['cpu']}, "
         f"{info['logical_cpus']} logical CPUs, torch {info['torch']}, {args.threads} threads, "
         f"patch {patch}³, load average at start {load}."),
        "",
        ("Both networks live in one process; after one warm-up pass each, their inference "
         "passes alternate (plain, MSCSA, MSCSA, plain, ...), so other jobs on the machine slow "
         "both alike. *ratio* = mean of the per-repeat ratios MSCSA/plain (± sd)."),
        "",
        ("| batch | plain (s) | MSCSA (s) | ratio (wall) | ratio (CPU time) "
         "| CPU cores busy | 1-min load at end |"),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, res in results.items():
        if "error" in res:
            lines.append(f"| {batch} | {res['error']} | | | | | |")
            continue
        wall, cpu = res["wall_s"], res["cpu_s"]
        ratios = [m / p for m, p in zip(wall["mscsa"], wall["plain"])]
        cpu_ratio = sum(cpu["mscsa"]) / sum(cpu["plain"])
        busy = sum(sum(v) for v in cpu.values()) / sum(sum(v) for v in wall.values())
        sd = statistics.stdev(ratios) if len(ratios) > 1 else 0.0

        def cell(times):
            spread = statistics.stdev(times) if len(times) > 1 else 0.0
            return f"{statistics.mean(times):.2f} ± {spread:.2f}"

        lines.append(
            f"| {batch} | {cell(wall['plain'])} | {cell(wall['mscsa'])} | "
            f"{statistics.mean(ratios):.3f} ± {sd:.3f} | {cpu_ratio:.3f} | {busy:.2f} | "
            f"{res['load_average'][0]:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"Wrote {stem.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
