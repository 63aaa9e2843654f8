"""FSL's MNI152 (MNI152NLin6Asym) as a second group space: the template lookup and the
MNI152NLin2009aSym → MNI152NLin6Asym transform, on a stand-in template (tests/fsl_standin.py)
with a known shift and scaling, so the whole code path runs offline.

The transform is computed once for the module with the coarse ``test`` schedule (about 15 s
on 2 cores); every other test reuses it.
"""

from __future__ import annotations

import doctest
import fcntl
import json
import logging
import shutil
import threading

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import template_transforms, templates
from stroke_lesion_app.core.bundle import file_sha256
from stroke_lesion_app.core.registration import apply_transform, transform_points
from tests.fsl_standin import (
    STANDIN_AFFINE,
    make_fsl_standin,
    standin_to_template,
    template_to_standin,
)

ENV = ("TEMPLATEFLOW_HOME", "STROKE_LESION_APP_TRANSFORMS", "STROKE_LESION_APP_CACHE")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """A TemplateFlow home with the stand-in MNI152NLin6Asym, set as TEMPLATEFLOW_HOME, and a
    counter of the transform computations."""
    home = tmp_path_factory.mktemp("templateflow")
    make_fsl_standin(home)
    calls = []
    compute = template_transforms._compute
    with pytest.MonkeyPatch.context() as patch:
        for name in ENV:
            patch.delenv(name, raising=False)
        patch.setenv("TEMPLATEFLOW_HOME", str(home))
        patch.setattr(template_transforms, "_compute",
                      lambda *args, **kwargs: calls.append(args) or compute(*args, **kwargs))
        templates.get_template.cache_clear()
        yield home, calls
    templates.get_template.cache_clear()


@pytest.fixture(scope="module")
def computed(standin, tmp_path_factory):
    """The transform, computed once (``test`` schedule) into a fresh cache folder."""
    cache = tmp_path_factory.mktemp("cache")
    path = template_transforms.template_to_fsl_transform(cache, num_threads=2, quality="test")
    return path


@pytest.fixture
def fresh_log(monkeypatch):
    """Forget which template messages this process logged already."""
    monkeypatch.setattr(templates, "_FSL_LOGGED", set())


def _fsl_records(caplog):
    return [r for r in caplog.records
            if r.name == "stroke_lesion_app.templates" and templates.FSL_TEMPLATE in r.message]


# ------------------------------------------------------------------------- template lookup

@pytest.mark.parametrize("layout", ["unset", "empty", "skeleton", "mask_missing"])
def test_fsl_template_absent_is_none_with_one_log_line(layout, tmp_path, monkeypatch, caplog,
                                                       fresh_log):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)
    folder = tmp_path / f"tpl-{templates.FSL_TEMPLATE}"
    if layout != "unset":
        monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    if layout == "skeleton":  # TemplateFlow's index: empty placeholders
        folder.mkdir()
        for part in templates.FSL_TEMPLATEFLOW_FILES:
            (folder / templates.fsl_templateflow_filename(part)).touch()
    if layout == "mask_missing":
        make_fsl_standin(tmp_path)
        (folder / templates.fsl_templateflow_filename("desc-brain_mask")).unlink()
    with caplog.at_level(logging.INFO, logger="stroke_lesion_app.templates"):
        assert templates.fsl_template() is None
        assert templates.fsl_template() is None  # logged once, not twice
        assert template_transforms.template_to_fsl_transform(tmp_path / "cache") is None
    records = _fsl_records(caplog)
    assert len(records) == 1, [r.message for r in records]
    message = records[0].message
    assert "\n" not in message and "skipping" in message
    if layout == "unset":
        assert "TEMPLATEFLOW_HOME is unset" in message
    else:
        assert str(folder) in message
    if layout == "mask_missing":
        assert "desc-brain_mask" in message and "_T1w" not in message
    assert not (tmp_path / "cache").exists()


