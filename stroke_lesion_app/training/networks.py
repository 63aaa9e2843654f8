"""Build the networks of our trainers from an nnU-Net v2 plan configuration.

Used by the ``build_network_architecture`` static methods in
``nnunet_trainers/stroke_lesion_trainers.py`` (called by nnU-Net at training *and* inference).
The plan's architecture entry is copied, never edited in place.

* the plan's own backbone (``PlainConvUNet`` or ``ResidualEncoderUNet``) with or without MSCSA;
* the v1 "Res U-Net" backbone of the paper (``docs/mscsa-spec.md`` §1.8, §2.6): our port of
  nnU-Net v1's ``FabiansUNet`` (``stroke_lesion_app.nets.residual_unet_v1``, with or without
  MSCSA) with (1, 2, 3, 4, 4, 4) residual blocks per encoder stage (truncated or extended with 4
  to the plan's number of stages), one conv per decoder stage and the seed's bias layout (biases
  on the 3×3 convs, none on the segmentation heads); stages, features, kernels, strides, norm and
  nonlinearity come from the plan. At the paper's 128³ plan this is exactly the seed's network:
  72,137,888 parameters, 112,861,728 with MSCSA (28 heads).
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

__all__ = [
    "RESUNET_BLOCKS_PER_STAGE",
    "blocks_per_stage",
    "build_network",
    "residual_encoder_kwargs",
]

LOGGER = logging.getLogger(__name__)

#: Residual blocks per encoder stage of the v1 ``FabiansUNet`` used by the paper's Res U-Net.
RESUNET_BLOCKS_PER_STAGE = (1, 2, 3, 4, 4, 4)

_DNA = "dynamic_network_architectures.architectures.unet"
_OURS = "stroke_lesion_app.nets.unet_mscsa"
_V1 = "stroke_lesion_app.nets.residual_unet_v1"
_PLAIN, _RESIDUAL, _FABIANS = "PlainConvUNet", "ResidualEncoderUNet", "FabiansUNet"
_CLASS_PATHS = {
    (_PLAIN, False): f"{_DNA}.PlainConvUNet",
    (_RESIDUAL, False): f"{_DNA}.ResidualEncoderUNet",
    (_PLAIN, True): f"{_OURS}.PlainConvUNetMSCSA",
    (_RESIDUAL, True): f"{_OURS}.ResidualEncoderUNetMSCSA",
    (_FABIANS, False): f"{_V1}.FabiansUNet",
    (_FABIANS, True): f"{_V1}.FabiansUNetMSCSA",
}
#: keys of v2 plans that ``FabiansUNet`` does not take (plain-only and residual-only options)
_NOT_FABIANS = ("n_conv_per_stage", "nonlin_first", "block", "bottleneck_channels", "stem_channels")


def blocks_per_stage(n_stages: int, pattern=RESUNET_BLOCKS_PER_STAGE) -> list[int]:
    """Blocks per encoder stage: ``pattern`` cut to ``n_stages`` or extended with its last value.

    Parameters
    ----------
    n_stages : int
        Number of resolution stages of the plan.
    pattern : Sequence[int]
        Published blocks per stage.

    Returns
    -------
    list of int
        ``n_stages`` entries.
    """
    if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 1:
        raise ValueError(f"n_stages must be a positive integer, got {n_stages!r}.")
    pattern = list(pattern)
    return (pattern + [pattern[-1]] * n_stages)[:n_stages]


def _backbone(class_name: str) -> str:
    short = class_name.rsplit(".", 1)[-1].removesuffix("MSCSA")
    if short not in (_PLAIN, _RESIDUAL, _FABIANS):
        raise ValueError(
            f"Unsupported network class {class_name!r} in the plans: only PlainConvUNet, "
            "ResidualEncoderUNet and FabiansUNet plans can be used with the stroke trainers."
        )
    return short


def residual_encoder_kwargs(arch_kwargs: dict[str, Any], class_name: str) -> dict[str, Any]:
    """Turn a plan's U-Net kwargs into ``FabiansUNet`` kwargs for the v1 Res U-Net.

    Parameters
    ----------
    arch_kwargs : dict
        ``configuration_manager.network_arch_init_kwargs`` (not modified).
    class_name : str
        ``configuration_manager.network_arch_class_name`` the kwargs belong to.

    Returns
    -------
    dict
        A new dict: ``n_blocks_per_stage`` from :func:`blocks_per_stage`, one conv per decoder
        stage, the seed's bias layout (``conv_bias=True``, ``seg_bias=False``, whatever the
        plan says), no keys ``FabiansUNet`` does not take (``n_conv_per_stage``,
        ``nonlin_first``, ``block``, ``bottleneck_channels``, ``stem_channels``). A plan
        written for ``FabiansUNet`` itself (e.g. for an imported v1 checkpoint) is kept as it
        is: its blocks and its bias layout (``conv_bias``, ``seg_bias``, default False) win.
    """
    kwargs = deepcopy(arch_kwargs)
    if _backbone(class_name) == _FABIANS:
        kwargs.setdefault("seg_bias", False)
        return kwargs
    for key in _NOT_FABIANS:
        kwargs.pop(key, None)
    n_stages = int(kwargs["n_stages"])
    kwargs["n_blocks_per_stage"] = blocks_per_stage(n_stages)
    kwargs["n_conv_per_stage_decoder"] = [1] * (n_stages - 1)
    kwargs["conv_bias"] = True
    kwargs["seg_bias"] = False
    return kwargs


def build_network(
    configuration_manager,
    num_input_channels: int,
    num_output_channels: int,
    enable_deep_supervision: bool = True,
    *,
    residual_encoder: bool = False,
    mscsa_num_heads: int | None = None,
) -> nn.Module:
    """Build (and initialise) a network for one plan configuration.

    Parameters
    ----------
    configuration_manager : nnunetv2.utilities.plans_handling.plans_handler.ConfigurationManager
        Configuration of the plan (its architecture entry is deep-copied, not edited).
    num_input_channels, num_output_channels : int
        Input modalities and segmentation heads.
    enable_deep_supervision : bool
        Return one output per decoder stage.
    residual_encoder : bool
        Replace the plan's backbone by the v1 Res U-Net, our ``FabiansUNet`` port
        (:func:`residual_encoder_kwargs`).
    mscsa_num_heads : int or None
        Add the MSCSA module with this many heads (published: 16 plain, 28 residual);
        ``None`` builds the backbone alone.

    Returns
    -------
    torch.nn.Module
        The network, initialised by nnU-Net's ``get_network_from_plans`` (He init for the
        backbone, v1's ``InitWeights_He(1e-2)`` for the Res U-Net, published init for MSCSA).
        With deep supervision it returns ``n_stages - 1`` logits, full resolution first, which
        matches the trainer's ``_get_deep_supervision_scales`` (one scale per plan stride but
        the last).
    """
    class_name = configuration_manager.network_arch_class_name
    arch_kwargs = deepcopy(configuration_manager.network_arch_init_kwargs)
    requires_import = list(configuration_manager.network_arch_init_kwargs_req_import)
    backbone = _backbone(class_name)
    if residual_encoder:
        arch_kwargs = residual_encoder_kwargs(arch_kwargs, class_name)
        backbone = _FABIANS
    for key in [k for k in arch_kwargs if k.startswith("mscsa_")]:
        arch_kwargs.pop(key)
    if mscsa_num_heads is not None:
        arch_kwargs["mscsa_num_heads"] = mscsa_num_heads
    requires_import = [k for k in requires_import if k in arch_kwargs]
    target = _CLASS_PATHS[(backbone, mscsa_num_heads is not None)]
    LOGGER.info(
        "Building %s (MSCSA heads: %s) from plan class %s.", target, mscsa_num_heads, class_name
    )
    return get_network_from_plans(
        target,
        arch_kwargs,
        requires_import,
        num_input_channels,
        num_output_channels,
        allow_init=True,
        deep_supervision=enable_deep_supervision,
    )
