"""Multi-Stage Cross-Scale Attention (MSCSA) building blocks, pure PyTorch.

Implements the add-on module of Shang et al., *Stroke lesion segmentation using multi-stage
cross-scale attention* (arXiv 2501.15423), as described in ``docs/mscsa-spec.md``
(section numbers below refer to that note). The published configuration (spec §1.1) is the
default of every constructor:

* one MSCSA block = CSA → Intra-FFN → CSA → FFN, each pre-normalised and residual (§1.4);
* 16 heads (plain U-Net) or 28 heads (residual U-Net), ``head_dim`` 40, value ratio 2
  (80 value channels per head), MLP ratio 3, no q/k/v bias, no dropout;
* drop-path rates ``linspace(0, 0.1, 2) = [0.0, 0.1]`` for the two (CSA, FFN) pairs;
* BatchNorm everywhere inside the module (eps 1e-5, momentum 0.1);
* all resizing trilinear (bilinear in 2D) with ``align_corners=False``;
* weights ``N(0, sqrt(2 / fan_out))`` for convolutions, zero conv biases, unit/zero BatchNorm
  (§1.7, :func:`init_weights`).

Every block takes ``spatial_dims`` (2 or 3) and ``in_channels`` first, as MONAI blocks do, and
raises :class:`ValueError` quoting the offending value on bad arguments. Attribute names are
``state_dict`` keys and must not be renamed once a checkpoint exists.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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

LOGGER = logging.getLogger(__name__)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INTERP = {2: "bilinear", 3: "trilinear"}

#: Key/value downsampling of the CSA layer (spec §1.3 step 3): (kernel, stride, padding) of the
#: depth-wise convolutions that make the 1/2 and 1/3 scales. Scale 1 is the input itself.
KV_DOWNSAMPLING = ((3, 2, 1), (5, 3, 2))


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_spatial_dims(spatial_dims: int) -> int:
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    return int(spatial_dims)


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _check_channel_list(name: str, values: Sequence[int], min_len: int = 1) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(  # noqa: TRY004 - MONAI style: bad arguments raise ValueError
            f"{name} must be a sequence of positive integers, got {values!r}."
        )
    values = tuple(values)
    if len(values) < min_len or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            f"{name} must hold at least {min_len} positive integer(s), got {values!r}."
        )
    return values


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1), got {value!r}.")
    return float(value)


def _scaled_channels(name: str, channels: int, ratio: float) -> int:
    """``channels * ratio`` as an int; refuse ratios that do not give a whole, positive count."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
        raise ValueError(f"{name} must be a positive number, got {ratio!r}.")
    scaled = channels * ratio
    if abs(scaled - round(scaled)) > 1e-6 or round(scaled) < 1:
        raise ValueError(
            f"{name}={ratio!r} times {channels} channels is {scaled!r}, not a whole number."
        )
    return round(scaled)


def _interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype,
                          device: torch.device) -> torch.Tensor:
    """``[n_out, n_in]`` matrix of 1-D linear interpolation with ``align_corners=False``.

    Row ``o`` holds the weights ``F.interpolate(mode="linear", align_corners=False)`` gives the
    ``n_in`` input samples for output sample ``o`` (computed by interpolating the identity, so
    the two agree by construction). Built outside inference mode, so that a matrix made
    during prediction can later be saved for a backward pass; kept per (sizes, dtype, device).
    """
    key = (n_in, n_out, dtype, device)
    matrix = _MATRICES.get(key)
    if matrix is None:
        with torch.inference_mode(False), torch.no_grad():
            eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, n_in)
            matrix = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T
            matrix = matrix.to(dtype=dtype, device=device).contiguous()
        _MATRICES[key] = matrix
    return matrix