def test_fsl_template_found_with_the_standin(standin, caplog, fresh_log):
    home, _ = standin
    with caplog.at_level(logging.INFO, logger="stroke_lesion_app.templates"):
        files = templates.fsl_template()
    assert files is not None and files.source == "templateflow"
    assert files.t1w == (home / "tpl-MNI152NLin6Asym" / "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz")
    assert files.brain_mask.name == "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz"
    assert files.gm_probseg is None and files.wm_probseg is None
    assert [r.levelname for r in _fsl_records(caplog)] == ["INFO"]
    image = nib.load(str(files.t1w))
    assert image.shape == templates.FSL_TEMPLATE_SHAPE
    assert np.allclose(image.affine, templates.FSL_TEMPLATE_AFFINE)
    brain, mask = templates.template_brain(files)  # the head is masked down to the brain
    volume_ml = np.asanyarray(mask.dataobj).sum() / 1000
    assert 1200 < volume_ml < 2200
    head = np.asanyarray(image.dataobj)
    assert (head[np.asanyarray(mask.dataobj) == 0] > 0).sum() > 100_000  # the scalp shell
    assert (np.asanyarray(brain.dataobj)[np.asanyarray(mask.dataobj) == 0] == 0).all()


def test_fsl_orientation_accepted_and_wrong_grid_refused(tmp_path, monkeypatch, caplog,
                                                         fresh_log):
    """FSL's own LAS header for the same box is accepted; another grid is skipped with a
    warning naming the file."""
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path))
    folder = tmp_path / f"tpl-{templates.FSL_TEMPLATE}"
    folder.mkdir()
    las = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
    data = np.ones(templates.FSL_TEMPLATE_SHAPE, np.uint8)
    for part in templates.FSL_TEMPLATEFLOW_FILES:
        nib.Nifti1Image(data, las).to_filename(folder / templates.fsl_templateflow_filename(part))
    assert templates.fsl_template() is not None
    t1w = folder / templates.fsl_templateflow_filename("T1w")
    nib.Nifti1Image(np.ones((91, 109, 91), np.uint8), STANDIN_AFFINE * [2, 2, 2, 1]
                    ).to_filename(t1w)
    caplog.clear()  # the first call's INFO line is captured when another test set INFO
    with caplog.at_level(logging.INFO, logger="stroke_lesion_app.templates"):
        assert templates.fsl_template() is None
    (record,) = _fsl_records(caplog)
    assert record.levelname == "WARNING" and str(t1w) in record.message
    t1w.write_bytes(b"not a nifti")
    assert templates.fsl_template() is None


# ------------------------------------------------------------------------------ transform

def test_transform_recovers_the_known_mapping(standin, computed):
    """At brain points of the stand-in, the transform maps to where the 2009aSym anatomy
    really is (shift of 2 mm and scaling up to 3 %) within 1 mm on average."""
    assert computed.is_file() and computed.suffix == ".h5"
    mask = nib.load(str(templates.fsl_template().brain_mask))
    voxels = np.argwhere(np.asanyarray(mask.dataobj) > 0)[::200]
    points = nib.affines.apply_affine(mask.affine, voxels)
    error = np.linalg.norm(transform_points(points, computed) - standin_to_template(points),
                           axis=1)
    assert error.mean() < 1.0 and np.percentile(error, 95) < 2.0, (error.mean(), error.max())
    # and it is not the identity: without it the points would be off by 2-5 mm
    assert np.linalg.norm(points - standin_to_template(points), axis=1).mean() > 2.0


