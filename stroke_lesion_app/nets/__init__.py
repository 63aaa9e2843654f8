"""Networks for stroke lesion segmentation: MSCSA blocks and MSCSA U-Nets (PyTorch only).

``stroke_lesion_app.nets`` never imports ``nnunetv2``, the workflows or the CLI. The U-Nets
subclass ``dynamic_network_architectures`` classes so that nnU-Net v2 plans build them.
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
from stroke_lesion_app.nets.unet_mscsa import PlainConvUNetMSCSA, ResidualEncoderUNetMSCSA

__all__ = [
    "FFN",
    "MSCSA",
    "CrossScaleAttention",
    "DropPath",
    "Injection",
    "IntraFFN",
    "MSCSABlock",
    "PlainConvUNetMSCSA",
    "ResidualEncoderUNetMSCSA",
]
