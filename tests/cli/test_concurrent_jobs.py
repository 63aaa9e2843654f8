"""Jobs of a SLURM array share one output folder: three participant processes at once."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import pytest

from tests.conftest import leftover_temporary_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBJECTS = ("01", "02", "03")


@pytest.mark.parametrize("shared_work_dir", [False, True])
def test_concurrent_participant_jobs_into_one_output_folder(bids_root, tmp_path,
                                                            shared_work_dir):
    root = bids_root({f"sub-{label}/anat/sub-{label}_T1w.nii.gz": None for label in SUBJECTS})
    out = tmp_path / "out"
    jobs = []
    for label in SUBJECTS:
        work = tmp_path / ("work" if shared_work_dir else f"work-{label}")
        jobs.append(subprocess.Popen(
            [sys.executable, "-m", "stroke_lesion_app", str(root), str(out), "participant",
             "--participant-label", label, "-w", str(work), "--plugin", "Linear",
             "--skull-strip", "none", "--lesion-source", "manual",
             "--group-normalisation", "affine"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path))
    for job in jobs:
        output, _ = job.communicate(timeout=600)
        assert job.returncode == 0, output

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["Name"]
    assert not leftover_temporary_files(out)  # no temp files
    for path in out.rglob("*.json"):
        json.loads(path.read_text())  # every sidecar whole
    for label in SUBJECTS:
        anat = out / f"sub-{label}" / "anat"
        images = sorted(anat.glob("*.nii.gz"))
        assert len(images) >= 3
        for image in images:
            nib.load(image).get_fdata()  # every image whole (a torn gzip fails here)
        assert (out / f"sub-{label}.html").is_file()

    from click.testing import CliRunner

    from stroke_lesion_app.cli.run import cli

    result = CliRunner().invoke(cli, [str(root), str(out), "group"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cohort = (out / "group" / "label-L_desc-lesionload_stats.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in cohort[1:]] == [f"sub-{s}" for s in SUBJECTS]