def test_template_mask_lands_where_expected(standin, computed, tmp_path):
    """A ball drawn in MNI152NLin2009aSym, resampled through the transform onto the NLin6Asym
    grid, lands on the ellipsoid the known mapping predicts."""
    centre, radius = np.array([30.0, -20.0, 10.0]), 12.0
    ball = _ball(templates.TEMPLATE_SHAPE, templates.TEMPLATE_AFFINE, centre, radius)
    nib.Nifti1Image(ball.astype(np.uint8), templates.TEMPLATE_AFFINE).to_filename(
        tmp_path / "ball.nii.gz")
    out = apply_transform(tmp_path / "ball.nii.gz", templates.fsl_template().t1w, computed,
                          tmp_path / "ball_fsl.nii.gz", interpolator="genericLabel")
    moved = nib.load(str(out))
    assert moved.shape == templates.FSL_TEMPLATE_SHAPE
    moved_mask = np.asanyarray(moved.dataobj) > 0
    # the known mapping is per axis (scale + shift), so is the predicted ellipsoid
    expected = _ball(moved.shape, moved.affine, centre, radius, standin_to_template)
    centroid = nib.affines.apply_affine(moved.affine, np.argwhere(moved_mask).mean(axis=0))
    assert np.linalg.norm(centroid - template_to_standin(centre[None])[0]) < 1.0
    dice = 2 * (moved_mask & expected).sum() / (moved_mask.sum() + expected.sum())
    assert dice > 0.85, dice


def _ball(shape, affine, centre, radius, mapping=lambda points: points):
    """Voxels of an axis-aligned grid whose centres, through ``mapping``, lie in a ball."""
    axes = [affine[k, k] * np.arange(shape[k]) + affine[k, 3] for k in range(3)]
    mapped = mapping(np.stack([np.resize(axis, max(shape)) for axis in axes], axis=1))
    squared = [(mapped[: shape[k], k] - centre[k]) ** 2 for k in range(3)]
    return (squared[0][:, None, None] + squared[1][None, :, None] + squared[2][None, None, :]
            <= radius ** 2)


def test_sidecar_records_method_parameters_hashes_and_quality(standin, computed):
    sidecar = json.loads(computed.with_suffix(".json").read_text())
    assert sidecar["Quality"] == "test"
    assert sidecar["Parameters"]["syn_iterations"] == list(
        template_transforms.SCHEDULES["test"].syn_iterations)
    assert "SyN" in sidecar["Method"] and "rigid" in sidecar["Method"]
    assert sidecar["Seed"] == 1 and sidecar["Software"]["antspyx"]
    source, target = templates.get_template(), templates.fsl_template()
    recorded = sidecar["Templates"]
    assert recorded["MNI152NLin2009aSym"]["T1w"]["sha256"] == file_sha256(source.t1w)
    assert recorded["MNI152NLin6Asym"]["T1w"]["sha256"] == file_sha256(target.t1w)
    assert recorded["MNI152NLin6Asym"]["brain_mask"]["sha256"] == file_sha256(target.brain_mask)
    qc = sidecar["QC"]
    assert qc["DiceBrainMask"] > 0.95 and qc["DiceBrainMaskAffine"] > 0.95
    # the stand-in differs from 2009aSym by an affine map only: little is left for SyN
    assert 0 <= qc["NonlinearDisplacementMeanMm"] < 1.0
    assert qc["NonlinearDisplacementMeanMm"] <= qc["NonlinearDisplacementMaxMm"]


def test_cached_not_recomputed(standin, computed):
    _, calls = standin
    assert len(calls) == 1
    mtime = computed.stat().st_mtime_ns
    again = template_transforms.template_to_fsl_transform(computed.parent, quality="test")
    assert again == computed and computed.stat().st_mtime_ns == mtime
    assert len(calls) == 1
    # only the .h5, its sidecar and the lock file: no scratch left behind
    names = sorted(p.name for p in computed.parent.iterdir())
    assert names == sorted([computed.name, computed.with_suffix(".json").name,
                            f".{computed.name}.lock"])


