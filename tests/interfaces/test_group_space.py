"""Group-space maps through the lesion-aware transform, on MNI152NLin2009aSym and on the
MNI152NLin6Asym stand-in (tests/fsl_standin.py: the shipped template with a known shift and
scaling), with the transform chain in the order points travel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import template_transforms, templates
from stroke_lesion_app.core.group_stacks import GROUP_GRIDS
from stroke_lesion_app.interfaces.group_space import GroupSpaceMaps
from tests.fsl_standin import make_fsl_standin, standin_to_template


@pytest.fixture(scope="module")
def identity_subject(tmp_path_factory):
    """A 'native' image that is the template grid itself, identity transforms, and a ball
    lesion at (-30, -10, 20) mm drawn in MNI152NLin2009aSym."""
    import ants

    folder = tmp_path_factory.mktemp("group_space")
    identity = ants.create_ants_transform(transform_type="AffineTransform", dimension=3)
    ants.write_transform(identity, str(folder / "identity.mat"))
    brain, _ = templates.template_brain(templates.get_template())
    brain.to_filename(folder / "template.nii.gz")
    world = nib.affines.apply_affine(brain.affine, np.indices(brain.shape).reshape(3, -1).T)
    ball = (np.linalg.norm(world - [-30, -10, 20], axis=1) < 12).reshape(brain.shape)
    nib.Nifti1Image(ball.astype(np.uint8), brain.affine).to_filename(folder / "lesion.nii.gz")
    nib.Nifti1Image(ball * 0.9, brain.affine).to_filename(folder / "probseg.nii.gz")
    return folder, ball


def test_model_maps_go_through_both_transforms(identity_subject, tmp_path):
    folder, ball = identity_subject
    maps = GroupSpaceMaps(std_lesion_mask=str(folder / "lesion.nii.gz"),
                          std_lesion_probseg=str(folder / "probseg.nii.gz"),
                          std2anat_xfm=str(folder / "identity.mat"),
                          anat2group_xfm=str(folder / "identity.mat"),
                          reference=str(folder / "template.nii.gz"))
    result = maps.run(cwd=str(tmp_path)).outputs
    assert result.chain == ["anat2group_xfm", "std2anat_xfm"]
    np.testing.assert_array_equal(np.asarray(nib.load(result.mask).dataobj) > 0, ball)
    assert np.asarray(nib.load(result.probseg).dataobj).max() == pytest.approx(0.9, abs=1e-5)
    assert result.interpolation == {"mask": "genericLabel", "probseg": "linear"}


def test_fsl_space_maps_land_on_the_fsl_grid(identity_subject, tmp_path, monkeypatch):
    folder, _ = identity_subject
    home = tmp_path / "templateflow"
    make_fsl_standin(home)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    monkeypatch.setenv("STROKE_LESION_APP_CACHE", str(tmp_path / "cache"))
    fast = template_transforms.template_to_fsl_transform(tmp_path / "cache", num_threads=2,
                                                         quality="test")
    monkeypatch.setattr(template_transforms, "template_to_fsl_transform",
                        lambda **_: fast)
    maps = GroupSpaceMaps(space="MNI152NLin6Asym", lesion_mask=str(folder / "lesion.nii.gz"),
                          anat2group_xfm=str(folder / "identity.mat"),
                          reference=str(folder / "template.nii.gz"))
    result = maps.run(cwd=str(tmp_path)).outputs
    assert result.chain == ["MNI152NLin2009aSym_to_MNI152NLin6Asym_xfm", "anat2group_xfm"]
    image = nib.load(result.mask)
    grid = GROUP_GRIDS["MNI152NLin6Asym"]
    assert image.shape == grid.shape == (182, 218, 182)
    np.testing.assert_allclose(image.affine, grid.affine)          # FSL's LAS grid
    # the ball lands where the stand-in's known mapping says (centroid within 1.5 mm)
    voxels = np.argwhere(np.asarray(image.dataobj) > 0)
    centroid = standin_to_template(nib.affines.apply_affine(image.affine, voxels)).mean(0)
    assert np.linalg.norm(centroid - [-30, -10, 20]) < 1.5
