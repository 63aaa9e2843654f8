"""Registration and back-projection on images with a known transform."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy.spatial.transform import Rotation

from stroke_lesion_app.core import registration, templates


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def template_3mm(tmp_path_factory):
    """Template brain and mask resampled to 3 mm (keeps the tests fast)."""
    folder = tmp_path_factory.mktemp("template")
    brain, mask = templates.template_brain(templates.get_template())
    grid = (66, 78, 63)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = templates.TEMPLATE_AFFINE[:3, 3]
    brain_3mm = resample_from_to(brain, (grid, affine), order=1)
    mask_3mm = resample_from_to(mask, (grid, affine), order=0)
    brain_3mm.to_filename(folder / "brain.nii.gz")
    nib.Nifti1Image(np.asanyarray(mask_3mm.dataobj).astype(np.uint8),
                    affine).to_filename(folder / "mask.nii.gz")
    return folder


def _known_transform():
    """native → template world transform A (rotation 12°/-8°/5°, shift, 5 % scaling)."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [12, -8, 5], degrees=True).as_matrix() * 1.05
    matrix[:3, 3] = [6.0, -9.0, 4.0]
    return matrix


@pytest.fixture(scope="module")
def native_subject(template_3mm, tmp_path_factory):
    """The template brain seen through a known pose, stored LPS at 3.5×3.5×4 mm."""
    folder = tmp_path_factory.mktemp("native")
    native_to_template = _known_transform()
    zooms = np.array([3.5, 3.5, 4.0])
    shape = (60, 64, 52)
    affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])   # LPS storage
    affine[:3, 3] = [105.0, 112.0, -100.0]
    brain = nib.load(template_3mm / "brain.nii.gz")
    mask = nib.load(template_3mm / "mask.nii.gz")
    # native(x) = template(A x): view the template through the inverse pose
    pose = np.linalg.inv(native_to_template)
    moved_brain = resample_from_to(nib.Nifti1Image(brain.get_fdata(), pose @ brain.affine),
                                   (shape, affine), order=1)
    moved_mask = resample_from_to(nib.Nifti1Image(mask.get_fdata(), pose @ mask.affine),
                                  (shape, affine), order=0)
    nib.Nifti1Image((moved_brain.get_fdata() * 1000).astype(np.int16),
                    affine).to_filename(folder / "brain.nii.gz")
    nib.Nifti1Image(moved_mask.get_fdata().astype(np.uint8), affine).to_filename(
        folder / "mask.nii.gz")
    return folder, native_to_template


@pytest.fixture(scope="module")
def affine_result(native_subject, template_3mm):
    folder, _ = native_subject
    return registration.register_to_template(
        folder / "brain.nii.gz", template_3mm / "brain.nii.gz", folder / "affine",
        moving_mask=folder / "mask.nii.gz", fixed_mask=template_3mm / "mask.nii.gz",
        num_threads=2)


def test_affine_registration_error_below_2mm(native_subject, template_3mm, affine_result):
    _, native_to_template = native_subject
    mask = nib.load(template_3mm / "mask.nii.gz")
    voxels = np.argwhere(np.asanyarray(mask.dataobj) > 0)[::7]
    points = nib.affines.apply_affine(mask.affine, voxels)           # template mm
    estimated = registration.transform_points(points, affine_result.anat2std_xfm)
    truth = nib.affines.apply_affine(np.linalg.inv(native_to_template), points)
    error = np.linalg.norm(estimated - truth, axis=1)
    assert error.mean() <= 2.0, f"mean registration error {error.mean():.2f} mm"
    assert affine_result.anat2std_xfm.suffix == ".mat"
    assert nib.load(affine_result.std_t1w).shape == (66, 78, 63)


def test_round_trip_of_a_label_image(native_subject, template_3mm, affine_result, tmp_path):
    """native → template → native keeps the brain mask (Dice ≥ 0.95) on the exact native grid."""
    folder, _ = native_subject
    to_template = registration.apply_transform(
        folder / "mask.nii.gz", template_3mm / "brain.nii.gz", affine_result.anat2std_xfm,
        tmp_path / "std_mask.nii.gz", interpolator="genericLabel")
    back = registration.apply_transform(
        to_template, folder / "brain.nii.gz", affine_result.std2anat_xfm,
        tmp_path / "native_mask.nii.gz", interpolator="genericLabel")
    native = nib.load(folder / "mask.nii.gz")
    result = nib.load(back)
    assert result.shape == native.shape
    np.testing.assert_allclose(result.affine, native.affine)
    assert nib.aff2axcodes(result.affine) == ("L", "P", "S")
    assert result.get_data_dtype() == np.uint8
    assert _dice(result.get_fdata() > 0, native.get_fdata() > 0) >= 0.95