def test_waiting_process_uses_the_file_the_other_computed(standin, computed, tmp_path):
    """While another process holds the lock (computing), a caller waits, then finds the file
    and does not compute it again."""
    _, calls = standin
    cache = tmp_path / "cache"
    cache.mkdir()
    result = []
    with open(cache / f".{computed.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.append(
            template_transforms.template_to_fsl_transform(cache, quality="test")))
        waiter.start()
        waiter.join(timeout=1)
        assert waiter.is_alive(), "did not wait for the lock"
        shutil.copyfile(computed.with_suffix(".json"), cache / computed.with_suffix(".json").name)
        shutil.copyfile(computed, cache / computed.name)
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(timeout=30)
    assert result == [cache / computed.name] and len(calls) == 1


@pytest.mark.parametrize("variable", ["STROKE_LESION_APP_TRANSFORMS", "TEMPLATEFLOW_HOME"])
def test_shipped_file_found_first(variable, standin, computed, tmp_path, monkeypatch):
    """A file computed at image build time ($STROKE_LESION_APP_TRANSFORMS, else
    $TEMPLATEFLOW_HOME/.stroke-lesion-app) is used before the cache, which stays empty."""
    home, calls = standin
    shipped = (tmp_path / "shipped" if variable == "STROKE_LESION_APP_TRANSFORMS"
               else home / template_transforms.SHIPPED_SUBDIR)
    shipped.mkdir()
    shutil.copyfile(computed, shipped / computed.name)
    if variable == "STROKE_LESION_APP_TRANSFORMS":
        monkeypatch.setenv(variable, str(shipped))
    try:
        found = template_transforms.template_to_fsl_transform(tmp_path / "cache",
                                                              quality="test")
    finally:
        if variable == "TEMPLATEFLOW_HOME":  # the home is shared with the other tests
            shutil.rmtree(shipped)
    assert found == shipped / computed.name and len(calls) == 1
    assert not (tmp_path / "cache").exists()


def test_key_follows_the_templates_schedule_and_seed():
    record = {"T1w": {"sha256": "a" * 64}, "brain_mask": None}
    other = {"T1w": {"sha256": "b" * 64}, "brain_mask": {"sha256": "c" * 64}}
    full, test = template_transforms.SCHEDULES["full"], template_transforms.SCHEDULES["test"]
    keys = {template_transforms._key(full, 1, record, other),
            template_transforms._key(full, 1, other, record),
            template_transforms._key(test, 1, record, other),
            template_transforms._key(full, 2, record, other)}
    assert len(keys) == 4
    assert template_transforms._key(full, 1, record, other) == template_transforms._key(
        full, 1, dict(record), dict(other))


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("STROKE_LESION_APP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert template_transforms.cache_root() == tmp_path / "xdg" / "stroke-lesion-app"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert template_transforms.cache_root() == tmp_path / "home" / ".cache" / "stroke-lesion-app"
    monkeypatch.setenv("STROKE_LESION_APP_CACHE", str(tmp_path / "env"))
    assert template_transforms.cache_root() == tmp_path / "env"
    assert template_transforms.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_unknown_quality_refused(standin):
    with pytest.raises(ValueError, match="transform quality 'best' unknown"):
        template_transforms.template_to_fsl_transform(quality="best")


def test_cli(standin, computed, tmp_path, monkeypatch, fresh_log):
    """The container build step: --out-dir gets the file (found there, not recomputed);
    --require fails when MNI152NLin6Asym is absent."""
    _, calls = standin
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(computed.with_suffix(".json"), out / computed.with_suffix(".json").name)
    shutil.copyfile(computed, out / computed.name)
    assert template_transforms.main(["--out-dir", str(out), "--quality", "test"]) == 0
    assert len(calls) == 1
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "empty"))
    assert template_transforms.main(["--out-dir", str(out)]) == 0
    assert template_transforms.main(["--out-dir", str(out), "--require"]) == 1
    with pytest.raises(SystemExit):
        template_transforms.main(["--num-threads", "0"])


@pytest.mark.parametrize("module", [templates, template_transforms], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
