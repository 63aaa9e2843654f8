"""Cost of the MSCSA injection's full-resolution work, and cheaper equivalent formulations.

Run by hand (not by pytest), from the repository root::

    .venv/bin/python -m benchmarks.resize_alternatives [--threads 2] [--repeats 3]

``Injection`` (``stroke_lesion_app/nets/blocks/mscsa.py``) computes
``x_local * resize(gate) + resize(embed)`` with a trilinear ``F.interpolate``
(``align_corners=False``) from the MSCSA working size (8³ at the paper's 128³ plan) to each
skip's size. ``benchmarks/results/mscsa_overhead_cpu.md`` shows that this is where most of the
MSCSA forward overhead goes on CPU. This script times, at the shapes of the first two stages:

* ``F.interpolate(mode="trilinear")`` against a separable resize (one small interpolation matrix
  per axis, applied with ``torch.tensordot``); trilinear interpolation is separable, so both
  give the same result up to float rounding (the maximum difference is printed);
* ``x * g + e`` against ``torch.addcmul(e, x, g)`` (one pass over memory instead of two).

Prints a Markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

#: (channels, working size, skip size) of injections 0 and 1 at the paper's 128³ plan
SHAPES = ((32, 8, 128), (64, 8, 64))


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_out, n_in] matrix of 1-D linear interpolation, ``align_corners=False``."""
    eye = torch.eye(n_in).reshape(n_in, 1, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T


def separable_resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Trilinear resize of [B, C, D, H, W] as three 1-D linear resizes (matrix products)."""
    for axis, n_out in zip(range(2, x.ndim), size):
        matrix = interpolation_matrix(x.shape[axis], n_out).to(x)
        x = torch.movedim(torch.tensordot(x, matrix, dims=([axis], [1])), -1, axis)
    return x.contiguous()


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resize_alternatives",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, best of {args.repeats}\n")
    print("| operation | shape | time (ms) | max abs difference |")
    print("|---|---|---:|---:|")
    with torch.inference_mode():
        for channels, n_in, n_out in SHAPES:
            x = torch.randn(1, channels, n_in, n_in, n_in)
            size = (n_out,) * 3
            ref = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
            sep = separable_resize(x, size)
            shape = f"{channels}×{n_in}³ → {n_out}³"
            t_ref = best_of(
                lambda x=x, size=size: F.interpolate(x, size=size, mode="trilinear",
                                                     align_corners=False), args.repeats)
            t_sep = best_of(lambda x=x, size=size: separable_resize(x, size), args.repeats)
            diff = (sep - ref).abs().max().item()
            print(f"| F.interpolate trilinear | {shape} | {1e3 * t_ref:.1f} | 0 |")
            print(f"| separable resize | {shape} | {1e3 * t_sep:.1f} | {diff:.1e} |")
        channels, n = SHAPES[0][0], SHAPES[0][2]
        x = torch.randn(1, channels, n, n, n)
        g, e = torch.rand_like(x), torch.randn_like(x)
        shape = f"{channels}×{n}³"
        t_mul_add = best_of(lambda: x * g + e, args.repeats)
        t_addcmul = best_of(lambda: torch.addcmul(e, x, g), args.repeats)
        diff = (torch.addcmul(e, x, g) - (x * g + e)).abs().max().item()
        print(f"| x * g + e | {shape} | {1e3 * t_mul_add:.1f} | 0 |")
        print(f"| torch.addcmul(e, x, g) | {shape} | {1e3 * t_addcmul:.1f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
