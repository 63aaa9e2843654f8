"""The synthetic stroke-data generator (issue #4): BIDS validity, truth, sizes, determinism, CLI.

Everything runs at ``resolution=3`` (voxels of 2.7-3.6 mm) so the whole file stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage as ndi

from stroke_lesion_app import __version__
from stroke_lesion_app.cli.model import cli
from stroke_lesion_app.synthetic import (
    SMALL_LESION_VOXELS,
    TEMPLATE_AFFINE,
    TEMPLATE_SHAPE,
    TRUTH_PIPELINE,
    draw_acquisition,
    draw_lesions,
    load_template,
    synthesize_dataset,
)
from stroke_lesion_app.synthetic import dataset as dataset_module
from stroke_lesion_app.synthetic.lesions import draw_lesion_count

RESOLUTION = 3.0
XFM = "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three subjects, seed 0, ~3 mm voxels, orientations RAS / LPS / LIA."""
    root = tmp_path_factory.mktemp("synthetic") / "bids"
    summary = synthesize_dataset(root, n_subjects=3, seed=0, resolution=RESOLUTION)
    return root, summary


def _scans(root: Path):
    """(T1w image, lesion mask, brain mask, lesions JSON, xfm JSON) per T1w under ``root``."""
    for t1w in sorted(root.glob("sub-*/**/anat/*_T1w.nii.gz")):
        prefix = t1w.name[: -len("_T1w.nii.gz")]
        truth = root / "derivatives" / TRUTH_PIPELINE / t1w.parent.relative_to(root)
        yield (
            nib.load(t1w),
            np.asarray(nib.load(truth / f"{prefix}_label-L_mask.nii.gz").dataobj) > 0,
            np.asarray(nib.load(truth / f"{prefix}_desc-brain_mask.nii.gz").dataobj) > 0,
            json.loads((truth / f"{prefix}_lesions.json").read_text()),
            json.loads((truth / f"{prefix}_{XFM}.json").read_text()),
        )


def _files(root: Path, pattern: str = "**/*") -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))
            if p.is_file()}


def test_template_grid():
    template = load_template()
    assert template.t1.shape == TEMPLATE_SHAPE == (197, 233, 189)
    assert np.allclose(template.affine, TEMPLATE_AFFINE)
    assert abs(template.levels["wm"] - 1.0) < 1e-6
    assert template.levels["csf"] < template.levels["gm"] < 1.0
    assert not template.t1.flags.writeable


def test_bids_layout_indexes_dataset(dataset):
    from bids import BIDSLayout

    root, summary = dataset
    layout = BIDSLayout(root, validate=True, derivatives=True)
    assert layout.get_subjects() == ["01", "02", "03"]
    t1w = layout.get(scope="raw", suffix="T1w", extension=".nii.gz", return_type="filename")
    assert len(t1w) == 3
    assert sorted(str(root / scan["t1w"]) for scan in summary["scans"]) == sorted(t1w)
    masks = layout.get(scope="derivatives", suffix="mask", label="L", extension=".nii.gz")
    assert len(masks) == 6  # native + template space, per subject
    assert len(layout.get(scope="derivatives", suffix="mask", desc="brain")) == 3


def test_dataset_metadata(dataset):
    root, _ = dataset
    raw = json.loads((root / "dataset_description.json").read_text())
    truth = json.loads((root / "derivatives" / TRUTH_PIPELINE / "dataset_description.json")
                       .read_text())
    assert raw["BIDSVersion"] == "1.9.0" and raw["DatasetType"] == "raw"
    assert truth["DatasetType"] == "derivative"
    for description in (raw, truth):
        assert description["GeneratedBy"][0]["Name"] == "stroke-lesion-app"
        assert description["GeneratedBy"][0]["Version"] == __version__
    assert (root / "README").read_text().startswith("Synthetic")
    rows = (root / "participants.tsv").read_text().splitlines()
    assert rows[0].split("\t")[0] == "participant_id" and len(rows) == 4
    assert not list(root.parent.glob(".bids.*"))  # no temp folder left beside the dataset


def test_lesions_are_darker_than_surrounding_tissue(dataset):
    checked = 0
    for img, lesion, brain, _, _ in _scans(dataset[0]):
        if lesion.sum() < 5:
            continue
        data = np.asarray(img.dataobj, dtype=np.float32)
        shell = ndi.binary_dilation(lesion, iterations=2) & ~lesion & brain
        assert data[lesion].mean() < 0.85 * data[shell].mean()
        checked += 1
    assert checked >= 1