def test_probability_back_projection_is_linear(native_subject, template_3mm, affine_result,
                                               tmp_path):
    folder, _ = native_subject
    brain = nib.load(template_3mm / "brain.nii.gz")
    nib.Nifti1Image(np.full(brain.shape, 0.25, np.float32), brain.affine).to_filename(
        tmp_path / "prob.nii.gz")
    back = nib.load(registration.apply_transform(
        tmp_path / "prob.nii.gz", folder / "brain.nii.gz", affine_result.std2anat_xfm,
        tmp_path / "native_prob.nii.gz", interpolator="linear"))
    values = back.get_fdata()
    assert back.get_data_dtype() == np.float32
    inside = values > 0
    np.testing.assert_allclose(values[inside & (values > 0.2)], 0.25, atol=1e-5)


def test_lesion_masked_syn(native_subject, template_3mm, tmp_path):
    """SyN with a lesion excluded from the metric writes composite .h5 transforms."""
    folder, native_to_template = native_subject
    mask = nib.load(folder / "mask.nii.gz")
    lesion = np.zeros(mask.shape, np.uint8)
    lesion[25:32, 30:36, 24:30] = 1
    nib.Nifti1Image(lesion, mask.affine).to_filename(tmp_path / "lesion.nii.gz")
    result = registration.register_to_template(
        folder / "brain.nii.gz", template_3mm / "brain.nii.gz", tmp_path / "syn", mode="syn",
        moving_mask=folder / "mask.nii.gz", lesion_mask=tmp_path / "lesion.nii.gz",
        num_threads=2)
    assert result.anat2std_xfm.suffix == ".h5" and result.std2anat_xfm.suffix == ".h5"
    points = nib.affines.apply_affine(mask.affine, np.argwhere(mask.get_fdata() > 0)[::11])
    truth = nib.affines.apply_affine(native_to_template, points)
    # ANTs maps points with the inverse transform of images: std2anat moves native → template
    estimated = registration.transform_points(points, result.std2anat_xfm)
    assert np.linalg.norm(estimated - truth, axis=1).mean() <= 2.5


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="registration mode 'rigid' unknown"):
        registration.register_to_template(tmp_path / "a", tmp_path / "b", tmp_path, mode="rigid")
    with pytest.raises(ValueError, match="interpolator 'cubic' unknown"):
        registration.apply_transform(tmp_path / "a", tmp_path / "b", tmp_path / "c",
                                     tmp_path / "d", interpolator="cubic")


def test_linear_schedule_in_millimetres():
    """Shrink factors follow the fixed image's voxel size; coinciding levels merge (#18)."""
    from stroke_lesion_app.core.registration import AFFINE_SCHEDULE, RIGID_SCHEDULE

    at_1mm = RIGID_SCHEDULE.ants_arguments(1.0)
    assert at_1mm["aff_shrink_factors"] == (8, 4) and at_1mm["aff_iterations"] == (1000, 500)
    assert at_1mm["smoothing_in_mm"] and at_1mm["aff_random_sampling_rate"] == 0.1
    assert AFFINE_SCHEDULE.ants_arguments(1.0)["aff_shrink_factors"] == (4, 2)
    at_3mm = AFFINE_SCHEDULE.ants_arguments(3.0)  # 4 mm and 2 mm both round to 1
    assert at_3mm["aff_shrink_factors"] == (1,) and at_3mm["aff_smoothing_sigmas"] == (2.0,)
    assert RIGID_SCHEDULE.ants_arguments(2.0)["aff_shrink_factors"] == (4, 2)


def test_transform_chain_goes_in_list_order(tmp_path):
    """A chain [A, B] takes a reference point through A, then B (antspyx's order): the
    lesion-aware maps rely on it (``[anat2group, std2anat]``)."""
    import ants

    scale = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                       matrix=np.diag([2.0, 2.0, 2.0]), offset=[0, 0, 0])
    shift = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                       matrix=np.eye(3), offset=[10, 0, 0])
    ants.write_transform(scale, str(tmp_path / "scale.mat"))
    ants.write_transform(shift, str(tmp_path / "shift.mat"))
    ramp = np.repeat(np.repeat(np.arange(40, dtype=np.float32)[:, None, None], 3, 1), 3, 2)
    # LPS storage: voxel index = ITK (LPS) coordinate, where the transforms act
    nib.Nifti1Image(ramp, np.diag([-1.0, -1.0, 1.0, 1.0])).to_filename(tmp_path / "ramp.nii.gz")
    out = registration.apply_transform(
        tmp_path / "ramp.nii.gz", tmp_path / "ramp.nii.gz",
        [tmp_path / "scale.mat", tmp_path / "shift.mat"], tmp_path / "out.nii.gz")
    # x = 1 → scale → 2 → shift → 12 (the other order would give 22)
    assert np.asarray(nib.load(out).dataobj)[1, 1, 1] == pytest.approx(12.0)
