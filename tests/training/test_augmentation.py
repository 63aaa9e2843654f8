"""The DA3 pipeline (``training.augmentation``) holds nnU-Net v1 DA3's settings, in v1's order.

Reference: nnunet 1.7.1 ``nnUNetTrainerV2_DA3.setup_DA_params`` and
``get_insaneDA_augmentation2`` (batchgenerators 0.25 transforms); the values are spelled out
here by hand, so a change in ``DA3`` that drifts from v1 fails.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.brightness import (
    BrightnessAdditiveTransform,
    MultiplicativeBrightnessTransform,
)
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from stroke_lesion_app.training.augmentation import (
    DA3,
    V1ElasticMagnitude,
    da3_training_transforms,
)

PATCH = (32, 32, 32)
ROTATION = (-np.pi / 6, np.pi / 6)


@pytest.fixture(scope="module")
def pipeline():
    return da3_training_transforms(PATCH, ROTATION, None, (0, 1, 2), False,
                                   use_mask_for_norm=[False])


def _steps(pipeline):
    """(transform, apply probability) of every step; 1.0 for steps always applied."""
    return [(step.transform, step.apply_probability) if isinstance(step, RandomTransform)
            else (step, 1.0) for step in pipeline.transforms]


def _range(value):
    """(low, high, v1-style) of a sampled range: BGContrast = v1's half below / half above 1."""
    if isinstance(value, BGContrast):
        return (*value.contrast_range, True)
    return (*value, False)


def test_spatial_transform_is_v1_da3(pipeline):
    spatial = _steps(pipeline)[0][0]
    assert isinstance(spatial, SpatialTransform)
    assert (spatial.p_elastic_deform, spatial.p_rotation, spatial.p_scaling) == (0.3, 0.3, 0.3)
    assert tuple(spatial.elastic_deform_scale) == (0.0, 0.25)
    assert isinstance(spatial.elastic_deform_magnitude, V1ElasticMagnitude)
    assert spatial.p_synchronize_def_scale_across_axes == 1
    assert spatial.rotation == ROTATION and spatial.p_rot_per_axis == 1
    assert _range(spatial.scaling) == (0.65, 1.6, True)
    assert spatial.p_synchronize_scaling_across_axes == pytest.approx(1 - 0.3)
    assert (spatial.border_mode_seg, spatial.padding_value_seg) == ("constant", -1)


def test_intensity_transforms_are_v1_da3_in_v1_order(pipeline):
    steps = _steps(pipeline)
    kinds = [type(transform).__name__ for transform, _ in steps]
    assert kinds[:10] == [
        "SpatialTransform", "GaussianNoiseTransform", "GaussianBlurTransform",
        "MultiplicativeBrightnessTransform", "ContrastTransform",
        "SimulateLowResolutionTransform", "GammaTransform", "BrightnessAdditiveTransform",
        "GammaTransform", "MirrorTransform"]
    (noise, p_noise), (blur, p_blur), (multiplicative, p_mult), (contrast, p_contrast), \
        (low_res, p_low), (inverted, p_inverted), (additive, p_add), (gamma, p_gamma), \
        (mirror, _) = steps[1:10]
    assert isinstance(noise, GaussianNoiseTransform) and p_noise == 0.15
    assert tuple(noise.noise_variance) == (0.0, 0.1) and noise.synchronize_channels

    assert isinstance(blur, GaussianBlurTransform) and p_blur == 0.2
    assert tuple(blur.blur_sigma) == (0.5, 1.5)
    assert blur.synchronize_axes and not blur.synchronize_channels  # one σ for all axes
    assert blur.p_per_channel == 0.5

    assert isinstance(multiplicative, MultiplicativeBrightnessTransform) and p_mult == 0.15
    assert _range(multiplicative.multiplier_range) == (0.7, 1.3, False)  # v1: uniform

    assert isinstance(contrast, ContrastTransform) and p_contrast == 0.15
    assert _range(contrast.contrast_range) == (0.65, 1.5, True) and contrast.preserve_range

    assert isinstance(low_res, SimulateLowResolutionTransform) and p_low == 0.25
    assert tuple(low_res.scale) == (0.5, 1.0) and low_res.p_per_channel == 0.5

    assert isinstance(inverted, GammaTransform) and p_inverted == 0.15
    assert inverted.p_invert_image == 1 and inverted.p_retain_stats == 1
    assert _range(inverted.gamma) == (0.5, 1.6, True)

    assert isinstance(additive, BrightnessAdditiveTransform) and p_add == 0.3
    assert (additive.mu, additive.sigma, additive.p_per_channel) == (0.0, 0.2, 1)
    assert not additive.synchronize_channels  # v1: per channel

    assert isinstance(gamma, GammaTransform) and p_gamma == 0.3
    assert gamma.p_invert_image == 0 and gamma.p_retain_stats == 1
    assert _range(gamma.gamma) == (0.5, 1.6, True)

    assert isinstance(mirror, MirrorTransform) and tuple(mirror.allowed_axes) == (0, 1, 2)


def test_every_da3_setting_reaches_the_pipeline(monkeypatch):
    """Change one DA3 entry and the built pipeline changes: no setting is left unused."""
    from stroke_lesion_app.training import augmentation

    def built():
        return repr([(type(t).__name__, sorted((k, repr(v)) for k, v in vars(t).items()
                                              if not k.startswith("_")), p)
                     for t, p in _steps(da3_training_transforms(PATCH, ROTATION, None,
                                                                (0, 1, 2), False))])

    reference = built()
    for key, value in DA3.items():
        changed = (value[0], value[1] * 0.9) if isinstance(value, tuple) else value * 0.9 + 0.01
        monkeypatch.setattr(augmentation, "DA3", {**DA3, key: changed})
        assert built() != reference, key
    with pytest.raises(TypeError):
        DA3["p_noise"] = 0.1  # read-only


def test_v1_elastic_magnitude_range():
    """v1 ``augment_spatial_2``: sigma = scale × patch edge, magnitude U(sigma/8, sigma/2)."""
    np.random.seed(0)
    magnitude = V1ElasticMagnitude()
    draws = np.array([magnitude(torch.zeros(1), patch_size=(128, 64, 32), dim=1,
                                deformation_scale=0.25) for _ in range(2000)])
    sigma = 0.25 * 64
    assert draws.min() >= sigma / 8 and draws.max() <= sigma / 2
    assert draws.min() < sigma / 8 + 0.2 and draws.max() > sigma / 2 - 0.2
    assert magnitude(patch_size=(10, 10, 10), dim=0, deformation_scale=0.0) == 0.0


def test_pipeline_runs_and_pickles(pipeline):
    """The pipeline transforms a patch (every random step forced on) and survives pickling,
    as nnU-Net's augmentation workers need."""
    restored = pickle.loads(pickle.dumps(pipeline))
    for step in restored.transforms:
        if isinstance(step, RandomTransform):
            step.apply_probability = 1.0
        if isinstance(step, SpatialTransform):
            step.p_elastic_deform = step.p_rotation = step.p_scaling = 1.0
    torch.manual_seed(0)
    np.random.seed(0)
    image = torch.rand(1, 40, 40, 40)
    segmentation = (torch.rand(1, 40, 40, 40) > 0.7).to(torch.int16)
    out = restored(image=image, segmentation=segmentation)
    assert out["image"].shape == (1, *PATCH) and out["segmentation"].shape == (1, *PATCH)
    assert torch.isfinite(out["image"]).all()
    assert set(torch.unique(out["segmentation"]).tolist()) <= {0, 1}
