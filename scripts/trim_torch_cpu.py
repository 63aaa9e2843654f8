"""Trim PyPI's CUDA-enabled torch for the CPU-only image (Dockerfile ``--build-arg VARIANT=cpu``).

PyTorch's own CPU wheels come from download.pytorch.org, which this project's machines cannot
reach; PyPI's Linux torch links ~2 GB of nvidia-* libraries at import time (``import torch``
fails without libcudnn.so.9, libcublasLt.so.13, ...). What a CPU run never loads can go:

* ``triton`` (the GPU kernel compiler behind torch.compile; the app never compiles, and
  ``import torch`` / nnU-Net work without it), uninstalled with pip;
* every shared object under ``site-packages/nvidia`` that is not mapped into the process after
  importing torch, torchvision, nnU-Net's predictor and the app and running a small 3D
  convolution on the CPU: cuDNN's engine plugins, cusolverMg, the alternative nvrtc and the
  like, which CUDA loads only on a GPU (``dlopen`` at first use).

Run inside the build stage after ``pip install .``::

    python scripts/trim_torch_cpu.py [--dry-run]

Prints what it removes and the bytes freed, then checks in a fresh interpreter that the same
imports and convolution still work. Exit status 0 on success, 1 when the check fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PROBE = """
import sys
import torch, torchvision
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
import stroke_lesion_app
x = torch.randn(1, 1, 24, 24, 24)
y = torch.nn.Conv3d(1, 4, 3, padding=1)(x).softmax(1)
assert y.shape == (1, 4, 24, 24, 24)
boxes, scores = torch.tensor([[0., 0., 1., 1.]]), torch.tensor([1.])
assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0]
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if "/nvidia/" in path:
        print(path)
"""


def loaded_nvidia_files(python: str) -> set[Path]:
    """Files under site-packages/nvidia that a CPU run of the probe maps into memory."""
    result = subprocess.run([python, "-c", PROBE], check=True, capture_output=True, text=True)
    return {Path(line).resolve() for line in result.stdout.split()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (fails here, not half-way, when torch is missing)

    site = Path(torch.__file__).resolve().parents[1]
    nvidia = site / "nvidia"
    freed = 0
    if (site / "triton").is_dir():
        size = sum(f.stat().st_size for f in (site / "triton").rglob("*") if f.is_file())
        print(f"trim_torch_cpu: pip uninstall triton ({size / 1e6:.0f} MB)")
        freed += size
        if not args.dry_run:
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "triton"],
                           check=True)
    keep = loaded_nvidia_files(sys.executable)
    for path in sorted(nvidia.rglob("*.so*")) if nvidia.is_dir() else []:
        if path.is_file() and not path.is_symlink() and path.resolve() not in keep:
            size = path.stat().st_size
            freed += size
            print(f"trim_torch_cpu: remove {path.relative_to(site)} ({size / 1e6:.0f} MB)")
            if not args.dry_run:
                path.unlink()
    kept = sum(p.stat().st_size for p in keep)
    print(f"trim_torch_cpu: {freed / 1e6:.0f} MB freed; {len(keep)} nvidia libraries "
          f"({kept / 1e6:.0f} MB) stay, loaded by torch on a CPU")
    if args.dry_run:
        return 0
    check = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"trim_torch_cpu: the CPU check failed after trimming:\n{check.stderr}",
              file=sys.stderr)
        return 1
    print("trim_torch_cpu: torch, torchvision, nnU-Net and a CPU Conv3d work after trimming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