#: interpolation matrices by (n_in, n_out, dtype, device), see :func:`_interpolation_matrix`
_MATRICES: dict = {}


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize the spatial dims of ``x`` ([B, C, *S]) to ``size``; linear, ``align_corners=False``.

    (Bi/tri)linear interpolation is separable, so the resize runs as one small matrix product
    per spatial axis: the same result as ``F.interpolate(mode="trilinear",
    align_corners=False)`` up to float rounding, and on a CPU about twice as fast for the
    injections' 8³ → 128³ upsampling (``benchmarks/resize_alternatives.py``), where the fused
    kernel spends its time on index arithmetic. Equal sizes are returned unchanged (linear
    interpolation onto the same grid is the identity).

    Parameters
    ----------
    x : torch.Tensor
        ``[B, C, *S]`` with 2 or 3 spatial dims.
    size : sequence of int
        Output spatial size.

    Returns
    -------
    torch.Tensor
        ``[B, C, *size]``, dtype and device of ``x``.
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    if len(size) != x.ndim - 2 or x.ndim - 2 not in _INTERP:
        raise ValueError(f"cannot resize a tensor of shape {tuple(x.shape)} to {size}")
    # the axes that shrink go first, those that grow last: smaller intermediates
    axes = sorted(range(2, x.ndim), key=lambda axis: size[axis - 2] / x.shape[axis])
    for axis in axes:
        n_out = size[axis - 2]
        if x.shape[axis] == n_out:
            continue
        matrix = _interpolation_matrix(x.shape[axis], n_out, x.dtype, x.device)
        x = torch.movedim(torch.tensordot(x, matrix, dims=([axis], [1])), -1, axis)
    return x.contiguous()


