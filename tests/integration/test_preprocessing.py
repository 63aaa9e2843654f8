"""Preprocessing accuracy on synthetic heads with known truth (generator: issue #4).

Heads are 3 mm, stored in varied orientations with a synthetic skull, bias field and pose; the
generator records the true brain mask and the native ↔ template affine.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import brainmask, images, intensity, registration, templates
from stroke_lesion_app.synthetic import synthesize_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRUTH = Path("derivatives") / "synthetic-truth"


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "bids"
    synthesize_dataset(root, n_subjects=2, seed=11, resolution=3)
    return root


@pytest.fixture(scope="module")
def preprocessed(dataset, tmp_path_factory):
    """N4 → deepbet → affine registration for every subject, as the workflow does."""
    work = tmp_path_factory.mktemp("preprocessed")
    template_brain, template_mask = templates.template_brain(templates.get_template())
    template_brain.to_filename(work / "tpl_brain.nii.gz")
    template_mask.to_filename(work / "tpl_mask.nii.gz")
    results = {}
    for t1w in sorted(dataset.glob("sub-*/anat/*_T1w.nii.gz")):
        subject = t1w.name.split("_")[0]
        folder = work / subject
        folder.mkdir()
        images.conform_t1w(images.load_t1w(t1w)).to_filename(folder / "t1w.nii.gz")
        intensity.n4_bias_correct(folder / "t1w.nii.gz", folder / "t1w_n4.nii.gz", 2)
        head = nib.load(folder / "t1w_n4.nii.gz")
        mask = brainmask.brain_mask(head, "deepbet", num_threads=2)
        mask.to_filename(folder / "mask.nii.gz")
        nib.Nifti1Image(head.get_fdata(dtype=np.float32) * mask.get_fdata(dtype=np.float32),
                        head.affine).to_filename(folder / "brain.nii.gz")
        result = registration.register_to_template(
            folder / "brain.nii.gz", work / "tpl_brain.nii.gz", folder, mode="affine",
            moving_mask=folder / "mask.nii.gz", fixed_mask=work / "tpl_mask.nii.gz",
            moving_full=folder / "t1w_n4.nii.gz", num_threads=2)
        results[subject] = (folder, result)
    return work, results


def _truth(dataset, subject, name):
    return dataset / TRUTH / subject / "anat" / f"{subject}_{name}"


def test_brain_mask_dice_against_truth(dataset, preprocessed):
    for subject, (folder, _) in preprocessed[1].items():
        truth = nib.as_closest_canonical(nib.load(_truth(dataset, subject,
                                                         "desc-brain_mask.nii.gz")))
        mask = nib.load(folder / "mask.nii.gz")
        np.testing.assert_allclose(mask.affine, truth.affine, atol=1e-4)
        assert _dice(mask.get_fdata() > 0, truth.get_fdata() > 0) >= 0.95, subject


def test_affine_registration_error_against_truth(dataset, preprocessed):
    work, results = preprocessed
    mask = nib.load(work / "tpl_mask.nii.gz")
    points = nib.affines.apply_affine(mask.affine,
                                      np.argwhere(np.asanyarray(mask.dataobj) > 0)[::500])
    for subject, (_, result) in results.items():
        truth = json.loads(_truth(dataset, subject,
                                  "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.json")
                           .read_text())
        expected = nib.affines.apply_affine(np.array(truth["TemplateToNative"]), points)
        estimated = registration.transform_points(points, result.anat2std_xfm)
        error = np.linalg.norm(estimated - expected, axis=1).mean()
        assert error <= 2.0, f"{subject}: mean registration error {error:.2f} mm"


def test_native_template_native_round_trip(dataset, preprocessed, tmp_path):
    """The truth brain mask survives native → template → native with Dice ≥ 0.95."""
    for subject, (folder, result) in preprocessed[1].items():
        truth_path = _truth(dataset, subject, "desc-brain_mask.nii.gz")
        std = registration.apply_transform(truth_path, preprocessed[0] / "tpl_brain.nii.gz",
                                           result.anat2std_xfm, tmp_path / "std.nii.gz",
                                           "genericLabel")
        back = registration.apply_transform(std, truth_path, result.std2anat_xfm,
                                            tmp_path / "back.nii.gz", "genericLabel")
        truth, back = nib.load(truth_path), nib.load(back)
        assert back.shape == truth.shape
        np.testing.assert_allclose(back.affine, truth.affine, atol=1e-5)
        assert _dice(back.get_fdata() > 0, truth.get_fdata() > 0) >= 0.95, subject


def test_template_lesion_projects_onto_native_truth(dataset, preprocessed, tmp_path):
    """The truth template-space lesion mask, back-projected, overlaps the native truth."""
    scored = 0
    for subject, (folder, result) in preprocessed[1].items():
        native_truth = _truth(dataset, subject, "label-L_mask.nii.gz")
        if nib.load(native_truth).get_fdata().sum() < 50:
            continue  # too small at 3 mm to score
        back = registration.apply_transform(
            _truth(dataset, subject, "space-MNI152NLin2009aSym_label-L_mask.nii.gz"),
            native_truth, result.std2anat_xfm, tmp_path / f"{subject}.nii.gz", "genericLabel")
        dice = _dice(nib.load(back).get_fdata() > 0, nib.load(native_truth).get_fdata() > 0)
        assert dice >= 0.6, f"{subject}: lesion back-projection Dice {dice:.2f}"
        scored += 1
    assert scored, "no subject has a lesion large enough to score at 3 mm; change the seed"


def test_lesion_masked_syn_on_the_largest_lesion(dataset, preprocessed, tmp_path):
    """SyN with the true lesion excluded from its metric stays on the true transform."""
    work, results = preprocessed
    volumes = {subject: nib.load(_truth(dataset, subject, "label-L_mask.nii.gz")).get_fdata().sum()
               for subject in results}
    subject = max(volumes, key=volumes.get)
    folder, _ = results[subject]
    result = registration.register_to_template(
        folder / "brain.nii.gz", work / "tpl_brain.nii.gz", tmp_path, mode="syn",
        moving_mask=folder / "mask.nii.gz", fixed_mask=work / "tpl_mask.nii.gz",
        lesion_mask=_truth(dataset, subject, "label-L_mask.nii.gz"), num_threads=2)
    mask = nib.load(work / "tpl_mask.nii.gz")
    points = nib.affines.apply_affine(mask.affine,
                                      np.argwhere(np.asanyarray(mask.dataobj) > 0)[::500])
    truth = json.loads(_truth(dataset, subject,
                              "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.json").read_text())
    expected = nib.affines.apply_affine(np.array(truth["TemplateToNative"]), points)
    error = np.linalg.norm(registration.transform_points(points, result.anat2std_xfm)
                           - expected, axis=1).mean()
    # the truth affine leaves out the generator's smooth warp (≤ 4 mm), which SyN follows
    assert error <= 3.0, f"{subject}: mean error {error:.2f} mm with the lesion masked"


def test_lesion_to_native_workflow(dataset, preprocessed, tmp_path):
    """init_lesion_to_native_wf puts template-space maps exactly on the native T1w grid."""
    from stroke_lesion_app.workflows.projection import init_lesion_to_native_wf

    subject, (folder, result) = next(iter(preprocessed[1].items()))
    std_mask = _truth(dataset, subject, "space-MNI152NLin2009aSym_label-L_mask.nii.gz")
    mask = nib.load(std_mask)
    nib.Nifti1Image(mask.get_fdata(dtype=np.float32) * 0.8, mask.affine).to_filename(
        tmp_path / "probseg.nii.gz")
    workflow = init_lesion_to_native_wf(omp_nthreads=2)
    workflow.base_dir = str(tmp_path / "work")
    inputnode = workflow.get_node("inputnode")
    inputnode.inputs.std_lesion_probseg = str(tmp_path / "probseg.nii.gz")
    inputnode.inputs.std_lesion_mask = str(std_mask)
    inputnode.inputs.std2anat_xfm = str(result.std2anat_xfm)
    inputnode.inputs.t1w_preproc = str(folder / "t1w_n4.nii.gz")
    graph = workflow.run(plugin="Linear")
    outputs = {node.name: node.result.outputs for node in graph.nodes()}
    native = nib.load(folder / "t1w_n4.nii.gz")
    probseg = nib.load(outputs["project_probseg"].out_file)
    lesion = nib.load(outputs["project_mask"].out_file)
    for image in (probseg, lesion):
        assert image.shape == native.shape
        np.testing.assert_allclose(image.affine, native.affine, atol=1e-5)
    assert lesion.get_data_dtype() == np.uint8 and probseg.get_data_dtype() == np.float32
    assert 0 < probseg.get_fdata().max() <= 0.8 + 1e-5
    truth = nib.as_closest_canonical(nib.load(_truth(dataset, subject, "label-L_mask.nii.gz")))
    inside, reference = lesion.get_fdata() > 0, truth.get_fdata() > 0
    assert 2 * (inside & reference).sum() / (inside.sum() + reference.sum()) >= 0.6
