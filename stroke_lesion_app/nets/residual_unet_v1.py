"""nnU-Net v1's "Res U-Net" (``FabiansUNet``) and its MSCSA variant, pure PyTorch.

A re-implementation of ``FabiansUNet`` from nnU-Net v1
(``nnunet/network_architecture/generic_modular_residual_UNet.py``): a residual encoder of
``BasicResidualBlock`` stages (1, 2, 3, 4, 4, 4 blocks for the paper's six stages) and a plain
convolutional decoder with one conv per stage, as trained by the paper's "Res U-Net" scheme
(``docs/mscsa-spec.md`` §1.8, §2.6). :class:`FabiansUNetMSCSA` adds the MSCSA module between
encoder and decoder like the seed's ``FabiansUNet_MSCSA`` (28 heads)::

    skips = self.encoder(x)        # all stages, bottleneck last
    skips = self.mscsa(skips)      # FabiansUNetMSCSA only; every skip is replaced
    return self.decoder(skips)

State-dict layout
-----------------
Submodule names are those of nnU-Net v1, so the ``state_dict()`` of a v1 ``FabiansUNet`` loads
into :class:`FabiansUNet` with ``load_state_dict(strict=True)`` and no renaming. That includes
v1's quirk of registering every decoder conv and norm twice (``...convs.0.conv.weight`` and
``...convs.0.all.0.weight`` are the same tensor). Two bias layouts exist in the wild and are
both constructor options:

======================================  ===========  =========  ===========================
nnU-Net v1 code                         ``conv_bias``  ``seg_bias``  params at the ATLAS 128³ plan
======================================  ===========  =========  ===========================
seed fork (StrokeLesSeg, "1.7.0")       True         False      72,137,888
PyPI ``nnunet==1.7.1``                  False        True       72,128,810
======================================  ===========  =========  ===========================

(``conv_bias``: the 3×3 convs of encoder and decoder; transposed convs and the 1×1 skip
projections never have a bias.) :func:`infer_v1_bias_layout` reads the layout off a state dict.
The seed's ``FabiansUNet_MSCSA`` keys map onto :class:`FabiansUNetMSCSA` with
:func:`map_seed_mscsa_state_dict`.

Construction
------------
The constructors take nnU-Net v2's ``ResidualEncoderUNet`` keywords (``n_stages``,
``features_per_stage``, ``kernel_sizes``, ``strides``, ``n_blocks_per_stage``,
``n_conv_per_stage_decoder``, ...), so a v2 plan configuration builds them through
``get_network_from_plans``; :meth:`FabiansUNet.from_v1_plan` /
:func:`fabians_unet_kwargs_from_v1_plan` take the values of a v1 ``plans.pkl`` stage
(``pool_op_kernel_sizes``, ``conv_kernel_sizes``, ``num_blocks_encoder``, ``num_blocks_decoder``,
``base_num_features``). v2's ``strides`` are v1's ``pool_op_kernel_sizes`` (first stage
``[1, 1, 1]``).

Deep supervision
----------------
The decoder always builds one 1×1 segmentation head per decoder stage below full resolution
(``deep_supervision_outputs``) plus ``segmentation_output``, whatever ``deep_supervision`` is, so
that a network built for inference loads a checkpoint trained with deep supervision (v1 trainers
always built it on). ``decoder.deep_supervision`` only switches the forward: ``True`` returns a
list of logits, highest resolution first (the order both v1's and v2's deep-supervision losses
expect: scales ``1, 1/s_1, 1/(s_1 s_2), ...`` of the plan's strides), ``False`` returns the
full-resolution logits alone. v1's ``upscale_logits`` option (unused by the v1 Res U-Net
trainers) is not supported.

Initialisation follows the v2 contract: constructors leave PyTorch's default init and
``network.apply(network.initialize)`` applies v1's ``InitWeights_He(1e-2)`` (and, for the MSCSA
variant, the published MSCSA init).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from stroke_lesion_app.nets.blocks.mscsa import MSCSA

__all__ = [
    "FABIANS_BLOCKS_PER_STAGE_ENCODER",
    "BasicResidualBlock",
    "ConvDropoutNormReLU",
    "FabiansUNet",
    "FabiansUNetMSCSA",
    "PlainConvUNetDecoder",
    "ResidualLayer",
    "ResidualUNetEncoder",
    "StackedConvLayers",
    "fabians_unet_kwargs_from_v1_plan",
    "infer_v1_bias_layout",
    "map_seed_mscsa_state_dict",
]

LOGGER = logging.getLogger(__name__)

#: Residual blocks per encoder stage of v1's ``FabiansUNet`` (its planner cuts this to the plan).
FABIANS_BLOCKS_PER_STAGE_ENCODER = (1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4)

_TRANSPOSED = {nn.Conv2d: nn.ConvTranspose2d, nn.Conv3d: nn.ConvTranspose3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
#: v1 ``InitWeights_He(neg_slope=1e-2)``.
_HE_NEG_SLOPE = 1e-2


# --------------------------------------------------------------------------------------------
# argument helpers
# --------------------------------------------------------------------------------------------
def _spatial_dims(conv_op: type[nn.Module]) -> int:
    if conv_op is nn.Conv3d:
        return 3
    if conv_op is nn.Conv2d:
        return 2
    raise ValueError(f"conv_op must be torch.nn.Conv2d or torch.nn.Conv3d, got {conv_op!r}.")


def _as_tuple(name: str, value, dims: int) -> tuple[int, ...]:
    """An int or a length-``dims`` sequence of positive ints as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * dims
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be an int or {dims} ints, got {value!r}.") from None
    if len(out) != dims or any(v < 1 for v in out) or any(isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be an int or {dims} positive ints, got {value!r}.")
    return out


def _per_stage(name: str, value, n: int) -> list:
    """A scalar repeated ``n`` times, or a sequence that must have ``n`` entries."""
    if isinstance(value, (str, bytes)):
        raise ValueError(  # noqa: TRY004 - MONAI style: bad arguments raise ValueError
            f"{name} must be a number or a sequence of {n}, got {value!r}."
        )
    if not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} needs {n} entries (one per stage), got {len(value)}: {value!r}.")
    return list(value)


