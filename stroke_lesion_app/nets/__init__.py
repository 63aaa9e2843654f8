"""Networks for stroke lesion segmentation: MSCSA blocks and MSCSA U-Nets (PyTorch only).

``stroke_lesion_app.nets`` never imports ``nnunetv2``, the workflows or the CLI. The U-Nets
subclass ``dynamic_network_architectures`` classes so that nnU-Net v2 plans build them;
``FabiansUNet`` / ``FabiansUNetMSCSA`` port nnU-Net v1's Res U-Net (v1 state dicts load as-is)
and take the same plan keywords.
"""

from stroke_lesion_app.nets.blocks.mscsa import (
    FFN,
    MSCSA,
    CrossScaleAttention,
    DropPath,
    Injection,
    IntraFFN,
    MSCSABlock,
)
from stroke_lesion_app.nets.residual_unet_v1 import FabiansUNet, FabiansUNetMSCSA
from stroke_lesion_app.nets.unet_mscsa import PlainConvUNetMSCSA, ResidualEncoderUNetMSCSA

__all__ = [
    "FFN",
    "MSCSA",
    "CrossScaleAttention",
    "DropPath",
    "FabiansUNet",
    "FabiansUNetMSCSA",
    "Injection",
    "IntraFFN",
    "MSCSABlock",
    "PlainConvUNetMSCSA",
    "ResidualEncoderUNetMSCSA",
]
