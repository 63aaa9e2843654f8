"""Regenerate the nnU-Net v1 ``FabiansUNet`` reference fixtures of ``tests/nets/test_residual_unet_v1.py``.

Runs in a side environment with nnU-Net v1, never in the app's environment::

    python3.11 -m venv /work/venvs/nnunet-v1
    SKLEARN_ALLOW_DEPRECATED_SKLEARN_PACKAGE_INSTALL=True /work/venvs/nnunet-v1/bin/pip install \\
        torch==2.14.1 torchvision==0.29.1 nnunet==1.7.1
    /work/venvs/nnunet-v1/bin/python scripts/make_fabians_v1_fixtures.py \\
        --seed-nnunet /path/to/StrokeLesSeg/nnUNet        # the seed's nnU-Net 1.7.0 fork

Writes two folders under ``tests/data/nnunet_v1/`` (``--out``):

``fabians_small/``
    PyPI ``nnunet==1.7.1`` ``FabiansUNet`` (conv biases off, segmentation-head biases on).
``fabians_mscsa_small/``
    The seed's ``FabiansUNet_MSCSA`` (StrokeLesSeg, its own nnU-Net fork: conv biases on,
    segmentation-head biases off), 28 heads but ``head_dim_loc`` 2 instead of 40 so that the
    fixture stays small (the only source change; it is applied to a temporary copy).

Each folder holds ``state_dict.pth`` (the v1 ``state_dict()`` as plain tensors, every float
tensor randomised so that biases, norm affines and BatchNorm statistics all matter),
``config.json`` (constructor arguments, v1 plan stage, provenance) and ``io.pth`` (input and
the eval-mode deep-supervision outputs, highest resolution first). With ``--counts`` the script
also prints the parameter counts of both v1 codes at the ATLAS 128³ plan (builds ~113 M
parameters on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Small anisotropic plan: 5 stages, patch 16×32×32, first pooling in-plane only.
POOLS = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
KERNELS = [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
BLOCKS_ENCODER = [1, 2, 3, 4, 4]
BLOCKS_DECODER = [1, 1, 1, 1]
BASE, MAX_FEATURES, INPUT_CHANNELS, NUM_CLASSES = 4, 16, 2, 3
PATCH = [16, 32, 32]
SMALL_HEAD_DIM = 2
ATLAS_POOLS = [[1, 1, 1]] + [[2, 2, 2]] * 5


def _randomise(net, seed: int) -> dict:
    """Randomise every float tensor of the state dict (in place) and return it as plain tensors."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif tensor.ndim == 1:  # biases, norm affines, running means
                base = 1.0 if name.endswith("weight") else 0.0
                tensor.copy_(base + 0.2 * noise)
            else:  # conv weights: keep the He scale, new values
                std = float(tensor.std()) or 0.1
                tensor.copy_(noise * std)
    # no copies: v1 registers decoder layers twice, shared tensors are then stored once
    return {k: v.detach() for k, v in net.state_dict().items()}