def _positive_ints(name: str, values: Sequence) -> list[int]:
    if any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must hold positive integers, got {list(values)!r}.")
    return [int(v) for v in values]


class _NetworkProps:
    """The ops shared by every layer (v1's ``props`` dict, typed and checked once)."""

    def __init__(
        self,
        conv_op: type[nn.Module],
        conv_bias: bool,
        norm_op: type[nn.Module] | None,
        norm_op_kwargs: dict | None,
        dropout_op: type[nn.Module] | None,
        dropout_op_kwargs: dict | None,
        nonlin: type[nn.Module] | None,
        nonlin_kwargs: dict | None,
    ) -> None:
        self.spatial_dims = _spatial_dims(conv_op)
        self.conv_op = conv_op
        self.conv_bias = bool(conv_bias)
        self.norm_op = norm_op
        self.norm_op_kwargs = dict(norm_op_kwargs or {})
        self.dropout_op = dropout_op
        self.dropout_op_kwargs = dict(dropout_op_kwargs or {})
        self.nonlin = nonlin
        self.nonlin_kwargs = dict(nonlin_kwargs or {})

    def norm(self, channels: int) -> nn.Module:
        return nn.Identity() if self.norm_op is None else self.norm_op(channels, **self.norm_op_kwargs)

    def act(self) -> nn.Module:
        return nn.Identity() if self.nonlin is None else self.nonlin(**self.nonlin_kwargs)

    def dropout(self) -> nn.Module:
        """v1's encoder rule: a dropout layer only when ``p`` is set and not 0."""
        if self.dropout_op is None or not self.dropout_op_kwargs.get("p"):
            return nn.Identity()
        return self.dropout_op(**self.dropout_op_kwargs)


