"""The ``benchmarks`` package (issue #19): every module imports, every entry point answers
``--help``, workers are registered importable functions whose modules import nothing heavy, and
the one report writer round-trips a made-up result. No benchmark is run (they are timed by
hand, never by pytest).
"""

from __future__ import annotations

import configparser
import importlib
import json
import os
import pkgutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

import benchmarks
from benchmarks import report, runner

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(info.name for info in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT),
                                                                 os.environ.get("PYTHONPATH")))))


def entry_main(name: str):
    """``main`` of ``python -m benchmarks.<name>``."""
    module = importlib.import_module(f"benchmarks.{name}")
    if hasattr(module, "main"):
        return module.main
    return importlib.import_module(f"benchmarks.{name}.cli").main


def test_layout():
    """Shared modules, one package or module per entry point, no scripts left beside them."""
    for name in ("fixtures", "measure", "report", "runner"):
        assert f"benchmarks.{name}" in MODULES
    for name in benchmarks.ENTRY_POINTS:
        assert f"benchmarks.{name}" in MODULES
    assert not (ROOT / "benchmarks" / "_common.py").exists()
    with_workers = {path.parent.name for path in (ROOT / "benchmarks").glob("*/workers.py")}
    assert with_workers == set(runner.WITH_WORKERS)
    for path in (ROOT / "benchmarks").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, f"{path}: keep modules short"


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("name", benchmarks.ENTRY_POINTS)
def test_entry_point_help_in_process(name, capsys):
    with pytest.raises(SystemExit) as stop:
        entry_main(name)(["--help"])
    assert stop.value.code == 0
    assert f"python -m benchmarks.{name}" in capsys.readouterr().out


@pytest.mark.parametrize("name", [*benchmarks.ENTRY_POINTS, "runner"])
def test_entry_point_help_as_module(name):
    """``python -m benchmarks.<name> --help`` from the repository root (``__main__`` wiring)."""
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_workers_registered_and_importable():
    names = runner.worker_names()
    assert {"preprocessing.step", "mscsa_overhead.time", "mscsa_overhead.paired",
            "mscsa_overhead.profile", "segmentation.segment", "segmentation.ensemble",
            "segmentation.command", "segmentation.windows"} <= set(names)
    for name in names:
        function = runner.resolve(name)
        assert callable(function) and function.__module__.startswith("benchmarks.")
    with pytest.raises(KeyError):
        runner.resolve("segmentation.nope")
    with pytest.raises(KeyError):
        runner.resolve("resize_alternatives.anything")


