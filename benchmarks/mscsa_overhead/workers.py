"""The measured side of the MSCSA overhead benchmark: each function runs in a fresh interpreter
(``python -m benchmarks.runner mscsa_overhead.<kind> CONFIG``) and returns JSON-serialisable
numbers. torch is imported inside the functions.
"""

from __future__ import annotations

import os
import time

from benchmarks.fixtures import paper_network
from benchmarks.measure import status_kb

NETS = ("plain", "mscsa")


def run_time(cfg: dict) -> dict:
    """Time one configuration; return times (s), peak memory and parameter count."""
    import torch

    cuda = cfg["device"] == "cuda"
    device = torch.device(cfg["device"])
    torch.set_num_threads(cfg["threads"])
    model = paper_network(cfg["net"], deep_supervision=True).to(device)
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
        models[net] = paper_network(net).eval()
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
    model = paper_network("mscsa").eval()
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


#: ``python -m benchmarks.runner mscsa_overhead.<kind>``
WORKERS = {"time": run_time, "paired": run_paired, "profile": run_profile}