def test_native_truth_is_consistent(dataset):
    template_brain = load_template().brain
    for img, lesion, brain, lesions, _ in _scans(dataset[0]):
        assert lesion.shape == brain.shape == img.shape
        assert not (lesion & ~brain).any(), "lesion voxels outside the native brain mask"
        brain_ml = brain.sum() * np.prod(img.header.get_zooms()) / 1000
        assert 1000 < brain_ml < 3000
        assert sum(les["native_voxels"] for les in lesions["Lesions"]) == lesion.sum()
        # image is brighter in the brain than in the air/skull rim just outside it
        data = np.asarray(img.dataobj, dtype=np.float32)
        rim = ndi.binary_dilation(brain, iterations=1) & ~brain
        assert data[brain].mean() > 1.5 * data[rim].mean()
    assert template_brain.sum() > 1.5e6


def test_template_mask_matches_lesion_list(dataset):
    root, _ = dataset
    template = load_template()
    for path in sorted((root / "derivatives" / TRUTH_PIPELINE).glob(
            "sub-*/anat/*_space-MNI152NLin2009aSym_label-L_mask.nii.gz")):
        img = nib.load(path)
        mask = np.asarray(img.dataobj) > 0
        assert img.shape == TEMPLATE_SHAPE and np.allclose(img.affine, TEMPLATE_AFFINE)
        info = json.loads(Path(str(path).replace(
            "_space-MNI152NLin2009aSym_label-L_mask.nii.gz", "_lesions.json")).read_text())
        assert 0 <= info["LesionCount"] <= 4
        assert mask.sum() == sum(les["volume_voxels"] for les in info["Lesions"])
        assert not (mask & ~template.tissue).any()
        _, components = ndi.label(mask, ndi.generate_binary_structure(3, 3))
        assert components == info["LesionCount"]  # lesions are separate components
        for lesion in info["Lesions"]:
            assert lesion["volume_mm3"] == lesion["volume_voxels"]
            assert lesion["hemisphere"] == ("left" if lesion["centre_mm"][0] < 0 else "right")
            assert {"id", "territory", "kind", "centre_mm", "native_voxels"} <= set(lesion)


def test_orientations_dtypes_and_affines(dataset):
    template = load_template()
    brain_centre = np.argwhere(template.brain).mean(axis=0) + TEMPLATE_AFFINE[:3, 3]
    codes = set()
    for img, _, brain, lesions, xfm in _scans(dataset[0]):
        codes.add("".join(nib.aff2axcodes(img.affine)))
        assert img.get_data_dtype() in (np.int16, np.float32)
        assert all(2.6 < z < 3.7 for z in img.header.get_zooms())
        assert lesions["Acquisition"]["Orientation"] == "".join(nib.aff2axcodes(img.affine))
        # the stored array and its affine agree with the written native-to-template affine
        centre = nib.affines.apply_affine(img.affine, np.argwhere(brain).mean(axis=0))
        mapped = nib.affines.apply_affine(np.array(xfm["NativeToTemplate"]), centre)
        assert np.linalg.norm(mapped - brain_centre) < 8.0
        assert np.allclose(np.array(xfm["NativeToTemplate"]) @ np.array(xfm["TemplateToNative"]),
                           np.eye(4), atol=1e-6)
        assert 0 < xfm["MaxDisplacementMm"] <= 4.0
    assert codes == {"RAS", "LPS", "LIA"}


def test_itk_transform_resamples_native_into_template(dataset, tmp_path):
    ants = pytest.importorskip("ants")
    root = dataset[0]
    truth = root / "derivatives" / TRUTH_PIPELINE / "sub-03" / "anat"  # LIA storage
    fixed_path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(load_template().brain.astype(np.float32), TEMPLATE_AFFINE), fixed_path)
    moving = ants.image_read(str(truth / "sub-03_desc-brain_mask.nii.gz"))
    moved = ants.apply_transforms(
        ants.image_read(str(fixed_path)), moving, [str(truth / f"sub-03_{XFM}.txt")],
        interpolator="linear",
    ).numpy() > 0.5
    brain = load_template().brain
    assert 2 * (moved & brain).sum() / (moved.sum() + brain.sum()) > 0.9


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_small_lesion_fraction_controls_sizes(fraction):
    volumes = []
    for seed in range(4):
        lesion_set = draw_lesions(seed, n_lesions=3, small_lesion_fraction=fraction)
        assert len(lesion_set.lesions) == 3
        volumes += [lesion.volume_voxels for lesion in lesion_set.lesions]
        assert lesion_set.mask.sum() == sum(volumes[-3:])
    if fraction == 1.0:
        assert all(10 <= v < SMALL_LESION_VOXELS for v in volumes), volumes
    else:
        assert all(v >= SMALL_LESION_VOXELS for v in volumes), volumes
        assert max(volumes) > 100_000, volumes  # the range reaches territorial infarcts