def _conv(props: _NetworkProps, cin: int, cout: int, kernel, stride=1) -> nn.Module:
    kernel = _as_tuple("kernel size", kernel, props.spatial_dims)
    stride = _as_tuple("stride", stride, props.spatial_dims)
    return props.conv_op(
        cin, cout, kernel, stride=stride, padding=[(k - 1) // 2 for k in kernel],
        bias=props.conv_bias,
    )


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------
class BasicResidualBlock(nn.Module):
    """``conv-(dropout)-norm-nonlin-conv-norm (+ skip) - nonlin`` (v1 ``BasicResidualBlock``).

    The skip is the identity, or a bias-free 1×1 conv with the block's stride followed by a norm
    (``downsample_skip``) when the stride is not 1 or the channel count changes.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    kernel_size : Sequence[int]
        Kernel of both convs (padding ``(k - 1) // 2``).
    props : _NetworkProps
        Conv/norm/dropout/nonlinearity ops.
    stride : Sequence[int] or int
        Stride of the first conv and of the skip projection.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, props: _NetworkProps, stride=1
    ) -> None:
        super().__init__()
        stride = _as_tuple("stride", stride, props.spatial_dims)
        self.conv1 = _conv(props, in_channels, out_channels, kernel_size, stride)
        self.norm1 = props.norm(out_channels)
        self.nonlin1 = props.act()
        self.dropout = props.dropout()
        self.conv2 = _conv(props, out_channels, out_channels, kernel_size)
        self.norm2 = props.norm(out_channels)
        self.nonlin2 = props.act()
        if any(s != 1 for s in stride) or in_channels != out_channels:
            self.downsample_skip = nn.Sequential(
                props.conv_op(in_channels, out_channels, 1, stride=stride, bias=False),
                props.norm(out_channels),
            )
        else:
            self.downsample_skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x : torch.Tensor
            [B, in_channels, *S].

        Returns
        -------
        torch.Tensor
            [B, out_channels, *S'] with ``S' = ceil(S / stride)`` (``S / stride`` for the plans).
        """
        out = self.nonlin1(self.norm1(self.dropout(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return self.nonlin2(out + self.downsample_skip(x))


class ResidualLayer(nn.Module):
    """A stage of ``num_blocks`` :class:`BasicResidualBlock` s; the first one strides (``convs``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out of the stage.
    kernel_size : Sequence[int]
        Conv kernel of the stage.
    props : _NetworkProps
        Shared ops.
    num_blocks : int
        Residual blocks in the stage.
    first_stride : Sequence[int] or int
        Stride of the first block (v1's ``pool_op_kernel_sizes`` entry of the stage).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        props: _NetworkProps,
        num_blocks: int,
        first_stride=1,
    ) -> None:
        super().__init__()
        self.output_channels = out_channels
        self.convs = nn.Sequential(
            BasicResidualBlock(in_channels, out_channels, kernel_size, props, first_stride),
            *(
                BasicResidualBlock(out_channels, out_channels, kernel_size, props)
                for _ in range(num_blocks - 1)
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks.

        Parameters
        ----------
        x : torch.Tensor
            [B, in_channels, *S].

        Returns
        -------
        torch.Tensor
            [B, out_channels, *(S / first_stride)].
        """
        return self.convs(x)


class ResidualUNetEncoder(nn.Module):
    """Residual encoder (v1 ``ResidualUNetEncoder``), bottleneck included.

    ``initial_conv`` (3×3(×3), stride 1) → ``initial_norm`` → ``initial_nonlin`` → ``stages``;
    stage ``i`` is a :class:`ResidualLayer` with ``strides[i]`` on its first block.

    Parameters
    ----------
    input_channels : int
        Image channels.
    features_per_stage : Sequence[int]
        Output channels of each stage.
    kernel_sizes, strides : Sequence[Sequence[int]]
        Conv kernel and first-block stride of each stage.
    n_blocks_per_stage : Sequence[int]
        Residual blocks of each stage.
    props : _NetworkProps
        Shared ops.
    """

    def __init__(
        self,
        input_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence,
        strides: Sequence,
        n_blocks_per_stage: Sequence[int],
        props: _NetworkProps,
    ) -> None:
        super().__init__()
        base = features_per_stage[0]
        self.initial_conv = _conv(props, input_channels, base, 3)
        self.initial_norm = props.norm(base)
        self.initial_nonlin = props.act()
        stages, cin = [], base
        for cout, kernel, stride, blocks in zip(
            features_per_stage, kernel_sizes, strides, n_blocks_per_stage
        ):
            stages.append(ResidualLayer(cin, cout, kernel, props, blocks, stride))
            cin = cout
        self.stages = nn.ModuleList(stages)
        #: v2 name (read by the MSCSA module and nnU-Net v2 tooling) and v1 name of the same list.
        self.output_channels = list(features_per_stage)
        self.stage_output_features = self.output_channels
        self.strides = [tuple(s) for s in strides]
        self.kernel_sizes = [tuple(k) for k in kernel_sizes]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encode ``x``.

        Parameters
        ----------
        x : torch.Tensor
            [B, input_channels, *S].

        Returns
        -------
        list of torch.Tensor
            One map per stage, highest resolution first, bottleneck last:
            stage ``i`` is [B, features_per_stage[i], *(S / prod(strides[:i + 1]))].
        """
        x = self.initial_nonlin(self.initial_norm(self.initial_conv(x)))
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


# --------------------------------------------------------------------------------------------
# decoder
# --------------------------------------------------------------------------------------------
class ConvDropoutNormReLU(nn.Module):
    """``conv → (dropout) → norm → nonlin`` (v1 ``ConvDropoutNormReLU`` of the modular U-Net).

    Like v1, the four layers are registered twice: as ``conv``/``do``/``norm``/``nonlin`` and
    again inside the ``all`` sequential (frozen state-dict layout: ``conv.weight`` and
    ``all.0.weight`` are one tensor).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    kernel_size : Sequence[int]
        Conv kernel (stride 1, padding ``(k - 1) // 2``).
    props : _NetworkProps
        Shared ops (v1's decoder dropout has ``p = 0``, so ``do`` is the identity).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, props: _NetworkProps):
        super().__init__()
        self.conv = _conv(props, in_channels, out_channels, kernel_size)
        self.do = nn.Identity()
        self.norm = props.norm(out_channels)
        self.nonlin = props.act()
        self.all = nn.Sequential(self.conv, self.do, self.norm, self.nonlin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor
            [B, in_channels, *S].

        Returns
        -------
        torch.Tensor
            [B, out_channels, *S].
        """
        return self.all(x)


class StackedConvLayers(nn.Module):
    """``num_convs`` :class:`ConvDropoutNormReLU` layers in ``convs`` (v1 ``StackedConvLayers``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in (first layer) and out (every layer).
    kernel_size : Sequence[int]
        Conv kernel.
    props : _NetworkProps
        Shared ops.
    num_convs : int
        Number of layers.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size, props: _NetworkProps,
        num_convs: int,
    ) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvDropoutNormReLU(in_channels, out_channels, kernel_size, props),
            *(
                ConvDropoutNormReLU(out_channels, out_channels, kernel_size, props)
                for _ in range(num_convs - 1)
            ),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layers.

        Parameters
        ----------
        x : torch.Tensor
            [B, in_channels, *S].

        Returns
        -------
        torch.Tensor
            [B, out_channels, *S].
        """
        return self.convs(x)


class PlainConvUNetDecoder(nn.Module):
    """Plain decoder of ``FabiansUNet`` (v1 ``PlainConvUNetDecoder``).

    Decoder stage ``i`` (``i = 0`` right above the bottleneck) upsamples with a bias-free
    transposed conv (``tus[i]``, kernel = stride = the encoder stride it undoes), concatenates
    the skip of encoder stage ``s = n_stages - 2 - i`` and applies ``stages[i]`` (a
    :class:`StackedConvLayers`). ``deep_supervision_outputs[i]`` (1×1 conv, for every stage but
    the last) and ``segmentation_output`` (last stage) give the logits.

    Parameters
    ----------
    encoder : ResidualUNetEncoder
        The encoder whose skips this decoder consumes.
    num_classes : int
        Output channels.
    n_conv_per_stage : Sequence[int]
        Convs per decoder stage, bottom (next to the bottleneck) first; ``n_stages - 1`` entries.
    props : _NetworkProps
        Shared ops.
    deep_supervision : bool
        Return the logits of every decoder stage (see :meth:`forward`).
    seg_bias : bool
        Whether the 1×1 segmentation heads have a bias (seed fork: no; PyPI 1.7.1: yes).
    """

    def __init__(
        self,
        encoder: ResidualUNetEncoder,
        num_classes: int,
        n_conv_per_stage: Sequence[int],
        props: _NetworkProps,
        deep_supervision: bool = False,
        seg_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.deep_supervision = bool(deep_supervision)
        channels, strides = encoder.output_channels, encoder.strides
        transposed = _TRANSPOSED[props.conv_op]
        n_up = len(channels) - 1
        tus, stages, heads = [], [], []
        for i, s in enumerate(range(n_up - 1, -1, -1)):
            below, skip = channels[s + 1], channels[s]
            tus.append(transposed(below, skip, strides[s + 1], strides[s + 1], bias=False))
            stages.append(
                StackedConvLayers(2 * skip, skip, encoder.kernel_sizes[s], props, n_conv_per_stage[i])
            )
            if s != 0:
                heads.append(props.conv_op(skip, num_classes, 1, bias=seg_bias))
        # v1's registration order (and so its state-dict order)
        self.segmentation_output = props.conv_op(channels[0], num_classes, 1, bias=seg_bias)
        self.tus = nn.ModuleList(tus)
        self.stages = nn.ModuleList(stages)
        self.deep_supervision_outputs = nn.ModuleList(heads)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """Decode the encoder outputs.

        Parameters
        ----------
        skips : Sequence[torch.Tensor]
            Encoder outputs, highest resolution first, bottleneck last (``n_stages`` maps).

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            Without deep supervision: logits [B, num_classes, *S_0] at the resolution of
            ``skips[0]``. With it: ``n_stages - 1`` logits, ``[B, num_classes, *S_s]`` for
            ``s = 0, 1, ..., n_stages - 2`` (highest resolution first).
        """
        x = skips[-1]
        n_up = len(self.tus)
        outputs = []
        for i in range(n_up):
            x = self.tus[i](x)
            x = self.stages[i](torch.cat((x, skips[n_up - 1 - i]), dim=1))
            if self.deep_supervision and i != n_up - 1:
                outputs.append(self.deep_supervision_outputs[i](x))
        segmentation = self.segmentation_output(x)
        if not self.deep_supervision:
            return segmentation
        outputs.append(segmentation)
        return outputs[::-1]


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
def _he_init(module: nn.Module) -> None:
    """v1 ``InitWeights_He(1e-2)``: Kaiming-normal conv weights (a = 0.01), zero conv biases."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=_HE_NEG_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FabiansUNet(nn.Module):
    """nnU-Net v1's Res U-Net: residual encoder, plain decoder (v1 ``FabiansUNet``).

    Keywords follow nnU-Net v2's ``ResidualEncoderUNet`` so that a v2 plan builds it; see
    :meth:`from_v1_plan` for v1 plan values and the module docstring for the state-dict layout.

    Parameters
    ----------
    input_channels : int
        Image channels.
    n_stages : int
        Resolution stages, bottleneck included (6 for the paper's 128³ plan).
    features_per_stage : int or Sequence[int]
        Channels of each stage (paper: 32, 64, 128, 256, 320, 320).
    conv_op : type
        ``torch.nn.Conv3d`` or ``torch.nn.Conv2d``.
    kernel_sizes : Sequence
        Conv kernel of each stage (v1 ``conv_kernel_sizes``).
    strides : Sequence
        Stride of each stage's first block (v1 ``pool_op_kernel_sizes``; first ``[1, 1, 1]``).
    n_blocks_per_stage : int or Sequence[int]
        Residual blocks per encoder stage (paper: 1, 2, 3, 4, 4, 4).
    num_classes : int
        Output channels (classes including background).
    n_conv_per_stage_decoder : int or Sequence[int]
        Convs per decoder stage, bottom first (paper: 1 each); ``n_stages - 1`` entries.
    conv_bias : bool
        Bias of the encoder/decoder convs (seed fork / paper: True; PyPI 1.7.1: False).
    norm_op, norm_op_kwargs : type or None, dict or None
        Normalisation (v1 trainers: ``InstanceNorm3d``, ``eps=1e-5, affine=True``); ``None``: none.
    dropout_op, dropout_op_kwargs : type or None, dict or None
        Dropout inside the encoder blocks when ``p`` is not 0 (v1 trainers: none).
    nonlin, nonlin_kwargs : type or None, dict or None
        Nonlinearity (v1: ``LeakyReLU(negative_slope=1e-2, inplace=True)``).
    deep_supervision : bool
        Initial value of ``decoder.deep_supervision``.
    seg_bias : bool
        Bias of the 1×1 segmentation heads (seed fork / paper: False; PyPI 1.7.1: True).
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
        conv_bias: bool = True,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        seg_bias: bool = False,
    ) -> None:
        super().__init__()
        props = _NetworkProps(
            conv_op, conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
            nonlin_kwargs,
        )
        for name, value in (("input_channels", input_channels), ("num_classes", num_classes),
                            ("n_stages", n_stages)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if n_stages < 2:
            raise ValueError(
                f"n_stages must be at least 2 (an encoder and a decoder stage), got {n_stages}."
            )
        dims = props.spatial_dims
        features = _positive_ints(
            "features_per_stage", _per_stage("features_per_stage", features_per_stage, n_stages)
        )
        kernels = [
            _as_tuple("kernel_sizes", k, dims)
            for k in _per_stage("kernel_sizes", kernel_sizes, n_stages)
        ]
        stride_list = [
            _as_tuple("strides", s, dims) for s in _per_stage("strides", strides, n_stages)
        ]
        blocks = _positive_ints(
            "n_blocks_per_stage", _per_stage("n_blocks_per_stage", n_blocks_per_stage, n_stages)
        )
        dec_convs = _positive_ints(
            "n_conv_per_stage_decoder",
            _per_stage("n_conv_per_stage_decoder", n_conv_per_stage_decoder, n_stages - 1),
        )
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.conv_op = conv_op
        self.encoder = ResidualUNetEncoder(
            input_channels, features, kernels, stride_list, blocks, props
        )
        self.decoder = PlainConvUNetDecoder(
            self.encoder, num_classes, dec_convs, props, deep_supervision, seg_bias
        )

    @classmethod
    def from_v1_plan(
        cls,
        stage_plan: Mapping[str, Any],
        input_channels: int,
        num_classes: int,
        deep_supervision: bool = True,
        **kwargs: Any,
    ) -> FabiansUNet:
        """Build from one stage of a v1 ``plans.pkl`` (``plans['plans_per_stage'][stage]``).

        Parameters
        ----------
        stage_plan : Mapping
            Needs ``conv_kernel_sizes`` and ``pool_op_kernel_sizes``; ``num_blocks_encoder``,
            ``num_blocks_decoder`` and ``base_num_features`` are used when present.
        input_channels, num_classes : int
            Image channels and classes (v1: ``num_modalities``, ``num_classes + 1``).
        deep_supervision : bool
            As the v1 trainers (on).
        **kwargs
            Further keywords of :func:`fabians_unet_kwargs_from_v1_plan` (``base_num_features``,
            ``max_num_features``, ``conv_bias``, ``seg_bias``) or of the constructor
            (``mscsa_*`` for :class:`FabiansUNetMSCSA`).

        Returns
        -------
        FabiansUNet
            Uninitialised network (call ``net.apply(net.initialize)`` for v1's He init).
        """
        plan_keys = {"base_num_features", "max_num_features", "feat_map_mul_on_downscale",
                     "conv_bias", "seg_bias"}
        plan_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in plan_keys}
        arch = fabians_unet_kwargs_from_v1_plan(stage_plan, **plan_kwargs)
        return cls(
            input_channels=input_channels, num_classes=num_classes,
            deep_supervision=deep_supervision, **arch, **kwargs,
        )

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """v1 ``InitWeights_He(1e-2)`` for use with ``network.apply`` (norms keep 1 / 0)."""
        _he_init(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment ``x``.

        Parameters
        ----------
        x : torch.Tensor
            [B, input_channels, D, H, W] (or [B, input_channels, H, W] in 2D); each spatial size
            divisible by the product of the strides along that axis.

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            Logits [B, num_classes, D, H, W]; with ``decoder.deep_supervision`` a list of
            ``n_stages - 1`` logits, full resolution first, then one per decoder stage at
            decreasing resolution.
        """
        return self.decoder(self.encoder(x))


class FabiansUNetMSCSA(FabiansUNet):
    """:class:`FabiansUNet` with the MSCSA module on all encoder outputs (seed ``FabiansUNet_MSCSA``).

    Parameters
    ----------
    input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
    n_blocks_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
    norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision,
    seg_bias
        As :class:`FabiansUNet`.
    mscsa_num_heads : int
        Attention heads (published for the Res U-Net: 28).
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
        n_blocks_per_stage,
        num_classes: int,
        n_conv_per_stage_decoder,
        conv_bias: bool = True,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        seg_bias: bool = False,
        mscsa_num_heads: int = 28,
        mscsa_head_dim: int = 40,
        mscsa_value_ratio: float = 2.0,
        mscsa_mlp_ratio: float = 3.0,
        mscsa_drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__(
            input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
            n_blocks_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
            norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs,
            deep_supervision, seg_bias,
        )
        self.mscsa = MSCSA(
            _spatial_dims(conv_op), self.encoder.output_channels, num_heads=mscsa_num_heads,
            head_dim=mscsa_head_dim, value_ratio=mscsa_value_ratio, mlp_ratio=mscsa_mlp_ratio,
            drop_path_rate=mscsa_drop_path_rate,
        )
        LOGGER.debug("FabiansUNetMSCSA: MSCSA on encoder outputs %s.", self.encoder.output_channels)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """v1 He init for the backbone, published init for MSCSA (use with ``network.apply``).

        ``Module.apply`` visits children before their parent, so the MSCSA module is reached
        after its convolutions got He init and re-initialises all of them.
        """
        if isinstance(module, MSCSA):
            module.initialize_weights()
        else:
            _he_init(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment ``x`` (encoder → MSCSA on every skip → decoder).

        Parameters
        ----------
        x : torch.Tensor
            [B, input_channels, D, H, W] (or [B, input_channels, H, W] in 2D); each spatial size
            divisible by the product of the strides along that axis.

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            As :meth:`FabiansUNet.forward`.
        """
        return self.decoder(self.mscsa(self.encoder(x)))


# --------------------------------------------------------------------------------------------
# v1 plans and checkpoints
# --------------------------------------------------------------------------------------------
def fabians_unet_kwargs_from_v1_plan(
    stage_plan: Mapping[str, Any],
    base_num_features: int | None = None,
    max_num_features: int = 320,
    feat_map_mul_on_downscale: int = 2,
    conv_bias: bool = True,
    seg_bias: bool = False,
) -> dict[str, Any]:
    """Constructor keywords of :class:`FabiansUNet` from a v1 plan stage, as v1's trainer builds it.

    v1's ``nnUNetTrainerV2_ResencUNet.initialize_network`` uses the stage's kernels, pools and
    block counts, ``base_num_features`` (32), ×2 features per stage capped at 320, InstanceNorm
    (eps 1e-5, affine), LeakyReLU(0.01) and no dropout.

    Parameters
    ----------
    stage_plan : Mapping
        ``conv_kernel_sizes`` and ``pool_op_kernel_sizes`` (one per stage); optional
        ``num_blocks_encoder`` (default :data:`FABIANS_BLOCKS_PER_STAGE_ENCODER` cut to the
        plan), ``num_blocks_decoder`` (default 1 per stage), ``base_num_features``.
    base_num_features : int or None
        Features of the first stage; ``None``: the plan's value, else 32.
    max_num_features : int
        Feature cap (v1 Res U-Net trainers: 320).
    feat_map_mul_on_downscale : int
        Feature growth per stage (2).
    conv_bias, seg_bias : bool
        Bias layout (module docstring); the defaults are the seed fork's.

    Returns
    -------
    dict
        ``n_stages``, ``features_per_stage``, ``conv_op``, ``kernel_sizes``, ``strides``,
        ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``, ``conv_bias``, ``norm_op``,
        ``norm_op_kwargs``, ``dropout_op``, ``dropout_op_kwargs``, ``nonlin``,
        ``nonlin_kwargs``, ``seg_bias``.
    """
    try:
        kernels = [list(map(int, k)) for k in stage_plan["conv_kernel_sizes"]]
        pools = [list(map(int, p)) for p in stage_plan["pool_op_kernel_sizes"]]
    except KeyError as missing:
        raise ValueError(f"The v1 plan stage has no {missing} entry.") from None
    if len(kernels) != len(pools) or not kernels:
        raise ValueError(
            f"conv_kernel_sizes ({len(kernels)}) and pool_op_kernel_sizes ({len(pools)}) must "
            "have one entry per stage."
        )
    n_stages = len(kernels)
    dims = len(kernels[0])
    if dims not in (2, 3):
        raise ValueError(f"Kernels must be 2D or 3D, got {kernels[0]!r}.")
    if base_num_features is None:
        base_num_features = int(stage_plan.get("base_num_features", 32))
    features = [
        min(base_num_features * feat_map_mul_on_downscale**s, max_num_features)
        for s in range(n_stages)
    ]
    blocks = stage_plan.get("num_blocks_encoder", FABIANS_BLOCKS_PER_STAGE_ENCODER[:n_stages])
    dec = stage_plan.get("num_blocks_decoder", [1] * (n_stages - 1))
    return {
        "n_stages": n_stages,
        "features_per_stage": features,
        "conv_op": nn.Conv3d if dims == 3 else nn.Conv2d,
        "kernel_sizes": kernels,
        "strides": pools,
        "n_blocks_per_stage": [int(b) for b in blocks],
        "n_conv_per_stage_decoder": [int(b) for b in dec][: n_stages - 1],
        "conv_bias": conv_bias,
        "norm_op": _INSTANCE_NORM[dims],
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"negative_slope": 1e-2, "inplace": True},
        "seg_bias": seg_bias,
    }


def infer_v1_bias_layout(state_dict: Mapping[str, Any]) -> dict[str, bool]:
    """Which bias layout a v1 ``FabiansUNet(_MSCSA)`` state dict has (see module docstring).

    Parameters
    ----------
    state_dict : Mapping
        Keys of a v1 (or our) ``FabiansUNet`` state dict; a ``module.`` prefix (DataParallel)
        is ignored.

    Returns
    -------
    dict
        ``{"conv_bias": bool, "seg_bias": bool}`` for the constructor.
    """
    keys = {k.removeprefix("module.") for k in state_dict}
    if "encoder.initial_conv.weight" not in keys or "decoder.segmentation_output.weight" not in keys:
        raise ValueError(
            "Not a FabiansUNet state dict: 'encoder.initial_conv.weight' or "
            "'decoder.segmentation_output.weight' is missing."
        )
    return {
        "conv_bias": "encoder.initial_conv.bias" in keys,
        "seg_bias": "decoder.segmentation_output.bias" in keys,
    }


#: Seed (StrokeLesSeg ``layers.py``) → our names inside one CSA layer.
_SEED_CSA = (
    (r"q\.0\.", "query.conv."), (r"q\.1\.", "query.norm."),
    (r"k\.(\d)\.0\.", r"keys.\1.conv."), (r"k\.(\d)\.1\.", r"keys.\1.norm."),
    (r"v\.(\d)\.0\.", r"values.\1.conv."), (r"v\.(\d)\.1\.", r"values.\1.norm."),
    (r"downsample_1\.0\.", "downsamples.0.conv."), (r"downsample_1\.1\.", "downsamples.0.norm."),
    (r"downsample_2\.0\.", "downsamples.1.conv."), (r"downsample_2\.1\.", "downsamples.1.norm."),
    (r"v_conv\.1\.", "rpe."), (r"proj\.0\.", "proj.conv."), (r"attn_norm\.", "proj.norm."),
    (r"norm\.", "norm."),
)
#: Seed ``nn.Sequential`` indices of ``MlpSplit``/``MlpChannel`` pipelines → our FFN names.
_SEED_FFN = {"0": "norm", "1": "fc1", "2": "hidden_norm", "3": "dwconv", "6": "fc2"}
_SEED_BLOCK = {"attn1": "csa1", "attn2": "csa2"}


def _map_seed_key(key: str) -> str:
    rest = key.removeprefix("mscsa_block.0.")
    if rest != key:
        head, _, tail = rest.partition(".")
        if head in _SEED_BLOCK:
            for pattern, repl in _SEED_CSA:
                new, n = re.subn(rf"^{pattern}", repl, tail)
                if n:
                    return f"mscsa.block.{_SEED_BLOCK[head]}.{new}"
        match = re.fullmatch(r"mlp1\.pipelines\.(\d+)\.(\d+)\.(\w+)", rest)
        if match and match[2] in _SEED_FFN:
            return f"mscsa.block.intra_ffn.branches.{match[1]}.{_SEED_FFN[match[2]]}.{match[3]}"
        match = re.fullmatch(r"mlp2\.pipeline\.(\d+)\.(\w+)", rest)
        if match and match[1] in _SEED_FFN:
            return f"mscsa.block.ffn.{_SEED_FFN[match[1]]}.{match[2]}"
    match = re.fullmatch(r"norm\.(\w+)", key)
    if match:
        return f"mscsa.norm.{match[1]}"
    match = re.fullmatch(r"SIM\.(\d+)\.global_(act|embedding)\.([01])\.(\w+)", key)
    if match:
        part = "gate" if match[2] == "act" else "embed"
        return f"mscsa.injections.{match[1]}.{part}.{'conv' if match[3] == '0' else 'norm'}.{match[4]}"
    raise ValueError(
        f"Seed MSCSA key {key!r} has no counterpart in FabiansUNetMSCSA (only the published "
        "configuration maps: depth 1, channel_ratio 1, non-shared key/value projections)."
    )


def map_seed_mscsa_state_dict(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Rename a seed ``FabiansUNet_MSCSA`` state dict (StrokeLesSeg) to :class:`FabiansUNetMSCSA`.

    Pure function: tensors are passed through unchanged (not copied), only keys change. The
    backbone (``encoder.*``, ``decoder.*``) already has our names; the MSCSA part maps one to
    one (every parameter and BatchNorm buffer, same shapes, same channel order):

    ======================================================  =============================================
    seed (``mscsa_block.0.`` / root)                        ours (``mscsa.``)
    ======================================================  =============================================
    ``attn{1,2}.norm``                                      ``block.csa{1,2}.norm``
    ``attn{1,2}.q.{0,1}``                                   ``block.csa{1,2}.query.{conv,norm}``
    ``attn{1,2}.k.{i}.{0,1}`` / ``v.{i}.{0,1}``             ``block.csa{1,2}.keys.{i}`` / ``values.{i}``
    ``attn{1,2}.downsample_{1,2}.{0,1}``                    ``block.csa{1,2}.downsamples.{0,1}``
    ``attn{1,2}.v_conv.1``                                  ``block.csa{1,2}.rpe``
    ``attn{1,2}.attn_norm`` / ``proj.0``                    ``block.csa{1,2}.proj.norm`` / ``proj.conv``
    ``mlp1.pipelines.{i}.{0,1,2,3,6}``                      ``block.intra_ffn.branches.{i}.{norm,fc1,hidden_norm,dwconv,fc2}``
    ``mlp2.pipeline.{0,1,2,3,6}``                           ``block.ffn.{norm,fc1,hidden_norm,dwconv,fc2}``
    ``norm``                                                ``norm``
    ``SIM.{i}.global_act.{0,1}`` / ``global_embedding``     ``injections.{i}.gate`` / ``embed``
    ======================================================  =============================================

    Parameters
    ----------
    state_dict : Mapping[str, torch.Tensor]
        ``FabiansUNet_MSCSA.state_dict()`` of the seed (a ``module.`` prefix is dropped).

    Returns
    -------
    collections.OrderedDict
        Keys of :class:`FabiansUNetMSCSA`; load with ``strict=True``.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(("encoder.", "decoder.")):
            new = key
        else:
            new = _map_seed_key(key)
        if new in out:
            raise ValueError(f"Two seed keys map to {new!r}; is {key!r} duplicated?")
        out[new] = value
    return out
