"""Network building blocks (pure PyTorch)."""

from stroke_lesion_app.nets.blocks.mscsa import (
    FFN,
    MSCSA,
    ConvNorm,
    CrossScaleAttention,
    DropPath,
    Injection,
    IntraFFN,
    MSCSABlock,
    init_weights,
)

__all__ = [
    "FFN",
    "MSCSA",
    "ConvNorm",
    "CrossScaleAttention",
    "DropPath",
    "Injection",
    "IntraFFN",
    "MSCSABlock",
    "init_weights",
]
