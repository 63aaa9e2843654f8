"""Lesion-aware normalisation: mirroring, branch choice, enantiomorphic filling, and the SyN
pass on a subject with a known pose (3 mm, symmetric grid, to stay fast)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy.spatial.transform import Rotation

from stroke_lesion_app.core import lesion_normalisation as ln
from stroke_lesion_app.core import registration, templates

#: A 3 mm grid symmetric about x = 0 (65 voxels from -96 to 96 mm).
GRID = (65, 78, 63)
AFFINE = np.array([[3.0, 0, 0, -96], [0, 3.0, 0, -134], [0, 0, 3.0, -72], [0, 0, 0, 1]])


def test_mirror_index_on_the_template_grid_and_refusal_elsewhere():
    index = ln.mirror_index(templates.TEMPLATE_AFFINE, templates.TEMPLATE_SHAPE)
    assert index[0] == 196 and index[98] == 98 and np.array_equal(index[index], np.arange(197))
    assert ln.mirror_index(AFFINE, GRID)[0] == 64
    shifted = AFFINE.copy()
    shifted[0, 3] = -98
    assert ln.mirror_index(shifted, GRID) is None
    with pytest.raises(ValueError, match="not symmetric"):
        ln.mirror_image(np.zeros(GRID), shifted)
    data = np.zeros(GRID)
    data[10, 5, 5] = 1  # x = -66 mm → +66 mm = voxel 54
    assert ln.mirror_image(data, AFFINE)[54, 5, 5] == 1


def _geometry(lesion):
    brain = np.zeros(GRID, bool)
    brain[5:60, 5:70, 5:55] = True
    return ln.lesion_geometry(lesion, brain, AFFINE)


def test_branch_choice_follows_the_lesion():
    empty = np.zeros(GRID, bool)
    assert ln.choose_branch(_geometry(empty)) == ("syn", "no lesion")
    left = empty.copy()
    left[10:20, 30:40, 20:30] = True               # x < 0 only
    geometry = _geometry(left)
    assert geometry.right_ml == 0 and geometry.left_ml == pytest.approx(1000 * 27 / 1000)
    assert geometry.mirror_overlap == 0
    assert ln.choose_branch(geometry)[0] == "enantiomorphic"
    both = left | ln.mirror_image(left, AFFINE)     # the same lesion in both hemispheres
    geometry = _geometry(both)
    assert geometry.minor_share == 0.5 and geometry.mirror_overlap == 1.0
    branch, reason = ln.choose_branch(geometry)
    assert branch == "cost-function" and "bilateral" in reason
    huge = empty.copy()
    huge[5:32, 5:70, 5:55] = True                  # the whole left hemisphere
    branch, reason = ln.choose_branch(_geometry(huge))
    assert branch == "cost-function" and "very large" in reason


def test_enantiomorphic_fill_restores_the_mirror_tissue():
    rng = np.random.default_rng(0)
    half = rng.uniform(50, 150, (32, 20, 20)).astype(np.float32)
    healthy = np.concatenate([half, half[::-1][1:]], axis=0)        # symmetric, 63 voxels
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[0, 3] = -62.0
    lesion = np.zeros(healthy.shape, bool)
    lesion[8:14, 6:12, 6:12] = True
    image = healthy.copy()
    image[lesion] = 10.0
    mirrored = ln.mirror_image(image, affine) * 1.25           # another intensity scale
    filled, details = ln.enantiomorphic_fill(nib.Nifti1Image(image, affine), lesion, mirrored,
                                             margin_mm=0.0, feather_mm=0.5)
    data = np.asarray(filled.dataobj)
    assert details["intensity_scale"] == pytest.approx(0.8, abs=0.01)
    np.testing.assert_allclose(data[lesion], healthy[lesion], rtol=0.02)
    far = np.zeros_like(lesion)
    far[40:, :, :] = True
    np.testing.assert_array_equal(data[far], image[far])       # untouched away from it
    assert details["filled_ml"] == pytest.approx(6 ** 3 * 8 / 1000)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """Template brain on the symmetric 3 mm grid, and a native view of it through a known
    pose with a large dark left-hemisphere lesion."""
    folder = tmp_path_factory.mktemp("lesion_norm")
    brain, mask = templates.template_brain(templates.get_template())
    brain3 = resample_from_to(brain, (GRID, AFFINE), order=1)
    mask3 = resample_from_to(mask, (GRID, AFFINE), order=0)
    brain3.to_filename(folder / "template.nii.gz")
    nib.Nifti1Image(np.asanyarray(mask3.dataobj).astype(np.uint8), AFFINE).to_filename(
        folder / "template_mask.nii.gz")
    native_to_template = np.eye(4)
    native_to_template[:3, :3] = Rotation.from_euler("xyz", [8, -5, 4], degrees=True).as_matrix()
    native_to_template[:3, 3] = [5.0, -7.0, 3.0]
    pose = np.linalg.inv(native_to_template)
    shape, native_affine = (62, 70, 56), np.diag([-3.0, -3.0, 3.0, 1.0])
    native_affine[:3, 3] = [93.0, 105.0, -84.0]
    data = brain3.get_fdata().astype(np.float32)
    centre = np.array([-35.0, -15.0, 15.0])                       # left MCA-like territory
    world = nib.affines.apply_affine(AFFINE, np.indices(GRID).reshape(3, -1).T).reshape(
        *GRID, 3)
    lesion = (np.linalg.norm(world - centre, axis=-1) < 22) & (data > 0.1)
    data[lesion] *= 0.25
    moved = resample_from_to(nib.Nifti1Image(data, pose @ AFFINE), (shape, native_affine),
                             order=1)
    moved_mask = resample_from_to(nib.Nifti1Image(mask3.get_fdata(), pose @ AFFINE),
                                  (shape, native_affine), order=0)
    moved_lesion = resample_from_to(nib.Nifti1Image(lesion.astype(np.float32), pose @ AFFINE),
                                    (shape, native_affine), order=0)
    nib.Nifti1Image((moved.get_fdata() * 1000).astype(np.int16), native_affine).to_filename(
        folder / "brain.nii.gz")
    for name, image in (("mask", moved_mask), ("lesion", moved_lesion)):
        nib.Nifti1Image((image.get_fdata() > 0.5).astype(np.uint8), native_affine).to_filename(
            folder / f"{name}.nii.gz")
    first = registration.register_to_template(
        folder / "brain.nii.gz", folder / "template.nii.gz", folder / "affine",
        moving_mask=folder / "mask.nii.gz", fixed_mask=folder / "template_mask.nii.gz",
        num_threads=2)
    return folder, native_to_template, first


@pytest.mark.parametrize("branch", ["auto", "cost-function"])
def test_normalise_with_lesion_keeps_the_pose(subject, tmp_path, branch):
    folder, native_to_template, first = subject
    result = ln.normalise_with_lesion(
        folder / "brain.nii.gz", folder / "mask.nii.gz", folder / "lesion.nii.gz",
        first.anat2std_xfm, first.std2anat_xfm, folder / "template.nii.gz",
        folder / "template_mask.nii.gz", tmp_path, branch=branch, num_threads=2)
    expected = "enantiomorphic" if branch == "auto" else "cost-function"
    assert result.branch == expected and result.record["Branch"] == expected
    assert result.anat2group_xfm.suffix == ".h5" and result.group2anat_xfm.suffix == ".h5"
    json.dumps(result.record)                                      # sidecar-ready
    assert result.record["LesionGeometry"]["right_ml"] < 0.1 * result.record[
        "LesionGeometry"]["left_ml"]
    if expected == "enantiomorphic":
        assert result.filled is not None and result.record["Filling"]["filled_ml"] > 20
    else:
        assert result.record["MaskedOutML"] > 20
    # the composite carries the first-pass affine: template points land where the pose says
    mask = nib.load(folder / "template_mask.nii.gz")
    points = nib.affines.apply_affine(AFFINE, np.argwhere(mask.get_fdata() > 0)[::9])
    truth = nib.affines.apply_affine(np.linalg.inv(native_to_template), points)
    estimated = registration.transform_points(points, result.anat2group_xfm)
    assert np.linalg.norm(estimated - truth, axis=1).mean() <= 3.0
    back = registration.transform_points(estimated, result.group2anat_xfm)
    assert np.linalg.norm(back - points, axis=1).mean() <= 1.0


def test_unknown_branch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        ln.normalise_with_lesion(*(tmp_path / "x",) * 8, branch="elastic")