# --------------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------------
def init_weights(module: nn.Module) -> None:
    """Published MSCSA initialisation of one module (spec §1.7); use with ``Module.apply``.

    Convolutions get weights ``N(0, sqrt(2 / fan_out))`` with
    ``fan_out = prod(kernel_size) * out_channels / groups`` and zero biases; BatchNorm layers get
    weight 1 and bias 0. Other modules are left untouched.

    Parameters
    ----------
    module : torch.nn.Module
        Module to (re-)initialise in place.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Per-sample stochastic depth (timm style), spec §1.4.

    In training mode each sample of the batch is zeroed with probability ``drop_prob`` and the
    kept samples are scaled by ``1 / (1 - drop_prob)``; in eval mode (or with ``drop_prob=0``)
    this is the identity.

    Parameters
    ----------
    drop_prob : float
        Probability of dropping a sample's residual branch, in ``[0, 1)``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = _check_probability("drop_prob", drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop whole samples of ``x``.

        Parameters
        ----------
        x : torch.Tensor
            Any tensor whose first dimension is the batch, e.g. [B, C, D, H, W].

        Returns
        -------
        torch.Tensor
            Same shape as ``x``.
        """
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
        return x * mask.div_(keep_prob)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ConvNorm(nn.Sequential):
    """Convolution followed by BatchNorm (``conv``, ``norm``): the projections of spec §1.3/§1.6.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels, out_channels : int
        Channel counts.
    kernel_size, stride, padding, groups : int
        Convolution geometry (isotropic).
    bias : bool
        Whether the convolution has a bias (the published projections have none).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        spatial_dims = _check_spatial_dims(spatial_dims)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("out_channels", out_channels)
        super().__init__(
            OrderedDict(
                conv=_CONV[spatial_dims](
                    in_channels, out_channels, kernel_size, stride, padding,
                    groups=groups, bias=bias,
                ),
                norm=_NORM[spatial_dims](out_channels),
            )
        )


# --------------------------------------------------------------------------------------------
# feed-forward networks (spec §1.5)
# --------------------------------------------------------------------------------------------
class FFN(nn.Module):
    """Convolutional feed-forward network on all channels (spec §1.5, ``MlpChannel``).

    ``BN → 1×1 conv (C→rC, bias) → BN → depth-wise k3 conv (bias) → ReLU6 → dropout →
    1×1 conv (rC→C, bias) → dropout``. The residual connection is added by the caller.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Channels C of input and output.
    mlp_ratio : float
        Expansion r of the hidden layer (published: 3).
    dropout : float
        Dropout probability after the activation and after the last conv (published: 0).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, mlp_ratio: float = 3.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        spatial_dims = _check_spatial_dims(spatial_dims)
        _check_positive_int("in_channels", in_channels)
        hidden = _scaled_channels("mlp_ratio", in_channels, mlp_ratio)
        dropout = _check_probability("dropout", dropout)
        conv, norm = _CONV[spatial_dims], _NORM[spatial_dims]
        self.norm = norm(in_channels)
        self.fc1 = conv(in_channels, hidden, 1, bias=True)
        self.hidden_norm = norm(hidden)
        self.dwconv = conv(hidden, hidden, 3, padding=1, groups=hidden, bias=True)
        self.act = nn.ReLU6()
        self.drop = nn.Dropout(dropout)
        self.fc2 = conv(hidden, in_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the FFN.

        Parameters
        ----------
        x : torch.Tensor
            [B, C, D, H, W] (or [B, C, H, W] in 2D).

        Returns
        -------
        torch.Tensor
            Same shape as ``x`` (no residual added).
        """
        x = self.hidden_norm(self.fc1(self.norm(x)))
        x = self.drop(self.act(self.dwconv(x)))
        return self.drop(self.fc2(x))


class IntraFFN(nn.Module):
    """Per-stage feed-forward network (spec §1.5, ``MlpSplit``).

    The channels are split into the encoder-stage groups ``in_channels``; each group goes through
    its own :class:`FFN` and the results are concatenated again. This keeps the cost of the
    expansion low on the 1120-channel multi-stage map.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : Sequence[int]
        Channels of each encoder stage; the input has ``sum(in_channels)`` channels.
    mlp_ratio : float
        Expansion of each per-stage FFN (published: 3).
    dropout : float
        Dropout probability inside each FFN (published: 0).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        mlp_ratio: float = 3.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        spatial_dims = _check_spatial_dims(spatial_dims)
        self.in_channels = _check_channel_list("in_channels", in_channels)
        self.branches = nn.ModuleList(
            FFN(spatial_dims, c, mlp_ratio=mlp_ratio, dropout=dropout) for c in self.in_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply one FFN per stage group.

        Parameters
        ----------
        x : torch.Tensor
            [B, sum(in_channels), D, H, W] (or [B, C, H, W] in 2D).

        Returns
        -------
        torch.Tensor
            Same shape as ``x`` (no residual added).
        """
        parts = torch.split(x, self.in_channels, dim=1)
        return torch.cat([ffn(part) for ffn, part in zip(self.branches, parts)], dim=1)


# --------------------------------------------------------------------------------------------
# cross-scale attention (spec §1.3)
# --------------------------------------------------------------------------------------------
class CrossScaleAttention(nn.Module):
    """Cross-Scale Attention (CSA) layer (spec §1.3).

    With C input channels, h heads, key dim d and value dim d_v = ratio·d:

    1. ``x = BN(x)`` (pre-norm);
    2. query ``Q = BN(Conv1x1(x))`` with h·d channels;
    3. key/value inputs at three scales: ``x`` itself, ``BN(DWConv k3 s2 p1 (x))`` and
       ``BN(DWConv k5 s3 p2 (x))``;
    4. separate (non-shared) projections per scale, ``K_s = BN(Conv1x1(x_s))`` (h·d channels)
       and ``V_s = BN(Conv1x1(x_s))`` (h·d_v channels);
    5. channel block ``c // d`` is head ``c``; tokens are the flattened spatial positions, and the
       tokens of the three scales are concatenated;
    6. one joint softmax over all keys, ``O = softmax(Q Kᵀ · d^-0.5) V``;
    7. relational positional encoding ``O += DWConv k3 (bias) (Hardswish(V_1))``;
    8. ``out = Conv1x1 (bias) (Hardswish(BN(O)))`` back to C channels.

    The residual connection is added by the caller.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Channels C of input and output.
    num_heads : int
        Number of heads h (published: 16 for the plain U-Net, 28 for the residual U-Net).
    head_dim : int
        Query/key channels per head d (published: 40).
    value_ratio : float
        Value channels per head as a multiple of ``head_dim`` (published: 2, so d_v = 80).
    qkv_bias : bool
        Bias of the q/k/v projections and of the depth-wise downsampling convs (published: no).
    attn_dropout : float
        Dropout on the attention weights (published: 0).
    proj_dropout : float
        Dropout after the output projection (published: 0).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_heads: int = 16,
        head_dim: int = 40,
        value_ratio: float = 2.0,
        qkv_bias: bool = False,
        attn_dropout: float = 0.0,
        proj_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        spatial_dims = _check_spatial_dims(spatial_dims)
        _check_positive_int("in_channels", in_channels)
        self.num_heads = _check_positive_int("num_heads", num_heads)
        self.head_dim = _check_positive_int("head_dim", head_dim)
        self.value_dim = _scaled_channels("value_ratio", head_dim, value_ratio)
        self.attn_dropout = _check_probability("attn_dropout", attn_dropout)
        self.scale = head_dim**-0.5
        qk_channels = num_heads * head_dim
        v_channels = num_heads * self.value_dim
        norm = _NORM[spatial_dims]

        self.norm = norm(in_channels)
        self.query = ConvNorm(spatial_dims, in_channels, qk_channels, bias=qkv_bias)
        self.downsamples = nn.ModuleList(
            ConvNorm(
                spatial_dims, in_channels, in_channels, kernel_size=k, stride=s, padding=p,
                groups=in_channels, bias=qkv_bias,
            )
            for k, s, p in KV_DOWNSAMPLING
        )
        n_scales = 1 + len(KV_DOWNSAMPLING)
        self.keys = nn.ModuleList(
            ConvNorm(spatial_dims, in_channels, qk_channels, bias=qkv_bias) for _ in range(n_scales)
        )
        self.values = nn.ModuleList(
            ConvNorm(spatial_dims, in_channels, v_channels, bias=qkv_bias) for _ in range(n_scales)
        )
        self.rpe_act = nn.Hardswish()
        self.rpe = _CONV[spatial_dims](
            v_channels, v_channels, 3, padding=1, groups=v_channels, bias=True
        )
        self.proj = nn.Sequential(
            OrderedDict(
                norm=norm(v_channels),
                act=nn.Hardswish(),
                conv=_CONV[spatial_dims](v_channels, in_channels, 1, bias=True),
                drop=nn.Dropout(_check_probability("proj_dropout", proj_dropout)),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend from every position of ``x`` to the keys of all three scales.

        Parameters
        ----------
        x : torch.Tensor
            [B, C, D, H, W] (or [B, C, H, W] in 2D), N = D·H·W tokens.

        Returns
        -------
        torch.Tensor
            [B, C, D, H, W], same shape as ``x`` (no residual added).
        """
        b, _, *spatial = x.shape
        h, d, dv = self.num_heads, self.head_dim, self.value_dim
        x = self.norm(x)
        scales = [x] + [down(x) for down in self.downsamples]

        q = self.query(x).reshape(b, h, d, -1).transpose(-1, -2)  # [B, h, N, d]
        k = torch.cat(
            [proj(xs).reshape(b, h, d, -1) for proj, xs in zip(self.keys, scales)], dim=-1
        ).transpose(-1, -2)  # [B, h, M, d]
        v_maps = [proj(xs) for proj, xs in zip(self.values, scales)]
        v = torch.cat([vm.reshape(b, h, dv, -1) for vm in v_maps], dim=-1).transpose(-1, -2)

        out = F.scaled_dot_product_attention(  # one softmax over all M keys: [B, h, N, d_v]
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale
        )
        out = out.transpose(-1, -2).reshape(b, h * dv, *spatial)
        out = out + self.rpe(self.rpe_act(v_maps[0]))
        return self.proj(out)


# --------------------------------------------------------------------------------------------
# block and injection (spec §1.4, §1.6)
# --------------------------------------------------------------------------------------------
class MSCSABlock(nn.Module):
    """One MSCSA block (spec §1.4, ``BlockMix``): CSA → Intra-FFN → CSA → FFN.

    ::

        x = x + drop_path1(csa1(x))
        x = x + drop_path1(intra_ffn(x))
        x = x + drop_path2(csa2(x))
        x = x + drop_path2(ffn(x))

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : Sequence[int]
        Channels of each encoder stage; the input has ``sum(in_channels)`` channels.
    num_heads, head_dim, value_ratio, qkv_bias, attn_dropout : see :class:`CrossScaleAttention`.
    mlp_ratio : float
        Expansion of the FFNs (published: 3).
    dropout : float
        Dropout in the FFNs and after the attention projection (published: 0).
    drop_path_rates : tuple of float
        Stochastic-depth rates of the (CSA, Intra-FFN) and (CSA, FFN) pairs
        (published: ``linspace(0, 0.1, 2) = (0.0, 0.1)``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        num_heads: int = 16,
        head_dim: int = 40,
        value_ratio: float = 2.0,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path_rates: tuple[float, float] = (0.0, 0.1),
    ) -> None:
        super().__init__()
        self.in_channels = _check_channel_list("in_channels", in_channels)
        if isinstance(drop_path_rates, (str, bytes)) or len(tuple(drop_path_rates)) != 2:
            raise ValueError(f"drop_path_rates must hold two rates, got {drop_path_rates!r}.")
        total = sum(self.in_channels)
        attn_kwargs = {
            "num_heads": num_heads, "head_dim": head_dim, "value_ratio": value_ratio,
            "qkv_bias": qkv_bias, "attn_dropout": attn_dropout, "proj_dropout": dropout,
        }
        self.csa1 = CrossScaleAttention(spatial_dims, total, **attn_kwargs)
        self.intra_ffn = IntraFFN(spatial_dims, self.in_channels, mlp_ratio, dropout)
        self.csa2 = CrossScaleAttention(spatial_dims, total, **attn_kwargs)
        self.ffn = FFN(spatial_dims, total, mlp_ratio, dropout)
        self.drop_path1 = DropPath(drop_path_rates[0])
        self.drop_path2 = DropPath(drop_path_rates[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the four residual sub-blocks.

        Parameters
        ----------
        x : torch.Tensor
            [B, sum(in_channels), D, H, W] (or [B, C, H, W] in 2D).

        Returns
        -------
        torch.Tensor
            Same shape as ``x``.
        """
        x = x + self.drop_path1(self.csa1(x))
        x = x + self.drop_path1(self.intra_ffn(x))
        x = x + self.drop_path2(self.csa2(x))
        return x + self.drop_path2(self.ffn(x))


class Injection(nn.Module):
    """Fuse attended global features into an encoder skip (spec §1.6, ``InjectionMultiSum``).

    ``out = x_local * Up(hsigmoid(BN(Conv1x1(g)))) + Up(BN(Conv1x1(g)))`` with two separate
    bias-free 1×1 convolutions (``gate`` and ``embed``), the hard sigmoid ``ReLU6(z + 3) / 6``
    applied *before* resizing, and ``Up`` a (tri)linear resize with ``align_corners=False`` to the
    size of ``x_local`` (a downsampling for the bottleneck).

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Channels of both the local skip and its global counterpart.
    """

    def __init__(self, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        self.gate = ConvNorm(spatial_dims, in_channels, in_channels)
        self.gate_act = nn.Hardsigmoid()
        self.embed = ConvNorm(spatial_dims, in_channels, in_channels)

    def forward(self, x_local: torch.Tensor, x_global: torch.Tensor) -> torch.Tensor:
        """Modulate ``x_local`` with a gate and a shift computed from ``x_global``.

        Parameters
        ----------
        x_local : torch.Tensor
            Encoder skip, [B, C, D, H, W] (or [B, C, H, W] in 2D).
        x_global : torch.Tensor
            Global features of the same stage, [B, C, d, h, w] at the MSCSA working size.

        Returns
        -------
        torch.Tensor
            [B, C, D, H, W], same shape as ``x_local``.
        """
        size = x_local.shape[2:]
        gate = _resize(self.gate_act(self.gate(x_global)), size)
        embed = _resize(self.embed(x_global), size)
        if gate.dtype != x_local.dtype or embed.dtype != x_local.dtype:  # mixed precision
            return x_local * gate + embed
        return torch.addcmul(embed, x_local, gate)  # one pass over memory: embed + x * gate


class MSCSA(nn.Module):
    """MSCSA add-on between a U-Net encoder and decoder (spec §1.2-§1.6, Fig. 1a of the paper).

    1. every encoder output (all stages including the bottleneck) is resized (tri)linearly,
       ``align_corners=False``, to the spatial size of the second-to-last stage ``skips[-2]``;
    2. the resized maps are concatenated along channels and passed through one
       :class:`MSCSABlock` and a final BatchNorm (``norm``);
    3. the result is split back into the stage groups and each group is fused into its original
       skip by an :class:`Injection`, which returns maps of the original shapes.

    The module is initialised with the published scheme (:func:`init_weights`) when built.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : Sequence[int]
        Channels of each encoder output, highest resolution first (at least 2 stages), e.g.
        ``(32, 64, 128, 256, 320, 320)``.
    num_heads : int
        Attention heads (published: 16 for the plain U-Net, 28 for the residual U-Net).
    head_dim : int
        Query/key channels per head (published: 40).
    value_ratio : float
        Value channels per head / ``head_dim`` (published: 2).
    mlp_ratio : float
        FFN expansion (published: 3).
    qkv_bias : bool
        Bias in the q/k/v projections (published: False).
    dropout, attn_dropout : float
        Dropout probabilities (published: 0).
    drop_path_rate : float
        Largest stochastic-depth rate; the two pairs of sub-blocks use
        ``linspace(0, drop_path_rate, 2)`` (published: 0.1).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        num_heads: int = 16,
        head_dim: int = 40,
        value_ratio: float = 2.0,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.in_channels = _check_channel_list("in_channels", in_channels, min_len=2)
        drop_path_rate = _check_probability("drop_path_rate", drop_path_rate)
        rates = (0.0, drop_path_rate)  # torch.linspace(0, drop_path_rate, 2), spec §1.4
        self.block = MSCSABlock(
            self.spatial_dims, self.in_channels, num_heads=num_heads, head_dim=head_dim,
            value_ratio=value_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, dropout=dropout,
            attn_dropout=attn_dropout, drop_path_rates=(rates[0], rates[1]),
        )
        self.norm = _NORM[self.spatial_dims](sum(self.in_channels))
        self.injections = nn.ModuleList(
            Injection(self.spatial_dims, c) for c in self.in_channels
        )
        self.initialize_weights()
        LOGGER.debug(
            "Built MSCSA add-on: stages %s, %d heads, %d parameters.",
            self.in_channels, num_heads, sum(p.numel() for p in self.parameters()),
        )

    def initialize_weights(self) -> None:
        """(Re-)apply the published initialisation (:func:`init_weights`) to every submodule."""
        self.apply(init_weights)

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Enrich every encoder output with multi-stage, cross-scale context.

        Parameters
        ----------
        skips : Sequence[torch.Tensor]
            Encoder outputs, highest resolution first; stage ``i`` is [B, C_i, D_i, H_i, W_i]
            (or [B, C_i, H_i, W_i] in 2D) with ``C_i = in_channels[i]``.

        Returns
        -------
        list of torch.Tensor
            New skips with the same shapes as the inputs.
        """
        if len(skips) != len(self.in_channels):
            raise ValueError(
                f"MSCSA was built for {len(self.in_channels)} encoder outputs, got {len(skips)}."
            )
        channels = tuple(s.shape[1] for s in skips)
        if channels != self.in_channels or any(s.ndim != self.spatial_dims + 2 for s in skips):
            raise ValueError(
                f"MSCSA expects {self.spatial_dims}D skips with channels {self.in_channels}, "
                f"got shapes {[tuple(s.shape) for s in skips]}."
            )
        target = skips[-2].shape[2:]
        x = torch.cat([_resize(s, target) for s in skips], dim=1)
        x = self.norm(self.block(x))
        parts = torch.split(x, self.in_channels, dim=1)
        return [inj(s, g) for inj, s, g in zip(self.injections, skips, parts)]