def _save(out: Path, net, config: dict, seed: int) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    state = _randomise(net, seed)
    net.eval()
    x = torch.randn(1, INPUT_CHANNELS, *PATCH, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        outputs = [o.contiguous() for o in net(x)]
    torch.save(state, out / "state_dict.pth")
    torch.save({"input": x, "outputs": outputs}, out / "io.pth")
    config["num_parameters"] = sum(p.numel() for p in net.parameters())
    config["output_shapes"] = [list(o.shape) for o in outputs]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{out}: {config['num_parameters']} parameters, outputs {config['output_shapes']}")


def _stage_plan() -> dict:
    return {
        "conv_kernel_sizes": KERNELS, "pool_op_kernel_sizes": POOLS,
        "num_blocks_encoder": BLOCKS_ENCODER, "num_blocks_decoder": BLOCKS_DECODER,
        "base_num_features": BASE,
    }


def part_pypi(out: Path, counts: bool) -> None:
    """``fabians_small`` with the PyPI nnU-Net 1.7.1 ``FabiansUNet``."""
    import nnunet
    import torch
    from nnunet.network_architecture.generic_modular_residual_UNet import (
        FabiansUNet,
        get_default_network_config,
    )
    from nnunet.network_architecture.initialization import InitWeights_He

    torch.manual_seed(0)
    net = FabiansUNet(
        INPUT_CHANNELS, BASE, BLOCKS_ENCODER, 2, POOLS, KERNELS,
        get_default_network_config(3, None, norm_type="in"), NUM_CLASSES, BLOCKS_DECODER, True,
        False, MAX_FEATURES, InitWeights_He(1e-2),
    )
    config = {
        "source": f"PyPI nnunet=={getattr(nnunet, '__version__', '1.7.1')}",
        "v1_class": "nnunet.network_architecture.generic_modular_residual_UNet.FabiansUNet",
        "stage_plan": _stage_plan(), "input_channels": INPUT_CHANNELS,
        "num_classes": NUM_CLASSES, "max_num_features": MAX_FEATURES,
        "conv_bias": False, "seg_bias": True,
    }
    _save(out / "fabians_small", net, config, seed=1)
    if counts:
        with torch.device("meta"):
            big = FabiansUNet(1, 32, [1, 2, 3, 4, 4, 4], 2, ATLAS_POOLS, [[3, 3, 3]] * 6,
                              get_default_network_config(3, None, norm_type="in"), 2, [1] * 5,
                              True, False, 320)
        print("PyPI 1.7.1 FabiansUNet @128³:", sum(p.numel() for p in big.parameters()))


def part_seed(out: Path, counts: bool) -> None:
    """``fabians_mscsa_small`` with the seed's ``FabiansUNet_MSCSA`` (its own v1 fork)."""
    import torch
    from nnunet.network_architecture import generic_ResencUNet_mscsa_small as small
    from nnunet.network_architecture.generic_modular_residual_UNet import (
        FabiansUNet,
        get_default_network_config,
    )
    from nnunet.network_architecture.initialization import InitWeights_He

    torch.manual_seed(0)
    net = small.FabiansUNet_MSCSA(
        INPUT_CHANNELS, BASE, BLOCKS_ENCODER, 2, POOLS, KERNELS,
        get_default_network_config(3, None, norm_type="in"), NUM_CLASSES, BLOCKS_DECODER, True,
        False, MAX_FEATURES, InitWeights_He(1e-2),
    )
    config = {
        "source": "nadluru/StrokeLesSeg nnUNet fork (setup.py 1.7.0), commit 6b3c698",
        "v1_class": "generic_ResencUNet_mscsa_depth_1.FabiansUNet_MSCSA",
        "source_change": f"head_dim_loc = 40 -> {SMALL_HEAD_DIM}",
        "stage_plan": _stage_plan(), "input_channels": INPUT_CHANNELS,
        "num_classes": NUM_CLASSES, "max_num_features": MAX_FEATURES,
        "conv_bias": True, "seg_bias": False,
        "mscsa_num_heads": 28, "mscsa_head_dim": SMALL_HEAD_DIM,
    }
    _save(out / "fabians_mscsa_small", net, config, seed=2)
    if counts:
        from nnunet.network_architecture.generic_ResencUNet_mscsa_depth_1 import FabiansUNet_MSCSA

        for cls in (FabiansUNet, FabiansUNet_MSCSA):
            big = cls(1, 32, [1, 2, 3, 4, 4, 4], 2, ATLAS_POOLS, [[3, 3, 3]] * 6,
                      get_default_network_config(3, None, norm_type="in"), 2, [1] * 5, True,
                      False, 320)
            print(f"seed fork {cls.__name__} @128³:", sum(p.numel() for p in big.parameters()))
            del big


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-nnunet", type=Path, required=True,
                        help="the seed's nnUNet/ folder (holds the nnunet package of its fork)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "tests/data/nnunet_v1")
    parser.add_argument("--counts", action="store_true", help="also print 128³ parameter counts")
    parser.add_argument("--part", choices=("pypi", "seed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.part == "pypi":
        part_pypi(args.out, args.counts)
        return
    if args.part == "seed":  # PYTHONPATH holds the temporary copy of the seed's package
        part_seed(args.out, args.counts)
        return

    common = ["--seed-nnunet", str(args.seed_nnunet), "--out", str(args.out)]
    common += ["--counts"] if args.counts else []
    subprocess.run([sys.executable, __file__, "--part", "pypi", *common], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "nnunet"
        shutil.copytree(args.seed_nnunet / "nnunet", package)
        arch = package / "network_architecture"
        source = (arch / "generic_ResencUNet_mscsa_depth_1.py").read_text()
        if source.count("head_dim_loc = 40") != 1:
            raise SystemExit("The seed's generic_ResencUNet_mscsa_depth_1.py changed; update the patch.")
        (arch / "generic_ResencUNet_mscsa_small.py").write_text(
            source.replace("head_dim_loc = 40", f"head_dim_loc = {SMALL_HEAD_DIM}")
        )
        env = {**os.environ, "PYTHONPATH": tmp}  # the fork shadows the installed nnunet
        subprocess.run([sys.executable, __file__, "--part", "seed", *common], check=True, env=env)


if __name__ == "__main__":
    main()
