"""nnU-Net v2 port of the v1 ``nnUNetTrainerV2_DA3`` augmentation used by the paper's Res U-Net.

``docs/mscsa-spec.md`` §2.6. The reference is nnU-Net 1.7.1 (PyPI ``nnunet==1.7.1``):
``nnUNetTrainerV2_DA3.setup_DA_params`` (on top of ``nnUNetTrainerV2.setup_DA_params`` and
``default_3D_augmentation_params``) feeding ``get_insaneDA_augmentation2``
(``data_augmentation_insaneDA2.py``), with batchgenerators 0.25's transforms. Every setting
below is v1 DA3's; :data:`DA3` holds them and :func:`da3_training_transforms` builds the
pipeline from them, in v1's order:

=============================  ======================  ===================================
transform (v1 order)           nnU-Net v2 default      DA3 (v1, ported here)
=============================  ======================  ===================================
elastic deformation            off                     p 0.3; one scale per sample
                                                       U(0, 0.25) x patch edge = sigma,
                                                       magnitude U(sigma/8, sigma/2) per
                                                       axis (v1 ``deformation_scale``)
rotation                       p 0.2, ±30° (3D)        p 0.3, ±30° per axis
scaling                        p 0.2, U(0.7, 1.4),     p 0.3, (0.65, 1.6) with v1's
                               same on all axes        sampling (half below 1, half
                                                       above), per axis with p 0.3
Gaussian noise                 p 0.1, σ U(0, 0.1)      p 0.15, same σ
Gaussian blur                  p 0.2, σ (0.5, 1.0),    p 0.2, σ (0.5, 1.5), one σ for
                               σ per axis, p/ch 0.5    all axes, p/channel 0.5
multiplicative brightness      p 0.15, (0.75, 1.25)    p 0.15, U(0.7, 1.3)
contrast                       p 0.15, (0.75, 1.25)    p 0.15, (0.65, 1.5), range kept
low resolution                 p 0.25, zoom (0.5, 1)   the same
inverted gamma                 p 0.1, (0.7, 1.5)       p 0.15, (0.5, 1.6), stats kept
additive brightness            off                     p 0.3, N(0, 0.2) per channel
gamma                          p 0.3, (0.7, 1.5)       p 0.3, (0.5, 1.6), stats kept
mirroring                      each axis p 0.5         the same
=============================  ======================  ===================================

Masking, label clean-up, cascade, regions and deep-supervision targets are nnU-Net v2's.

Remaining differences from v1 DA3, all outside what batchgeneratorsv2's transforms can express
(also listed in the README, "Reproducing the paper"):

* **Initial patch size.** v1 DA3 cut the patch that enters the spatial transform with
  ``get_patch_size(..., scale_range=(0.7, 1.4))`` (``nnUNetTrainerV2`` had already set that
  range in the shared parameter dict), i.e. about 249³ for a 128³ patch and ±30°; nnU-Net v2's
  ``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` uses ``(0.85, 1.25)``, about
  205³. That is a trainer setting: zooming out beyond 0.85 pads with zeros earlier in v2.
* **Order of rotation and per-axis scaling.** v1 rotates, then scales the coordinates
  (``S·R``); batchgeneratorsv2 builds ``R·S``. Identical for isotropic scaling; differs for the
  per-axis scalings (p 0.3 × 0.3 = 9 % of samples).
* **Deformation noise.** v1 blurs uniform noise in [-1, 1]; v2 blurs standard normal noise. Both
  are then rescaled to the same maximum displacement.
* **Interpolation.** v1 resampled images with cubic splines (order 3) and labels with linear
  interpolation per label; batchgeneratorsv2 uses trilinear interpolation for both (nnU-Net v2
  does so for every trainer). Its low-resolution simulation upsamples with trilinear instead of
  v1's cubic interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

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

__all__ = ["DA3", "V1ElasticMagnitude", "da3_training_transforms"]

#: v1 DA3's settings (nnunet 1.7.1, see the module table). ``*_range`` values sampled "v1 style"
#: (half of the draws below 1, half above, like v1's ``augment_contrast``/``augment_gamma``/
#: ``augment_spatial_2`` scaling) are wrapped in ``BGContrast``; plain tuples are uniform.
DA3 = MappingProxyType({
    # SpatialTransform_2
    "p_elastic_deform": 0.3,
    "elastic_deform_scale": (0.0, 0.25),   # v1 eldef_deformation_scale, fraction of the patch
    "p_rotation": 0.3,
    "p_scaling": 0.3,
    "scaling": (0.65, 1.6),
    "p_synchronize_scaling_across_axes": 0.7,  # v1: independent per axis with p 0.3
    # intensity transforms, in v1's order
    "p_noise": 0.15,
    "noise_variance": (0.0, 0.1),
    "p_blur": 0.2,
    "blur_sigma": (0.5, 1.5),
    "blur_p_per_channel": 0.5,
    "p_multiplicative_brightness": 0.15,
    "multiplicative_brightness": (0.7, 1.3),
    "p_contrast": 0.15,
    "contrast": (0.65, 1.5),
    "p_low_resolution": 0.25,
    "low_resolution_scale": (0.5, 1.0),
    "low_resolution_p_per_channel": 0.5,
    "p_inverted_gamma": 0.15,
    "p_additive_brightness": 0.3,
    "additive_brightness_mu": 0.0,
    "additive_brightness_sigma": 0.2,
    "p_gamma": 0.3,
    "gamma": (0.5, 1.6),
})


class V1ElasticMagnitude:
    """v1's elastic displacement magnitude, in voxels: ``U(sigma / 8, sigma / 2)``.

    ``sigma = deformation_scale * patch_size[dim]`` is the smoothing width of the deformation
    field (batchgenerators 0.25 ``augment_spatial_2``). batchgeneratorsv2's ``SpatialTransform``
    calls this with ``patch_size``, ``dim`` and ``deformation_scale``. A class rather than a
    lambda, so the pipeline pickles into nnU-Net's augmentation worker processes.

    Examples
    --------
    >>> magnitude = V1ElasticMagnitude()
    >>> 2.0 <= magnitude(patch_size=(64, 64, 64), dim=0, deformation_scale=0.25) <= 8.0
    True
    """

    def __call__(self, *args: Any, patch_size: Sequence[int], dim: int,
                 deformation_scale: float, **kwargs: Any) -> float:
        sigma = float(deformation_scale) * float(patch_size[dim])
        return float(np.random.uniform(sigma / 8.0, sigma / 2.0))

    def __repr__(self) -> str:
        return "V1ElasticMagnitude(U(sigma/8, sigma/2))"


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
            elastic_deform_scale=DA3["elastic_deform_scale"],
            elastic_deform_magnitude=V1ElasticMagnitude(),
            p_synchronize_def_scale_across_axes=1,  # v1: one scale per sample
            p_rotation=DA3["p_rotation"],
            rotation=rotation_for_DA,
            p_scaling=DA3["p_scaling"],
            scaling=BGContrast(DA3["scaling"]),
            p_synchronize_scaling_across_axes=DA3["p_synchronize_scaling_across_axes"],
            bg_style_seg_sampling=False,
            border_mode_seg="constant",
            padding_value_seg=-1,
        )
    )
    if do_dummy_2d_data_aug:
        transforms.append(Convert2DTo3DTransform())

    transforms.append(RandomTransform(
        GaussianNoiseTransform(noise_variance=DA3["noise_variance"], p_per_channel=1,
                               synchronize_channels=True),
        apply_probability=DA3["p_noise"],
    ))
    transforms.append(RandomTransform(
        GaussianBlurTransform(
            blur_sigma=DA3["blur_sigma"], synchronize_channels=False, synchronize_axes=True,
            p_per_channel=DA3["blur_p_per_channel"], benchmark=True,
        ),
        apply_probability=DA3["p_blur"],
    ))
    transforms.append(RandomTransform(
        MultiplicativeBrightnessTransform(
            multiplier_range=DA3["multiplicative_brightness"], synchronize_channels=False,
            p_per_channel=1,
        ),
        apply_probability=DA3["p_multiplicative_brightness"],
    ))
    transforms.append(RandomTransform(
        ContrastTransform(
            contrast_range=BGContrast(DA3["contrast"]), preserve_range=True,
            synchronize_channels=False, p_per_channel=1,
        ),
        apply_probability=DA3["p_contrast"],
    ))
    transforms.append(RandomTransform(
        SimulateLowResolutionTransform(
            scale=DA3["low_resolution_scale"], synchronize_channels=False,
            synchronize_axes=True, ignore_axes=ignore_axes, allowed_channels=None,
            p_per_channel=DA3["low_resolution_p_per_channel"],
        ),
        apply_probability=DA3["p_low_resolution"],
    ))
    transforms.append(RandomTransform(
        GammaTransform(
            gamma=BGContrast(DA3["gamma"]), p_invert_image=1,
            synchronize_channels=False, p_per_channel=1, p_retain_stats=1,
        ),
        apply_probability=DA3["p_inverted_gamma"],
    ))
    transforms.append(RandomTransform(
        BrightnessAdditiveTransform(
            mu=DA3["additive_brightness_mu"], sigma=DA3["additive_brightness_sigma"],
            synchronize_channels=False, p_per_channel=1,
        ),
        apply_probability=DA3["p_additive_brightness"],
    ))
    transforms.append(RandomTransform(
        GammaTransform(
            gamma=BGContrast(DA3["gamma"]), p_invert_image=0,
            synchronize_channels=False, p_per_channel=1, p_retain_stats=1,
        ),
        apply_probability=DA3["p_gamma"],
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
