"""scripts/fetch_templates.py (the Dockerfile's TemplateFlow prefetch): its file list is the
app's (imported from core/templates.py: MNI152NLin2009aSym, then FSL's MNI152NLin6Asym), every
query names a real TemplateFlow file (checked offline against the index shipped in the
templateflow package), and a home that already holds the files is accepted without any
download.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stroke_lesion_app.core import templates

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fetch_templates.py"
APP_FILES = [templates.templateflow_filename(part)
             for part in templates.TEMPLATEFLOW_REQUIRED + templates.TEMPLATEFLOW_OPTIONAL]
FSL_FILES = [templates.fsl_templateflow_filename(part)
             for part in templates.FSL_TEMPLATEFLOW_FILES]


def run_script(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(home), "TEMPLATEFLOW_AUTOUPDATE": "0",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``--dry-run`` in a fresh TemplateFlow home (templateflow unpacks its index there)."""
    home = tmp_path_factory.mktemp("templateflow")
    return home, run_script("--dry-run", home=home)


def test_app_lists_the_files_it_reads():
    assert APP_FILES == [
        "tpl-MNI152NLin2009aSym_res-1_T1w.nii.gz",
        "tpl-MNI152NLin2009aSym_res-1_desc-brain_mask.nii.gz",
        "tpl-MNI152NLin2009aSym_res-1_label-GM_probseg.nii.gz",
        "tpl-MNI152NLin2009aSym_res-1_label-WM_probseg.nii.gz",
        "tpl-MNI152NLin2009aSym_res-1_label-CSF_probseg.nii.gz",
    ]
    # TemplateFlow names FSL's MNI152 1 mm files res-01 (its skeleton index lists exactly these)
    assert FSL_FILES == [
        "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
        "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz",
    ]


def test_help():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "--dry-run" in result.stdout and "TEMPLATEFLOW_HOME" in result.stdout


def test_dry_run_plans_exactly_the_app_files(dry_run):
    """Each query matches one file in TemplateFlow's index, and together they are the app's
    list (MNI152NLin2009aSym has no atlas-*_dseg in TemplateFlow, so none is added), then
    the MNI152NLin6Asym T1w and brain mask."""
    home, result = dry_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MNI152NLin2009aSym and MNI152NLin6Asym" in result.stdout
    planned = [line.split("would fetch ", 1)[1] for line in result.stdout.splitlines()
               if "would fetch " in line]
    assert planned == APP_FILES + FSL_FILES
    # nothing was downloaded: the index has only empty placeholders
    for template, names in ((templates.TEMPLATE, APP_FILES), (templates.FSL_TEMPLATE, FSL_FILES)):
        assert all((home / f"tpl-{template}" / name).stat().st_size == 0 for name in names)


def test_list_prints_the_planned_names(dry_run):
    home, _ = dry_run
    result = run_script("--list", home=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == APP_FILES + FSL_FILES


def test_query_entities():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import fetch_templates
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert fetch_templates.query("label-GM_probseg") == {
        "resolution": 1, "suffix": "probseg", "extension": ".nii.gz", "desc": None,
        "label": "GM", "atlas": None}
    assert fetch_templates.query("T1w")["desc"] is None  # not desc-brain_T1w


def test_fetch_accepts_files_already_present(dry_run):
    """With every file present and non-empty, a real run downloads nothing and exits 0 (the
    same call the Dockerfile makes, here offline)."""
    home, _ = dry_run
    paths = [home / f"tpl-{templates.TEMPLATE}" / name for name in APP_FILES]
    paths += [home / f"tpl-{templates.FSL_TEMPLATE}" / name for name in FSL_FILES]
    for path in paths:
        path.write_bytes(b"not empty")
    result = run_script(home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Downloading" not in result.stdout + result.stderr
    for path in paths:
        assert str(path) in result.stdout
