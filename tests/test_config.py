"""Run settings: TOML round trip and derived values."""

from __future__ import annotations

from pathlib import Path

from stroke_lesion_app.config import Config, ExecutionSettings, NipypeSettings


def test_toml_round_trip(tmp_path):
    config = Config(ExecutionSettings(bids_dir=Path("/data/bids"), output_dir=Path("/data/out"),
                                      participant_labels=["01", "02"],
                                      bids_filters={"acquisition": "mprage"}),
                    NipypeSettings(plugin="SLURM", plugin_args={"sbatch_args": "-p short"},
                                   nprocs=4, mem_gb=8.0))
    path = config.to_filename(tmp_path / "log" / "stroke_lesion_app.toml")
    loaded = Config.load(path)
    assert loaded == config
    assert isinstance(loaded.execution.work_dir, Path)


def test_plugin_settings_and_threads():
    settings = NipypeSettings(nprocs=6, mem_gb=12.0)
    assert settings.plugin_settings() == {
        "plugin": "MultiProc",
        "plugin_args": {"n_procs": 6, "memory_gb": 12.0, "raise_insufficient": False,
                        "mp_context": "forkserver"}}
    assert NipypeSettings(plugin="SLURM", nprocs=6).plugin_settings() == {
        "plugin": "SLURM", "plugin_args": {}}
    config = Config(ExecutionSettings(bids_dir=Path("/b"), output_dir=Path("/o")),
                    NipypeSettings(nprocs=16))
    assert config.resolved_omp_nthreads() == 8
    config.nipype.omp_nthreads = 3
    assert config.resolved_omp_nthreads() == 3