def test_worker_modules_import_nothing_heavy():
    """Workers measure their own peak memory: the runner and the worker modules must not pull
    in torch, numpy, nibabel or the app before the measured function does."""
    code = ("import sys, benchmarks.runner as r; r.worker_names(); "
            "print(sorted(m for m in ('torch', 'numpy', 'nibabel', 'scipy', 'stroke_lesion_app')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_runner_spawn_reports_a_worker_result():
    """A registered worker in a fresh interpreter, watched, its result read back."""
    run = runner.spawn("segmentation.command", {"cmd": [sys.executable, "-c", "print('hi')"]},
                       env=ENV, mem_cap=8 * 1024**3, timeout=60, tree=True)
    assert run.error is None and not run.killed, run.error
    assert run.result["returncode"] == 0 and run.result["output_tail"] == "hi\n"
    assert run.wall_s > 0 and run.peak_rss_bytes >= 0


def test_report_round_trip(tmp_path):
    """The pair from a made-up result: JSON as written (indent 1), Markdown lines as given,
    and a hand-written reading kept when the tables are rewritten."""
    stem = tmp_path / "made_up_cpu"
    payload = {"machine": {"cpu": "test CPU", "load_average_start": [0.5, 0.25, 0.125]},
               "rows": [{"cfg": {"net": "plain"}, "result": {"times_s": [1.0, 1.5]}}]}
    lines = ["# Made up", "", "| net | time (s) |", "|---|---:|", "| plain | 1.25 |", ""]
    written = report.write_report(stem, lines, payload)
    assert written == tmp_path / "made_up_cpu.md"
    assert report.read_json(stem) == payload
    assert (tmp_path / "made_up_cpu.json").read_text() == json.dumps(payload, indent=1)
    assert written.read_text() == "\n".join(lines) + "\n"

    reading = "## Reading (written by hand, today)\n\nIt was fast.\n"
    written.write_text(written.read_text() + "\n" + reading)
    report.write_report(stem, [*lines[:-2], "| plain | 1.00 |", ""], payload)
    text = written.read_text()
    assert "| plain | 1.00 |" in text and "| plain | 1.25 |" not in text
    assert text.endswith(reading) and text.count("## Reading") == 1
    assert report.rounded_load(payload["machine"]["load_average_start"]) == (0.5, 0.25, 0.12)
    assert report.gb(None) == "-" and report.gb(1024**3) == "1.00"


def test_mscsa_paired_page_from_its_json(tmp_path):
    """The paired page renders the same from the in-memory result and from its JSON."""
    from benchmarks.mscsa_overhead.tables import paired_page

    info = {"date": "2026-01-01T00:00:00", "cpu": "test CPU", "logical_cpus": 2,
            "torch": "0", "load_average_start": [1.0, 1.0, 1.0]}
    results = {1: {"wall_s": {"plain": [1.0, 1.2], "mscsa": [1.1, 1.3]},
                   "cpu_s": {"plain": [2.0, 2.4], "mscsa": [2.2, 2.6]},
                   "load_average": [1.0, 1.0, 1.0]}}
    args = Namespace(quick=True, repeats=2, threads=2)
    stem = tmp_path / "mscsa_overhead_cpu_paired_quick"
    written = report.write_report(stem, paired_page(info, results, args, 64),
                                  {"machine": info, "results": results})
    saved = report.read_json(stem)
    assert written.read_text() == "\n".join(paired_page(saved["machine"], saved["results"],
                                                        args, 64)) + "\n"
    row = "| 1 | 1.10 ± 0.14 | 1.20 ± 0.14 | 1.092 ± 0.012 | 1.091 | 2.00 | 1.00 |"
    assert row in written.read_text()


def test_segmentation_render_from_made_up_json(tmp_path):
    """``--render`` rebuilds the page from a results JSON alone (here parts c and w)."""
    from benchmarks.segmentation import cli

    machine = {"cpu": "test CPU", "logical_cpus": 2, "simd": [], "memory_gb": 8.0,
               "python": "3", "torch": "0", "nnunetv2": "0", "threads": 2,
               "load_average_start": [1, 1, 1], "load_average_end": [1, 1, 1],
               "date": "2026-01-01T00:00:00", "elapsed_s": 60.0, "bundle": "demo"}
    run = {"wall_s": 10.0, "largest_process_rss_bytes": 1024**3,
           "tree_peak_rss_bytes": 2 * 1024**3, "returncode": 0, "cmd": "nnUNetv2_predict ..."}
    results = {
        "c": {"n_images": 1, "tta": False, "cli": {"a": run, "b": run},
              "ensemble": {"load_s": 1.0, "per_image_s": [4.0], "process_wall_s": 8.0,
                           "peak_rss_bytes": 1024**3, "tree_peak_rss_bytes": 1024**3},
              "average_s": 1.0, "cli_total_s": 21.0, "ratio_cli_over_ensemble": 2.625,
              "max_abs_difference": 1e-10},
        "w": {"tta": True, "models": {"demo": {"resolution": 2.0, "rows": {"1": {
            "patch_sizes": [[64, 64, 64]], "windows": [18], "forward_calls": 144,
            "predict_s": 30.0, "forward_s": 28.0, "peak_rss_bytes": 1024**3,
            "max_abs_difference": 0.0}}}}},
    }
    report.write_json(tmp_path / "segmentation_cpu", {"machine": machine, "results": results})
    assert cli.main(["--render", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "segmentation_cpu.md").read_text()
    assert text.startswith("# Segmentation speed and memory: CPU\n")
    assert "Generated by `python -m benchmarks.segmentation` on 2026-01-01T00:00:00" in text
    assert "Time ratio CLI / in-process: **2.62**" in text
    row = "| demo (2 mm, patch 64×64×64) | 1 | 18 | 144 | 30.00 | 28.00 | 1.00 | 0.0e+00 |"
    assert row in text


def test_mapping_ensemble_tree_windows_and_page(tmp_path):
    """MAPPING's tree laid out from two v1 models (hard links, trainer names as the checkpoints
    say), the sliding windows of a recorded region, the patch in input axis order, the page."""
    import pickle

    from benchmarks import mapping_ensemble
    from benchmarks.fixtures import MAPPING_TREE

    v1 = ROOT / "tests" / "data" / "nnunet_v1"
    models = {"generic": next((v1 / "generic_small").rglob("plans.pkl")).parent,
              "fabians": next((v1 / "fabians_import_small").rglob("plans.pkl")).parent}
    tree = mapping_ensemble.mapping_tree(tmp_path / "tree", models)
    folders = sorted(tree.rglob("plans.pkl"))
    assert len(folders) == 4
    for task, folder, trainer, kind in MAPPING_TREE:
        model = tree / "nnUNet" / "3d_fullres" / task / folder
        for fold in range(5):
            weights = model / f"fold_{fold}" / "model_final_checkpoint.model"
            source = models[kind] / f"fold_{fold % 2}" / "model_final_checkpoint.model"
            assert weights.samefile(source)  # linked, not copied
            info = pickle.loads(weights.with_name(weights.name + ".pkl").read_bytes())
            assert info["name"] == trainer
    from stroke_lesion_app.core.segmentation import _region_text

    # the text the segmentation sidecar records (SlidingWindowRegion), as the app writes it
    region = _region_text((slice(20, 172), slice(14, 214), slice(3, 160)), 12)
    # 152 × 200 × 157 voxels, patch 128³: 2 × 3 × 2 windows at step 0.5, 2 × 2 × 2 at 1.0
    assert mapping_ensemble.windows_in_region(region, (128, 128, 128), 0.5) == 12
    assert mapping_ensemble.windows_in_region(region, (128, 128, 128), 1.0) == 8
    with pytest.raises(ValueError, match="no i/j/k box"):
        mapping_ensemble.windows_in_region("whole image", (128, 128, 128), 0.5)
    member = Namespace(folder=tmp_path, configuration="3d_fullres")
    (tmp_path / "plans.json").write_text(json.dumps({
        "transpose_forward": [1, 0, 2],
        "configurations": {"3d_fullres": {"patch_size": [40, 32, 24]}}}))
    # nnU-Net axis a is the input's axis 2 - transpose[a]: 40 → j, 32 → k, 24 → i
    assert mapping_ensemble.plans_patch(member) == (24, 40, 32)
    machine = {"cpu": "test CPU", "logical_cpus": 2, "memory_gb": 8.0, "torch": "0",
               "load_average_start": [1, 1, 1], "date": "2026-01-01T00:00:00"}
    page = "\n".join(mapping_ensemble.render({
        "machine": machine, "device": "cpu", "import_seconds": 100.0,
        "participant_pages": ["participant_nodes_mapping_fast_cpu.md"],
        "bundle": {"members": 4, "networks": 20, "gigabytes": 3.3, "parameters": "p"},
        "rows": [{"mode": "fast", "network_passes": 4, "windows": 8, "forward_passes": 32,
                  "wall_s": 700.0, "segment_s": 600.0, "kind": "measured"},
                 {"mode": "default", "network_passes": 20, "windows": 12,
                  "forward_passes": 1920, "segment_s": 36000.0, "kind": "estimated"}]}))
    assert "| fast | 4 | 8 | 32 | 700.0 | 600 | measured |" in page
    assert "| default | 20 | 12 | 1920 | - | 36000 | estimated |" in page
    assert "Node by node: `participant_nodes_mapping_fast_cpu.md`." in page


def test_benchmarks_stay_out_of_the_wheel():
    """``benchmarks`` is a package now; setup.cfg's ``packages = find:`` must exclude it."""
    from setuptools import find_packages

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    exclude = parser["options.packages.find"]["exclude"].split()
    shipped = find_packages(str(ROOT), exclude=exclude)
    assert not [name for name in shipped if name.split(".")[0] == "benchmarks"], shipped
