"""End to end: the BIDS-App on a synthetic subject with default settings (deepbet, affine,
the demo bundle), then the group level.

The subject (seed 2000, 2 mm voxels) is the first of the demo bundle's held-out test set
(``scripts/train_demo_bundle.sh``): three large lesions, about 34 mL.

The lesion Dice floor comes from the demo bundle's recorded performance: on this subject the
whole pipeline (estimated registration, native and template space) gave Dice 0.72 (2026-11-26);
with the generator's known affine the bundle's own held-out evaluation gave 0.73
(``stroke_lesion_app/data/models/demo/evaluation/demo_cases.tsv``). The floor keeps a margin of
about 0.2 for registration and interpolation differences across machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.core.bundle import DEMO_WARNING, load_bundle
from stroke_lesion_app.synthetic import synthesize_dataset
from tests.conftest import leftover_temporary_files, tree_checksums

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Lesion Dice floor of the demo bundle on this subject, native and template space (measured
#: 0.72 on both; see the module docstring).
LESION_DICE_FLOOR = 0.5

EXPECTED = [  # every derivative of one image, with its JSON sidecar
    "desc-preproc_T1w.nii.gz", "desc-brain_mask.nii.gz",
    "space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz",
    "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat",
    "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.mat",
    "label-L_mask.nii.gz", "label-L_probseg.nii.gz",
    "space-MNI152NLin2009aSym_label-L_mask.nii.gz",
    "space-MNI152NLin2009aSym_label-L_probseg.nii.gz",
    "label-L_desc-lesionload_stats.tsv", "label-L_desc-components_stats.tsv",
    # the lesion-aware second normalisation and the group-space maps
    "from-T1w_to-MNI152NLin2009aSym_mode-image_desc-lesionaware_xfm.h5",
    "from-MNI152NLin2009aSym_to-T1w_mode-image_desc-lesionaware_xfm.h5",
    "space-MNI152NLin2009aSym_label-L_desc-lesionaware_mask.nii.gz",
    "space-MNI152NLin2009aSym_label-L_desc-lesionaware_probseg.nii.gz",
]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_participant_and_group_on_synthetic_subject(tmp_path, monkeypatch):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)  # no MNI152NLin6Asym here
    bids = tmp_path / "bids"
    synthesize_dataset(bids, n_subjects=1, seed=2000, resolution=2)
    before = tree_checksums(bids)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(bids), str(out), "participant", "-w",
                                      str(tmp_path / "work"), "--nprocs", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert tree_checksums(bids) == before
    anat = out / "sub-01" / "anat"
    expected = {f"sub-01_{name}" for name in EXPECTED}
    expected |= {name.split(".")[0] + ".json" for name in expected}
    assert {path.name for path in anat.iterdir()} == expected
    assert not leftover_temporary_files(out)

    # brain mask against the generator's truth: native outputs lie on the raw T1w's own grid
    truth_dir = bids / "derivatives/synthetic-truth/sub-01/anat"
    raw = nib.load(bids / "sub-01/anat/sub-01_T1w.nii.gz")
    brain_truth = nib.load(truth_dir / "sub-01_desc-brain_mask.nii.gz")
    brain = nib.load(anat / "sub-01_desc-brain_mask.nii.gz")
    assert brain.shape == raw.shape == brain_truth.shape
    np.testing.assert_allclose(brain.affine, raw.affine, atol=1e-4)
    np.testing.assert_allclose(brain.affine, brain_truth.affine, atol=1e-4)
    assert _dice(brain.get_fdata(), brain_truth.get_fdata()) >= 0.95

    # the model's lesion, native grid, against the truth
    lesion_truth = nib.load(truth_dir / "sub-01_label-L_mask.nii.gz")
    lesion = nib.load(anat / "sub-01_label-L_mask.nii.gz")
    probability = nib.load(anat / "sub-01_label-L_probseg.nii.gz")
    for image in (lesion, probability):
        assert image.shape == brain.shape
        np.testing.assert_allclose(image.affine, brain.affine, atol=1e-4)
    assert set(np.unique(np.asarray(lesion.dataobj))) <= {0, 1}
    values = probability.get_fdata()
    assert values.min() >= 0 and values.max() <= 1
    assert _dice(lesion.get_fdata(), lesion_truth.get_fdata()) >= LESION_DICE_FLOOR
    std_lesion = nib.load(anat / "sub-01_space-MNI152NLin2009aSym_label-L_mask.nii.gz")
    assert std_lesion.shape == (197, 233, 189)
    from stroke_lesion_app.core.templates import TEMPLATE_AFFINE

    np.testing.assert_allclose(std_lesion.affine, TEMPLATE_AFFINE)
    # the native mask is the template mask carried back: same volume up to interpolation
    std_ml = float(np.asarray(std_lesion.dataobj).sum()) / 1000
    native_ml = float(np.asarray(lesion.dataobj).sum()) * float(
        np.prod(lesion.header.get_zooms()[:3])) / 1000
    assert native_ml == pytest.approx(std_ml, rel=0.25, abs=0.5)
    std_truth = nib.load(truth_dir / "sub-01_space-MNI152NLin2009aSym_label-L_mask.nii.gz")
    assert _dice(std_lesion.get_fdata(), std_truth.get_fdata()) >= LESION_DICE_FLOOR

    # provenance: the bundle's identity and the settings in every lesion map's sidecar
    bundle = load_bundle("demo")
    for name in ("label-L_mask", "label-L_probseg", "space-MNI152NLin2009aSym_label-L_mask",
                 "space-MNI152NLin2009aSym_label-L_probseg"):
        sidecar = json.loads((anat / f"sub-01_{name}.json").read_text())
        assert sidecar["Model"]["name"] == "demo" and sidecar["Demo"] is True
        assert sidecar["Model"]["manifest_sha256"] == bundle.identity()["manifest_sha256"]
        assert sidecar["Inference"]["TestTimeAugmentation"] == "mirroring"
        assert sidecar["LesionSource"] == "model"
    table = (anat / "sub-01_label-L_desc-lesionload_stats.tsv").read_text().splitlines()
    header, row = table[0].split("\t"), table[1].split("\t")
    voxel_ml = float(np.prod(lesion.header.get_zooms()[:3])) / 1000
    assert float(row[header.index("volume_ml")]) == pytest.approx(
        float(np.asarray(lesion.dataobj).sum()) * voxel_ml, rel=1e-3)
    report = (out / "sub-01.html").read_text()
    assert DEMO_WARNING.split(":")[0] in report and f"demo {bundle.version}" in report

    # group level: one cohort row measured from the model's mask
    result = CliRunner().invoke(cli, [str(bids), str(out), "group"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cohort = (out / "group" / "label-L_desc-lesionload_stats.tsv").read_text().splitlines()
    assert len(cohort) == 2 and "sub-01" in cohort[1]
    assert (out / "group" / "group.html").is_file()

    # the official BIDS validator accepts the participant + group outputs: no error
    validator = subprocess.run([str(Path(sys.executable).parent / "bids-validator-deno"),
                                str(out), "--format", "json"],
                               capture_output=True, text=True, timeout=600)
    issues = json.loads(validator.stdout)["issues"]["issues"]
    errors = [(issue["code"], issue.get("location"), issue.get("subCode"))
              for issue in issues if issue.get("severity") == "error"]
    assert errors == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["raw"] == "../bids"
    sidecar = json.loads((anat / "sub-01_label-L_mask.json").read_text())
    assert sidecar["Type"] == "Lesion"
    assert sidecar["SpatialReference"] == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    assert sidecar["Sources"] == [
        "bids::sub-01/anat/sub-01_space-MNI152NLin2009aSym_label-L_mask.nii.gz"]

    # the group-space map: lesion-aware branch recorded, close to the first-pass map
    group_mask = nib.load(anat / "sub-01_space-MNI152NLin2009aSym_label-L_desc-lesionaware_"
                                 "mask.nii.gz")
    np.testing.assert_allclose(group_mask.affine, TEMPLATE_AFFINE)
    group_data = np.asarray(group_mask.dataobj).copy()      # the file is rewritten below
    meta = json.loads((anat / "sub-01_space-MNI152NLin2009aSym_label-L_desc-lesionaware_"
                              "mask.json").read_text())
    assert meta["Normalisation"]["Branch"] in ("enantiomorphic", "cost-function")
    assert meta["LesionSource"] == "model" and meta["Interpolation"] == "genericLabel"
    assert meta["TransformChain"][0].endswith("desc-lesionaware_xfm.h5")
    assert _dice(group_data, std_truth.get_fdata()) >= LESION_DICE_FLOOR
    stack = nib.load(out / "group" / "space-MNI152NLin2009aSym_label-L_desc-stack_mask.nii.gz")
    assert stack.shape == (197, 233, 189, 1) and stack.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(stack.dataobj)[..., 0],
                                  group_data)

    # edited masks round trip: the user erases the largest component by hand; a re-run
    # re-measures from the edited mask with the saved transforms, and the group follows
    from scipy import ndimage

    edited_dir = tmp_path / "edited"
    (edited_dir / "sub-01" / "anat").mkdir(parents=True)
    labels, count = ndimage.label(np.asarray(lesion.dataobj) > 0)
    assert count >= 2
    sizes = ndimage.sum(labels > 0, labels, range(1, count + 1))
    edited = ((labels > 0) & (labels != 1 + int(np.argmax(sizes)))).astype(np.uint8)
    edited_path = edited_dir / "sub-01" / "anat" / "sub-01_label-L_mask.nii.gz"
    nib.Nifti1Image(edited, lesion.affine, lesion.header).to_filename(edited_path)
    xfm = anat / "sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-lesionaware_xfm.h5"
    xfm_bytes = xfm.read_bytes()
    result = CliRunner().invoke(cli, [str(bids), str(out), "participant", "-w",
                                      str(tmp_path / "work_edit"), "--nprocs", "2",
                                      "--lesion-masks", str(edited_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert xfm.read_bytes() == xfm_bytes                   # transforms reused, not recomputed
    table = (anat / "sub-01_label-L_desc-lesionload_stats.tsv").read_text().splitlines()
    header, row = table[0].split("\t"), table[1].split("\t")
    assert float(row[header.index("volume_ml")]) == pytest.approx(edited.sum() * voxel_ml,
                                                                   rel=1e-3)
    load_meta = json.loads((anat / "sub-01_label-L_desc-lesionload_stats.json").read_text())
    assert load_meta["LesionSource"] == "edited" and load_meta["Sources"] == [str(edited_path)]
    assert (anat / "sub-01_space-MNI152NLin2009aSym_label-L_desc-edited_mask.nii.gz").is_file()
    meta = json.loads((anat / "sub-01_space-MNI152NLin2009aSym_label-L_desc-lesionaware_"
                              "mask.json").read_text())
    assert meta["LesionSource"] == "edited" and "TransformReused" in meta["Normalisation"]
    edited_group = np.asarray(nib.load(anat / "sub-01_space-MNI152NLin2009aSym_label-L_desc-"
                                              "lesionaware_mask.nii.gz").dataobj)
    assert 0 < edited_group.sum() < 0.8 * group_data.sum()
    result = CliRunner().invoke(cli, [str(bids), str(out), "group"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cohort = (out / "group" / "label-L_desc-lesionload_stats.tsv").read_text().splitlines()
    assert "edited" in cohort[1]
    stack = nib.load(out / "group" / "space-MNI152NLin2009aSym_label-L_desc-stack_mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(stack.dataobj)[..., 0], edited_group)
    assert not (out / "group" / "space-MNI152NLin2009aSym_label-L_desc-stack_probseg.nii.gz"
                ).exists()                         # the model's probability no longer matches

    # an edited mask on another grid: one line naming the file, nothing re-measured
    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    wrong = wrong_dir / "sub-01_label-L_mask.nii.gz"
    nib.Nifti1Image(edited[1:], lesion.affine).to_filename(wrong)
    result = CliRunner().invoke(cli, [str(bids), str(out), "participant", "-w",
                                      str(tmp_path / "work_edit"), "--lesion-masks",
                                      str(wrong_dir)])
    assert result.exit_code == 1
    line = next(text for text in result.output.splitlines() if str(wrong) in text)
    assert "grid" in line and "sub-01_label-L_mask.nii.gz" in line
