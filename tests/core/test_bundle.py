"""Model bundle manifests: loading, name lookup, validation errors, checksums, packaging."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from stroke_lesion_app.core import bundle as bundle_module
from stroke_lesion_app.core.bundle import (
    BUNDLE_FILENAME,
    MODELS_ENV_VAR,
    BundleError,
    compute_checksums,
    file_sha256,
    load_bundle,
    validate_bundle,
    write_bundle_manifest,
)

MEMBER = "Trainer__nnUNetPlans__3d_fullres"


def make_bundle(root: Path, **overrides) -> Path:
    """A bundle with one member, two folds of fake checkpoint bytes, and a valid manifest."""
    folder = root / MEMBER
    for fold in (0, 1):
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"weights %d" % fold)
    (folder / "plans.json").write_text("{}")
    (folder / "dataset.json").write_text("{}")
    member = {"name": "a", "folder": MEMBER, "trainer": "StrokeTrainerDefaultMSCSA",
              "configuration": "3d_fullres", "folds": [0, 1], "weight": 1.0}
    member.update(overrides.pop("member", {}))
    write_bundle_manifest(root, name="tiny", version="0.0.1", members=[member],
                          min_component_voxels=3, demo=True, licence="CC0",
                          training_data="synthetic", **overrides)
    return root


def edit_manifest(root: Path, edit) -> None:
    path = root / BUNDLE_FILENAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_written_manifest_loads_and_validates(tmp_path):
    root = make_bundle(tmp_path / "b")
    bundle = validate_bundle(load_bundle(root))
    assert (bundle.name, bundle.version, bundle.space) == ("tiny", "0.0.1", "MNI152NLin2009aSym")
    assert (bundle.threshold, bundle.min_component_voxels, bundle.connectivity) == (0.5, 3, 26)
    assert bundle.demo is True and bundle.resolution_mm == 1.0
    (member,) = bundle.members
    assert member.folds == (0, 1) and member.folder == root.resolve() / MEMBER
    assert member.sha256["fold_1/checkpoint_final.pth"] == file_sha256(
        root / MEMBER / "fold_1" / "checkpoint_final.pth")
    identity = bundle.identity()
    assert identity["name"] == "tiny" and len(identity["manifest_sha256"]) == 64
    assert load_bundle(root / BUNDLE_FILENAME).root == bundle.root  # the manifest path works too


def test_bundle_found_by_name(tmp_path, monkeypatch):
    make_bundle(tmp_path / "models" / "tiny")
    monkeypatch.setenv(MODELS_ENV_VAR, str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    assert load_bundle("tiny").root == (tmp_path / "models" / "tiny").resolve()
    monkeypatch.delenv(MODELS_ENV_VAR)
    assert load_bundle("tiny", models_dir=tmp_path / "models").name == "tiny"
    with pytest.raises(BundleError, match="no such model bundle.*STROKE_LESION_APP_MODELS"):
        load_bundle("nonexistent")


def test_name_wins_over_a_working_directory_folder_that_is_no_bundle(tmp_path, monkeypatch):
    # `make demo` runs the app beside its output folder demo/: --model demo is the package's
    (tmp_path / "demo" / "bids").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(MODELS_ENV_VAR, raising=False)
    assert load_bundle("demo").root != (tmp_path / "demo").resolve()
    assert load_bundle("demo").name == "demo"
    # as a path, or when that folder is a bundle, the folder is meant
    with pytest.raises(BundleError, match=r"demo/bundle.json: missing"):
        load_bundle("./demo")
    make_bundle(tmp_path / "demo")
    assert load_bundle("demo").root == (tmp_path / "demo").resolve()
    (tmp_path / "plain").mkdir()
    with pytest.raises(BundleError, match=r"plain/bundle.json: missing"):
        load_bundle("plain")


def _drop(key):
    return lambda m: m.pop(key)


def _member(key, value):
    return lambda m: m["members"][0].__setitem__(key, value)


@pytest.mark.parametrize("edit, message", [
    (_drop("space"), r"missing keys \['space'\]"),
    (_drop("members"), r"missing keys \['members'\]"),
    (_member("weight", 0), "'weight' must be > 0"),
    (_member("weight", -1.5), "'weight' must be > 0"),
    (_member("folds", []), "'folds' must be a non-empty list"),
    (lambda m: m["members"][0].pop("trainer"), r"lacks \['trainer'\]"),
    (lambda m: m.__setitem__("threshold", 1.5), "'threshold' must lie in"),
    (lambda m: m.__setitem__("connectivity", 4), "'connectivity' must be one of"),
    (_member("folder", "../elsewhere"), "relative to the bundle folder"),
], ids=["no-space", "no-members", "zero-weight", "negative-weight", "no-folds", "no-trainer",
        "threshold", "connectivity", "folder-outside"])
def test_bad_manifest_is_named(tmp_path, edit, message):
    root = make_bundle(tmp_path / "b")
    edit_manifest(root, edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(root)
    text = str(info.value)
    assert str(root / BUNDLE_FILENAME) in text and "\n" not in text


def test_missing_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=f"{BUNDLE_FILENAME}: missing.*write_bundle_manifest"):
        load_bundle(tmp_path / "empty")


def test_bad_json(tmp_path):
    root = make_bundle(tmp_path / "b")
    (root / BUNDLE_FILENAME).write_text('{"name": "tiny",')
    with pytest.raises(BundleError, match="not valid JSON.*fix the syntax") as info:
        load_bundle(root)
    assert str(root / BUNDLE_FILENAME) in str(info.value)


def test_wrong_space(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "b", space="MNI152NLin6Asym"))
    with pytest.raises(BundleError, match="MNI152NLin6Asym.*MNI152NLin2009aSym") as info:
        validate_bundle(bundle)
    assert str(bundle.manifest_path) in str(info.value)
    assert validate_bundle(bundle, expected_space="MNI152NLin6Asym") is bundle


def test_missing_member_folder(tmp_path):
    root = make_bundle(tmp_path / "b")
    (root / MEMBER).rename(root / "moved")
    with pytest.raises(BundleError, match=f"{MEMBER}: member 'a' folder is missing"):
        validate_bundle(root)


def test_missing_fold_checkpoint(tmp_path):
    root = make_bundle(tmp_path / "b")
    checkpoint = root / MEMBER / "fold_1" / "checkpoint_final.pth"
    checkpoint.unlink()
    with pytest.raises(BundleError, match="checkpoint of fold 1 .* is missing") as info:
        validate_bundle(root)
    assert str(checkpoint.resolve()) in str(info.value)


def test_checksum_mismatch(tmp_path):
    root = make_bundle(tmp_path / "b")
    checkpoint = root / MEMBER / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256 mismatch") as info:
        validate_bundle(root)
    assert str(checkpoint.resolve()) in str(info.value)
    validate_bundle(root, check_checksums=False)  # explicit opt-out


def test_missing_checksum_entry(tmp_path):
    root = make_bundle(tmp_path / "b")
    edit_manifest(root, lambda m: m["members"][0]["sha256"].pop("fold_1/checkpoint_final.pth"))
    with pytest.raises(BundleError, match="no sha256 for 'fold_1/checkpoint_final.pth'"):
        validate_bundle(root)


def test_compute_checksums(tmp_path):
    root = make_bundle(tmp_path / "b")
    sums = compute_checksums(root / MEMBER, [0, 1])
    assert sorted(sums) == ["fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth"]
    assert sums["fold_0/checkpoint_final.pth"] == file_sha256(
        root / MEMBER / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(BundleError, match="fold_4/checkpoint_final.pth: missing"):
        compute_checksums(root / MEMBER, [4])


def test_docstring_examples():
    result = doctest.testmod(bundle_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
