"""nnU-Net v2 port of the v1 ``nnUNetTrainerV2_DA3`` augmentation used by the paper's Res U-Net.

``docs/mscsa-spec.md`` §2.6. Compared with nnU-Net v2's default pipeline
(``nnUNetTrainer.get_training_transforms``):

==========================  =====================  ======================================
transform                   v2 default             DA3 (this module)
==========================  =====================  ======================================
rotation                    p 0.2, ±30° (3D)       p 0.3, same range
scaling                     p 0.2, 0.7-1.4, sync   p 0.3, 0.65-1.6, per-axis with p 0.3
elastic deformation         off                    p 0.3 (batchgeneratorsv2 defaults)
additive brightness         off                    N(0, 0.2), p 0.3
gamma (both passes)         0.7-1.5                0.5-1.6
==========================  =====================  ======================================

Everything else (noise, blur, multiplicative brightness, contrast, low resolution, mirroring,
masking, cascade, regions, deep-supervision targets) is nnU-Net v2's default. The v1 elastic
deformation was parametrised differently (``deformation_scale (0, 0.25)``); the v2 transform's
own default scale and magnitude are used here. The initial (pre-crop) patch size stays nnU-Net's
default, as v1 DA3 computed it before widening the scale range.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import numpy as np
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import (
    BrightnessAdditiveTransform,
    MultiplicativeBrightnessTransform,
)
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.nnunet.random_binary_operator import (
    ApplyRandomBinaryOperatorTransform,
)
from batchgeneratorsv2.transforms.nnunet.remove_connected_components import (
    RemoveRandomConnectedComponentFromOneHotEncodingTransform,
)
from batchgeneratorsv2.transforms.nnunet.seg_to_onehot import MoveSegAsOneHotToDataTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import (
    DownsampleSegForDSTransform,
)
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import (
    Convert2DTo3DTransform,
    Convert3DTo2DTransform,
)
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

__all__ = ["DA3", "da3_training_transforms"]

#: DA3 settings that differ from nnU-Net v2's defaults (spec §2.6).
DA3 = MappingProxyType({
    "p_rotation": 0.3,
    "p_scaling": 0.3,
    "scaling": (0.65, 1.6),
    "p_synchronize_scaling_across_axes": 0.7,  # v1: independent per axis with p 0.3
    "p_elastic_deform": 0.3,
    "additive_brightness_sigma": 0.2,
    "p_additive_brightness": 0.3,
    "gamma": (0.5, 1.6),
})


def da3_training_transforms(
    patch_size: np.ndarray | tuple[int, ...],
    rotation_for_DA: RandomScalar,
    deep_supervision_scales: Sequence | None,
    mirror_axes: tuple[int, ...],
    do_dummy_2d_data_aug: bool,
    use_mask_for_norm: Sequence[bool] | None = None,
    is_cascaded: bool = False,
    foreground_labels: Sequence[int] | None = None,
    regions: Sequence[Sequence[int] | int] | None = None,
    ignore_label: int | None = None,
) -> BasicTransform:
    """Training transforms with DA3 settings; same signature as nnU-Net's
    ``nnUNetTrainer.get_training_transforms``.

    Returns
    -------
    batchgeneratorsv2.transforms.base.basic_transform.BasicTransform
        The composed pipeline.
    """
    transforms: list[BasicTransform] = []
    if do_dummy_2d_data_aug:
        ignore_axes = (0,)
        transforms.append(Convert3DTo2DTransform())
        patch_size_spatial = patch_size[1:]
    else:
        patch_size_spatial = patch_size
        ignore_axes = None
    transforms.append(
        SpatialTransform(
            patch_size_spatial,
            patch_center_dist_from_border=0,
            random_crop=False,
            p_elastic_deform=DA3["p_elastic_deform"],
            p_rotation=DA3["p_rotation"],
            rotation=rotation_for_DA,
            p_scaling=DA3["p_scaling"],
            scaling=DA3["scaling"],
            p_synchronize_scaling_across_axes=DA3["p_synchronize_scaling_across_axes"],
            bg_style_seg_sampling=False,
            border_mode_seg="constant",
            padding_value_seg=-1,
        )
    )
    if do_dummy_2d_data_aug:
        transforms.append(Convert2DTo3DTransform())

    transforms.append(RandomTransform(
        GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
        apply_probability=0.1,
    ))
    transforms.append(RandomTransform(
        GaussianBlurTransform(
            blur_sigma=(0.5, 1.0), synchronize_channels=False, synchronize_axes=False,
            p_per_channel=0.5, benchmark=True,
        ),
        apply_probability=0.2,
    ))
    transforms.append(RandomTransform(
        MultiplicativeBrightnessTransform(
            multiplier_range=BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=1
        ),
        apply_probability=0.15,
    ))
    transforms.append(RandomTransform(
        BrightnessAdditiveTransform(
            mu=0.0, sigma=DA3["additive_brightness_sigma"], synchronize_channels=False,
            p_per_channel=1,
        ),
        apply_probability=DA3["p_additive_brightness"],
    ))
    transforms.append(RandomTransform(
        ContrastTransform(
            contrast_range=BGContrast((0.75, 1.25)), preserve_range=True,
            synchronize_channels=False, p_per_channel=1,
        ),
        apply_probability=0.15,
    ))
    transforms.append(RandomTransform(
        SimulateLowResolutionTransform(
            scale=(0.5, 1), synchronize_channels=False, synchronize_axes=True,
            ignore_axes=ignore_axes, allowed_channels=None, p_per_channel=0.5,
        ),
        apply_probability=0.25,
    ))
    for p_invert, probability in ((1, 0.1), (0, 0.3)):
        transforms.append(RandomTransform(
            GammaTransform(
                gamma=BGContrast(DA3["gamma"]), p_invert_image=p_invert,
                synchronize_channels=False, p_per_channel=1, p_retain_stats=1,
            ),
            apply_probability=probability,
        ))
    if mirror_axes is not None and len(mirror_axes) > 0:
        transforms.append(MirrorTransform(allowed_axes=mirror_axes))

    if use_mask_for_norm is not None and any(use_mask_for_norm):
        transforms.append(MaskImageTransform(
            apply_to_channels=[i for i, used in enumerate(use_mask_for_norm) if used],
            channel_idx_in_seg=0,
            set_outside_to=0,
        ))
    transforms.append(RemoveLabelTansform(-1, 0))
    if is_cascaded:
        if foreground_labels is None:
            raise ValueError("Cascaded training needs foreground_labels, got None.")
        transforms.append(MoveSegAsOneHotToDataTransform(
            source_channel_idx=1, all_labels=foreground_labels, remove_channel_from_source=True
        ))
        transforms.append(RandomTransform(
            ApplyRandomBinaryOperatorTransform(
                channel_idx=list(range(-len(foreground_labels), 0)), strel_size=(1, 8),
                p_per_label=0.5,
            ),
            apply_probability=0.4,
        ))
        transforms.append(RandomTransform(
            RemoveRandomConnectedComponentFromOneHotEncodingTransform(
                channel_idx=list(range(-len(foreground_labels), 0)), fill_with_other_class_p=0,
                dont_do_if_covers_more_than_x_percent=0.15, p_per_label=0.5,
            ),
            apply_probability=0.2,
        ))
    if regions is not None:
        transforms.append(ConvertSegmentationToRegionsTransform(
            regions=list(regions) + [ignore_label] if ignore_label is not None else regions,
            channel_in_seg=0,
        ))
    if deep_supervision_scales is not None:
        transforms.append(DownsampleSegForDSTransform(ds_scales=deep_supervision_scales))
    return ComposeTransforms(transforms)
