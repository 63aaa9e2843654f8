"""``--config-file``: the settings dump of a run (TOML) as the defaults of another run."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli import run as run_module
from stroke_lesion_app.config import Config, ExecutionSettings, NipypeSettings, WorkflowSettings
from stroke_lesion_app.core.atlases import Atlas


@pytest.fixture
def captured(monkeypatch):
    """Replace the participant level by a recorder of the settings it would run with."""
    configs = []

    def record(config):
        configs.append(config)
        return run_module.ParticipantResult([], {})

    monkeypatch.setattr(run_module, "run_participant", record)
    return configs


def _saved(tmp_path) -> Path:
    atlas_image = tmp_path / "aal.nii.gz"
    atlas_image.write_bytes(b"not read here")
    config = Config(
        ExecutionSettings(bids_dir=Path("/old/bids"), output_dir=Path("/old/out"),
                          work_dir=tmp_path / "old-work", participant_labels=["07"]),
        nipype=NipypeSettings(plugin="Linear", nprocs=3, omp_nthreads=2,
                              stop_on_first_crash=True),
        workflow=WorkflowSettings(model="demo", device="cpu", skull_strip="none",
                                  registration="syn", lesion_source="manual", tta=False,
                                  step_size=0.7, fast=True,
                                  atlases=[Atlas("AAL", atlas_image)]))
    return config.to_filename(tmp_path / "stroke_lesion_app.toml")


def test_saved_settings_fill_what_the_command_line_leaves_out(tmp_path, captured):
    saved = _saved(tmp_path)
    result = CliRunner().invoke(run_module.cli, [
        str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--config-file",
        str(saved), "--registration", "affine", "--nprocs", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config,) = captured
    # this run's own paths and choices on the command line win
    assert config.execution.bids_dir == tmp_path / "bids"
    assert config.execution.output_dir == tmp_path / "out"
    assert config.workflow.registration == "affine" and config.nipype.nprocs == 1
    # everything else comes from the file
    assert config.execution.participant_labels == ["07"]
    assert config.execution.work_dir == tmp_path / "old-work"
    assert (config.nipype.plugin, config.nipype.omp_nthreads) == ("Linear", 2)
    assert config.nipype.stop_on_first_crash is True
    workflow = config.workflow
    assert (workflow.device, workflow.skull_strip, workflow.lesion_source) == (
        "cpu", "none", "manual")
    assert (workflow.tta, workflow.step_size, workflow.fast) == (False, 0.7, True)
    assert workflow.atlases == [Atlas("AAL", tmp_path / "aal.nii.gz")]
    assert config.execution.run_uuid != Config.load(saved).execution.run_uuid


def test_a_bad_settings_file_is_a_usage_error(tmp_path, captured):
    bad = tmp_path / "bad.toml"
    bad.write_text("[workflow]\nregistrationn = 'syn'\n")
    result = CliRunner().invoke(run_module.cli, [
        str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--config-file", str(bad)])
    assert result.exit_code == 2 and not captured
    assert "bad.toml: [workflow] has unknown key(s) ['registrationn']" in result.output
