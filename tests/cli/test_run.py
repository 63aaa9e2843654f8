"""The BIDS-App command line, run in-process with click's CliRunner."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from stroke_lesion_app import __version__
from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.config import Config
from tests.conftest import leftover_temporary_files, tiny_head, tree_checksums


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def test_help_lists_the_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for option in ("--participant-label", "--session-label", "--bids-filter-file",
                   "--skip-bids-validation", "--work-dir", "--nprocs", "--omp-nthreads",
                   "--mem-gb", "--plugin", "--plugin-settings", "--model", "--device",
                   "--lesion-source", "--tta", "--no-tta", "--step-size", "--fast",
                   "--stop-on-first-crash", "--verbose", "--version", "Examples",
                   "Exit codes"):
        assert option in result.output, option


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(("args", "message"), [
    (("participant", "--nprocs", "0"), "--nprocs"),
    (("participant", "--participant-label", "sub-0_1"), "not a BIDS label"),
    (("participant", "--mem-gb", "lots"), "not a memory size"),
    (("everything",), "'everything' is not one of"),
    (("participant", "--device", "tpu"), "--device"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    result = invoke(tmp_path / "bids", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output


def _one_error_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("stroke-lesion-app: error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_missing_and_empty_bids_dir(tmp_path):
    result = invoke(tmp_path / "nope", tmp_path / "out", "participant")
    assert result.exit_code == 2 and "nope: BIDS folder not found" in _one_error_line(result)
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty", tmp_path / "out", "participant")
    assert result.exit_code == 2 and "empty" in _one_error_line(result)


def test_missing_description_and_skip_validation(bids_root, tmp_path):
    root = bids_root({"dataset_description.json": False, "sub-01/anat/sub-01_T1w.nii.gz": None})
    result = invoke(root, tmp_path / "out", "participant", "-w", tmp_path / "work")
    assert result.exit_code == 2
    assert "dataset_description.json: missing" in _one_error_line(result)
    assert "--skip-bids-validation" in _one_error_line(result)
    result = invoke(root, tmp_path / "out", "participant", "-w", tmp_path / "work",
                    "--skip-bids-validation", "--skull-strip", "none",
                    "--group-normalisation", "affine")
    assert result.exit_code == 0, result.output


def test_unknown_participant(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    result = invoke(root, tmp_path / "out", "participant", "--participant-label", "07",
                    "-w", tmp_path / "work")
    assert result.exit_code == 2
    assert "sub-07 not found" in _one_error_line(result)


def test_output_inside_bids_dir_is_refused(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    before = tree_checksums(root)
    result = invoke(root, root / "out", "participant", "-w", tmp_path / "work")
    assert result.exit_code == 2 and "inside the input dataset" in _one_error_line(result)
    result = invoke(root, tmp_path / "out", "participant", "-w", root / "work")
    assert result.exit_code == 2 and "work folder lies inside" in _one_error_line(result)
    assert tree_checksums(root) == before


def test_output_dir_not_writable(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = invoke(root, blocker / "out", "participant", "-w", tmp_path / "work")
    assert result.exit_code == 2 and "not writable" in _one_error_line(result)


def test_bad_filter_and_plugin_files(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    bad = tmp_path / "filter.json"
    bad.write_text("[1, 2")
    result = invoke(root, tmp_path / "out", "participant", "--bids-filter-file", bad)
    assert result.exit_code == 2 and "not valid JSON" in _one_error_line(result)
    plugin = tmp_path / "plugin.json"
    plugin.write_text('{"plugin": "Kubernetes"}')
    result = invoke(root, tmp_path / "out", "participant", "--plugin-settings", plugin)
    assert result.exit_code == 2 and "unknown Nipype plugin" in result.output


def test_cuda_refused_without_gpu(bids_root, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    result = invoke(root, tmp_path / "out", "participant", "--device", "cuda")
    assert result.exit_code == 2 and "no CUDA device" in _one_error_line(result)


def test_unknown_model_refused(bids_root, tmp_path, monkeypatch):
    monkeypatch.delenv("STROKE_LESION_APP_MODELS", raising=False)
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    result = invoke(root, tmp_path / "out", "participant", "--model", "atlas-v2-ensemble")
    assert result.exit_code == 2
    assert "atlas-v2-ensemble: no such model bundle" in _one_error_line(result)


def test_corrupt_bundle_refused_before_processing(bids_root, tmp_path):
    """A checksum mismatch stops the run with one line naming the checkpoint; nothing runs."""
    from stroke_lesion_app.core.bundle import write_bundle_manifest

    bundle = tmp_path / "bundle"
    member = bundle / "m"
    (member / "fold_0").mkdir(parents=True)
    (member / "plans.json").write_text("{}")
    (member / "dataset.json").write_text("{}")
    (member / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    write_bundle_manifest(bundle, name="broken", version="1", members=[{
        "name": "m", "folder": "m", "trainer": "StrokeTrainerDefault",
        "configuration": "3d_fullres", "folds": [0],
        "sha256": {"fold_0/checkpoint_final.pth": "0" * 64}}])
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    out, work = tmp_path / "out", tmp_path / "work"
    result = invoke(root, out, "participant", "-w", work, "--model", bundle)
    line = _one_error_line(result)
    assert result.exit_code == 2
    assert "fold_0/checkpoint_final.pth: sha256 mismatch" in line
    assert not out.exists() and not work.exists()
    # --lesion-source manual does not need a model
    result = invoke(root, out, "participant", "--model", bundle, "--lesion-source", "bogus")
    assert result.exit_code == 2 and "--lesion-source" in result.output


def _bad_inputs():
    data_4d = np.stack([tiny_head().get_fdata()] * 2, axis=-1).astype(np.float32)
    return {
        "sub-01/anat/sub-01_T1w.nii.gz": None,
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": None,
        "sub-02/ses-1/anat/sub-02_ses-1_label-lesion_roi.nii.gz": None,
        "sub-03/anat/sub-03_T1w.nii.gz": b"truncated gzip",
        "sub-04/anat/sub-04_T1w.nii.gz": nib.Nifti1Image(data_4d, np.eye(4)),
        "sub-05/anat/sub-05_T1w.nii.gz": nib.Nifti1Image(
            np.full((6, 6, 6), np.nan, np.float32), np.eye(4)),
        "sub-06/anat/sub-06_T1w.nii.gz": nib.Nifti1Image(np.ones((6, 6, 6), np.int16),
                                                         np.eye(4)),
        "sub-07/anat/sub-07_T2w.nii.gz": None,
    }


@pytest.mark.integration
def test_participant_run_with_bad_subjects(bids_root, tmp_path):
    """Bad subjects are listed (exit 1), good ones are processed, the input is untouched."""
    root = bids_root(_bad_inputs())
    before = tree_checksums(root)
    out = tmp_path / "derivatives"
    result = invoke(root, out, "participant", "-w", tmp_path / "work", "--nprocs", "2",
                    "--skull-strip", "none", "--lesion-source", "manual",
                    "--group-normalisation", "affine")
    assert result.exit_code == 1, result.output
    assert tree_checksums(root) == before
    assert "5 of 7 image(s) failed" in result.output
    report = {line.split(":")[0].strip(): line for line in result.output.splitlines()
              if line.startswith("  sub-")}
    assert set(report) == {"sub-03", "sub-04", "sub-05", "sub-06", "sub-07"}
    assert "sub-03_T1w.nii.gz: unreadable NIfTI" in report["sub-03"]
    assert "4D image" in report["sub-04"]
    assert "NaN" in report["sub-05"]
    assert "constant image" in report["sub-06"]
    assert "no T1w image" in report["sub-07"]
    anat = out / "sub-02" / "ses-1" / "anat"
    stems = ["desc-preproc_T1w", "desc-brain_mask", "space-MNI152NLin2009aSym_desc-preproc_T1w",
             "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm",
             "from-MNI152NLin2009aSym_to-T1w_mode-image_xfm"]
    extensions = [".nii.gz", ".nii.gz", ".nii.gz", ".mat", ".mat"]
    # sub-02 has a manual lesion mask (_label-lesion_roi): lesion load is measured
    stems += ["label-L_desc-lesionload_stats", "label-L_desc-components_stats",
              "space-MNI152NLin2009aSym_label-L_desc-manual_mask"]
    extensions += [".tsv", ".tsv", ".nii.gz"]
    assert sorted(path.name for path in anat.iterdir()) == sorted(
        [f"sub-02_ses-1_{stem}{ext}" for stem, ext in zip(stems, extensions)]
        + [f"sub-02_ses-1_{stem}.json" for stem in stems])
    mask_sidecar = json.loads((anat / "sub-02_ses-1_desc-brain_mask.json").read_text())
    assert mask_sidecar["SkullStripping"] == "none"
    xfm_sidecar = json.loads(
        (anat / "sub-02_ses-1_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.json").read_text())
    assert xfm_sidecar["Registration"] == "affine"
    sidecar = json.loads((anat / "sub-02_ses-1_desc-preproc_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    assert (out / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz").is_file()
    assert not list((out / "sub-01" / "anat").glob("*lesionload*"))  # no manual mask
    assert (out / "sub-01.html").is_file() and (out / "sub-02.html").is_file()
    assert not (out / "sub-03").exists()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    [toml] = (out / "sub-01" / "log").glob("*/stroke_lesion_app.toml")
    config = Config.load(toml)
    assert config.execution.bids_dir == root and config.nipype.nprocs == 2
    assert not leftover_temporary_files(out)


@pytest.mark.integration
def test_participant_selection_and_rerun(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None,
                      "sub-02/anat/sub-02_T1w.nii.gz": None})
    out, work = tmp_path / "out", tmp_path / "work"
    args = (root, out, "participant", "-w", work, "--participant-label", "sub-02",
            "--plugin", "Linear", "--skull-strip", "none", "--lesion-source", "manual",
            "--group-normalisation", "affine")
    assert invoke(*args).exit_code == 0
    assert not (out / "sub-01").exists() and (out / "sub-02").is_dir()
    assert (out / "sub-02" / "anat" / "sub-02_desc-preproc_T1w.nii.gz").is_file()
    cached = next(work.rglob("validate_t1w/t1w_conformed.nii.gz"))
    stamp = cached.stat().st_mtime_ns
    # a second run reuses the work-dir cache: the validation node is not executed again
    assert invoke(*args).exit_code == 0
    assert cached.stat().st_mtime_ns == stamp


def test_group_needs_participant_outputs(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    result = invoke(root, tmp_path / "out", "group")
    assert result.exit_code == 2 and "run the participant level" in _one_error_line(result)


@pytest.mark.integration
def test_bundle_manifest_read_once_and_checkpoints_hashed_once(bids_root, tmp_path, monkeypatch):
    """One run, two images, in one process (Linear): the CLI parses the bundle's manifest once
    and hashes each checkpoint once; the workflow, the nodes and the reports reuse them."""
    from stroke_lesion_app.core import bundle as bundle_module

    reads, hashed = [], []
    read_manifest, file_sha256 = bundle_module._read_manifest, bundle_module.file_sha256
    monkeypatch.setattr(bundle_module, "_read_manifest",
                        lambda path: reads.append(path) or read_manifest(path))
    monkeypatch.setattr(bundle_module, "file_sha256",
                        lambda path: hashed.append(str(path)) or file_sha256(path))
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None,
                      "sub-02/anat/sub-02_T1w.nii.gz": None})
    out = tmp_path / "out"
    result = invoke(root, out, "participant", "-w", tmp_path / "work", "--plugin", "Linear",
                    "--skull-strip", "none", "--fast", "--group-normalisation", "affine")
    assert result.exit_code == 0, result.output
    reads_in_run, hashed_in_run = list(reads), list(hashed)
    demo = bundle_module.load_bundle("demo")
    checkpoints = [str(member.checkpoint_path(fold)) for member in demo.members
                   for fold in member.folds]
    assert reads_in_run == [demo.manifest_path]
    assert sorted(hashed_in_run) == sorted(checkpoints)
    for subject in ("01", "02"):
        assert (out / f"sub-{subject}" / "anat" / f"sub-{subject}_label-L_mask.nii.gz").is_file()


def _zero_pixdim_head() -> bytes:
    """A tiny head whose stored header has voxel sizes 0 (nibabel would fix them on save)."""
    import gzip
    import io

    raw = bytearray(tiny_head(seed=3).to_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)), check=False)
    header["pixdim"][1:4] = 0
    raw[:348] = header.binaryblock
    return gzip.compress(bytes(raw))


@pytest.mark.integration
def test_images_that_cannot_give_a_trustworthy_mask_are_refused(bids_root, tmp_path):
    """6 voxels, a single slice, zero voxel sizes: one line each naming the file, no outputs."""
    ramp = np.arange(6, dtype=np.int16).reshape(1, 2, 3) * 100
    one_slice = tiny_head().get_fdata()[:, :, 5:6].astype(np.int16)
    root = bids_root({
        "sub-01/anat/sub-01_T1w.nii.gz": None,
        "sub-02/anat/sub-02_T1w.nii.gz": nib.Nifti1Image(ramp, np.eye(4)),
        "sub-03/anat/sub-03_T1w.nii.gz": nib.Nifti1Image(one_slice, np.diag([2.0, 2, 2, 1])),
        "sub-04/anat/sub-04_T1w.nii.gz": _zero_pixdim_head(),
    })
    out = tmp_path / "out"
    result = invoke(root, out, "participant", "-w", tmp_path / "work", "--plugin", "Linear",
                    "--skull-strip", "none", "--lesion-source", "manual",
                    "--group-normalisation", "affine")
    assert result.exit_code == 1, result.output
    assert "3 of 4 image(s) failed" in result.output
    report = {line.split(":")[0].strip(): line for line in result.output.splitlines()
              if line.startswith("  sub-")}
    assert set(report) == {"sub-02", "sub-03", "sub-04"}
    assert "sub-02_T1w.nii.gz: too few voxels (1x2x3;" in report["sub-02"]
    assert "sub-03_T1w.nii.gz: too few voxels (12x14x1;" in report["sub-03"]
    assert "sub-04_T1w.nii.gz: voxel sizes in the header are 0" in report["sub-04"]
    assert "setting 0 dims to 1" not in result.output  # nibabel's own header-fix message
    assert (out / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz").is_file()
    for subject in ("sub-02", "sub-03", "sub-04"):
        assert not (out / subject).exists() and not (out / f"{subject}.html").exists()
