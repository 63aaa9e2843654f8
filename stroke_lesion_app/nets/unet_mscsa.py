"""nnU-Net v2 U-Nets with the MSCSA add-on between encoder and decoder.

The networks subclass ``dynamic_network_architectures``' :class:`PlainConvUNet` and
:class:`ResidualEncoderUNet` (the classes nnU-Net v2 plans name), so every plan an nnU-Net v2
planner writes (any number of stages, any patch size, any convs per stage, 2D or 3D) builds. The
only change is the forward pass (``docs/mscsa-spec.md`` §2.12)::

    skips = self.encoder(x)
    skips = self.mscsa(skips)   # all stages, bottleneck included, are replaced
    return self.decoder(skips)

The nnU-Net network contract is kept: constructor arguments of the parent (plus ``mscsa_*``
options), ``.encoder`` / ``.decoder``, ``.decoder.deep_supervision`` and the static
``initialize`` used by ``network.apply(network.initialize)``. That initialisation keeps nnU-Net's
He init for the backbone and re-applies the published MSCSA init (spec §1.7) to the add-on.
Like the parents, the constructors themselves leave the backbone at PyTorch's default init;
``nnunetv2.utilities.get_network_from_plans.get_network_from_plans`` applies ``initialize``.

This is the only module of ``stroke_lesion_app.nets`` that imports
``dynamic_network_architectures``; it never imports ``nnunetv2``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from torch import nn

from stroke_lesion_app.nets.blocks.mscsa import MSCSA

__all__ = ["PlainConvUNetMSCSA", "ResidualEncoderUNetMSCSA"]

LOGGER = logging.getLogger(__name__)


def _spatial_dims(conv_op: type[nn.Module]) -> int:
    if issubclass(conv_op, nn.Conv3d):
        return 3
    if issubclass(conv_op, nn.Conv2d):
        return 2
    raise ValueError(f"conv_op must be torch.nn.Conv2d or torch.nn.Conv3d, got {conv_op!r}.")


class _MSCSAUNetMixin:
    """Shared forward and initialisation of the MSCSA U-Nets."""

    encoder: nn.Module
    decoder: nn.Module
    mscsa: MSCSA

    def _build_mscsa(self, spatial_dims: int, mscsa_kwargs: dict[str, Any]) -> None:
        channels = [int(c) for c in self.encoder.output_channels]
        self.mscsa = MSCSA(spatial_dims, channels, **mscsa_kwargs)
        LOGGER.debug("%s: MSCSA on encoder outputs %s.", type(self).__name__, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment ``x``.

        Parameters
        ----------
        x : torch.Tensor
            [B, input_channels, D, H, W] (or [B, input_channels, H, W] in 2D); each spatial size
            must be divisible by the product of the plan's strides along that axis.

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            Logits [B, num_classes, D, H, W]. With deep supervision, a list of logits, full
            resolution first, then one per decoder stage at decreasing resolution.
        """
        skips = self.encoder(x)
        skips = self.mscsa(skips)
        return self.decoder(skips)


class PlainConvUNetMSCSA(_MSCSAUNetMixin, PlainConvUNet):
    """nnU-Net's plain U-Net with the MSCSA add-on (16 heads by default: "Default"/"DTK10").

    Parameters
    ----------
    input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
    n_conv_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op, norm_op_kwargs,
    dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision, nonlin_first
        As :class:`dynamic_network_architectures.architectures.unet.PlainConvUNet`.
    mscsa_num_heads : int
        Attention heads of the add-on (published: 16).
    mscsa_head_dim : int
        Query/key channels per head (published: 40).
    mscsa_value_ratio : float
        Value channels per head / ``mscsa_head_dim`` (published: 2).
    mscsa_mlp_ratio : float
        FFN expansion (published: 3).
    mscsa_drop_path_rate : float
        Largest stochastic-depth rate (published: 0.1).
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage,
        conv_op: type[nn.Module],
        kernel_sizes,
        strides,
        n_conv_per_stage,
        num_classes: int,
        n_conv_per_stage_decoder,
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        nonlin_first: bool = False,
        mscsa_num_heads: int = 16,
        mscsa_head_dim: int = 40,
        mscsa_value_ratio: float = 2.0,
        mscsa_mlp_ratio: float = 3.0,
        mscsa_drop_path_rate: float = 0.1,
    ) -> None:
        spatial_dims = _spatial_dims(conv_op)  # refuse a bad conv_op before building
        super().__init__(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
            n_conv_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
            norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
            deep_supervision, nonlin_first,
        )
        self._build_mscsa(spatial_dims, {
            "num_heads": mscsa_num_heads, "head_dim": mscsa_head_dim,
            "value_ratio": mscsa_value_ratio, "mlp_ratio": mscsa_mlp_ratio,
            "drop_path_rate": mscsa_drop_path_rate,
        })

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net init for use with ``network.apply``: He for the backbone, published for MSCSA.

        ``Module.apply`` visits children before their parent, so the MSCSA module is reached
        after its convolutions got He init and re-initialises all of them.
        """
        if isinstance(module, MSCSA):
            module.initialize_weights()
        else:
            PlainConvUNet.initialize(module)


class ResidualEncoderUNetMSCSA(_MSCSAUNetMixin, ResidualEncoderUNet):
    """nnU-Net's residual-encoder U-Net with the MSCSA add-on (28 heads by default: "Res U-Net").

    Parameters
    ----------
    input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
    n_blocks_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
    norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision,
    block, bottleneck_channels, stem_channels
        As :class:`dynamic_network_architectures.architectures.unet.ResidualEncoderUNet`.
    mscsa_num_heads : int
        Attention heads of the add-on (published: 28).
    mscsa_head_dim, mscsa_value_ratio, mscsa_mlp_ratio, mscsa_drop_path_rate
        See :class:`PlainConvUNetMSCSA`.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage,
        conv_op: type[nn.Module],
        kernel_sizes,
        strides,
        n_blocks_per_stage,
        num_classes: int,
        n_conv_per_stage_decoder,
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        block: type[BasicBlockD | BottleneckD] = BasicBlockD,
        bottleneck_channels=None,
        stem_channels: int | None = None,
        mscsa_num_heads: int = 28,
        mscsa_head_dim: int = 40,
        mscsa_value_ratio: float = 2.0,
        mscsa_mlp_ratio: float = 3.0,
        mscsa_drop_path_rate: float = 0.1,
    ) -> None:
        spatial_dims = _spatial_dims(conv_op)  # refuse a bad conv_op before building
        super().__init__(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
            n_blocks_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
            norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
            deep_supervision, block, bottleneck_channels, stem_channels,
        )
        self._build_mscsa(spatial_dims, {
            "num_heads": mscsa_num_heads, "head_dim": mscsa_head_dim,
            "value_ratio": mscsa_value_ratio, "mlp_ratio": mscsa_mlp_ratio,
            "drop_path_rate": mscsa_drop_path_rate,
        })

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net init for use with ``network.apply``: He (+ zeroed last BN of each residual
        block) for the backbone, published init for the MSCSA add-on (see
        :meth:`PlainConvUNetMSCSA.initialize`)."""
        if isinstance(module, MSCSA):
            module.initialize_weights()
        else:
            ResidualEncoderUNet.initialize(module)