def test_lesion_count_range():
    rng = np.random.default_rng(0)
    counts = [draw_lesion_count(rng, 4) for _ in range(200)]
    assert set(counts) == {0, 1, 2, 3, 4}
    assert draw_lesion_count(rng, 0) == 0
    assert draw_lesions(0, max_lesions=0).lesions == []


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = tmp_path / "again"
    synthesize_dataset(again, n_subjects=1, seed=0, resolution=RESOLUTION)
    # subject 1 does not depend on how many subjects were made
    for pattern in ("sub-01/**/*", f"derivatives/{TRUTH_PIPELINE}/sub-01/**/*"):
        first, second = _files(root, pattern), _files(again, pattern)
        assert first and first == second
    other = tmp_path / "other"
    synthesize_dataset(other, n_subjects=1, seed=1, resolution=RESOLUTION)
    t1w = "sub-01/anat/sub-01_T1w.nii.gz"
    assert (other / t1w).read_bytes() != (root / t1w).read_bytes()


def test_sessions_share_anatomy(tmp_path):
    from bids import BIDSLayout

    root = tmp_path / "bids"
    synthesize_dataset(root, n_subjects=1, seed=2, sessions=2, resolution=RESOLUTION)
    assert BIDSLayout(root, validate=True).get_sessions() == ["1", "2"]
    truth = root / "derivatives" / TRUTH_PIPELINE / "sub-01"
    template_masks = [np.asarray(nib.load(
        truth / f"ses-{s}/anat/sub-01_ses-{s}_space-MNI152NLin2009aSym_label-L_mask.nii.gz"
    ).dataobj) for s in (1, 2)]
    assert np.array_equal(*template_masks)
    images = [root / f"sub-01/ses-{s}/anat/sub-01_ses-{s}_T1w.nii.gz" for s in (1, 2)]
    assert images[0].read_bytes() != images[1].read_bytes()


def test_cli_synthesize_refuses_overwrite(tmp_path):
    out = tmp_path / "bids"
    args = ["synthesize", str(out), "--subjects", "1", "--seed", "3", "--resolution", "3"]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "sub-01" / "anat" / "sub-01_T1w.nii.gz").is_file()

    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2
    message = refused.output.strip()
    assert len(message.splitlines()) == 1
    assert str(out) in message and "--overwrite" in message

    assert runner.invoke(cli, [*args, "--overwrite"]).exit_code == 0

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    refused = runner.invoke(cli, ["synthesize", str(foreign), "--overwrite"])
    assert refused.exit_code == 2 and "refusing" in refused.output
    assert (foreign / "keep.txt").read_text() == "not ours"


def test_cli_rejects_bad_values(tmp_path):
    result = CliRunner().invoke(cli, ["synthesize", str(tmp_path / "x"),
                                      "--small-lesion-fraction", "1.5"])
    assert result.exit_code == 2 and "--small-lesion-fraction" in result.output
    assert not (tmp_path / "x").exists()


def test_failed_run_leaves_no_dataset(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dataset_module, "synthesize_subject", broken)
    with pytest.raises(RuntimeError):
        synthesize_dataset(tmp_path / "bids", n_subjects=1, resolution=RESOLUTION)
    assert list(tmp_path.iterdir()) == []


def test_bad_values_raise_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="small_lesion_fraction"):
        synthesize_dataset(tmp_path / "a", small_lesion_fraction=1.5)
    with pytest.raises(ValueError, match="orientation"):
        draw_acquisition(np.random.default_rng(0), orientation="RAR")
    with pytest.raises(FileExistsError, match="--overwrite"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        synthesize_dataset(tmp_path / "full", n_subjects=1, resolution=RESOLUTION)
