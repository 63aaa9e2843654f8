"""Offline template lookup: TemplateFlow when populated, nilearn's copy otherwise."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import templates


@pytest.fixture(autouse=True)
def _fresh_cache():
    templates.get_template.cache_clear()
    yield
    templates.get_template.cache_clear()


def test_nilearn_fallback(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))  # empty: skeleton only
    (tmp_path / "tpl-MNI152NLin2009aSym").mkdir()
    (tmp_path / "tpl-MNI152NLin2009aSym" / "tpl-MNI152NLin2009aSym_res-1_T1w.nii.gz").touch()
    with caplog.at_level(logging.INFO, logger="stroke_lesion_app.templates"):
        files = templates.get_template()
    assert files.source == "nilearn" and files.brain_mask is None
    assert "from nilearn" in caplog.text
    brain, mask = templates.template_brain(files)
    assert brain.shape == templates.TEMPLATE_SHAPE == mask.shape
    assert 0.9 < np.asanyarray(brain.dataobj).max() <= 1.0
    volume_ml = np.asanyarray(mask.dataobj).sum() / 1000
    assert 1200 < volume_ml < 2000  # an adult brain, in mL
    gm = templates.tissue_probability(files, "GM").get_fdata()
    assert gm.max() <= 1.0 and gm.shape == templates.TEMPLATE_SHAPE


def _write_templateflow(home, shape=templates.TEMPLATE_SHAPE, affine=templates.TEMPLATE_AFFINE):
    folder = home / "tpl-MNI152NLin2009aSym"
    folder.mkdir(parents=True)
    head = np.zeros(shape, np.float32)
    head[60:140, 60:170, 40:150] = 1
    for name, data in (("T1w", head), ("desc-brain_mask", head.astype(np.uint8))):
        nib.Nifti1Image(data, affine).to_filename(
            folder / f"tpl-MNI152NLin2009aSym_res-1_{name}.nii.gz")


def test_templateflow_preferred(monkeypatch, tmp_path):
    _write_templateflow(tmp_path)
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    files = templates.get_template()
    assert files.source == "templateflow" and files.brain_mask is not None
    assert files.gm_probseg is None
    with pytest.raises(ValueError, match="no GM probability map"):
        templates.tissue_probability(files, "GM")


def test_wrong_grid_refused(monkeypatch, tmp_path):
    _write_templateflow(tmp_path, shape=(10, 10, 10))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="not the MNI152NLin2009aSym 1 mm grid"):
        templates.get_template()


def test_templateflow_atlases(monkeypatch, tmp_path):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    assert templates.templateflow_atlases() == []
    folder = tmp_path / "tpl-MNI152NLin2009aSym"
    folder.mkdir()
    (folder / "tpl-MNI152NLin2009aSym_res-1_atlas-HOCPA_desc-th25_dseg.nii.gz").write_bytes(b"x")
    (folder / "tpl-MNI152NLin2009aSym_atlas-HOCPA_desc-th25_dseg.tsv").write_text("index\tname\n")
    (folder / "tpl-MNI152NLin2009aSym_res-1_atlas-Schaefer_dseg.nii.gz").touch()  # skeleton
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    assert [atlas.to_option() for atlas in templates.templateflow_atlases()] == [
        f"HOCPATh25={folder}/tpl-MNI152NLin2009aSym_res-1_atlas-HOCPA_desc-th25_dseg.nii.gz"
        f":{folder}/tpl-MNI152NLin2009aSym_atlas-HOCPA_desc-th25_dseg.tsv"]
