"""training.package: member specifications, slim checkpoints, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stroke_lesion_app.core.bundle import BundleError
from stroke_lesion_app.training.package import (
    INFERENCE_CHECKPOINT_KEYS,
    MemberSource,
    package_bundle,
    slim_checkpoint,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("a=results/X__nnUNetPlans__3d_fullres",
     MemberSource("a", Path("results/X__nnUNetPlans__3d_fullres"))),
    ("dtk10=r/T__P__3d_fullres:0,1,2@0.5",
     MemberSource("dtk10", Path("r/T__P__3d_fullres"), (0, 1, 2), 0.5)),
    ("demo=r/T__P__3d_fullres:all", MemberSource("demo", Path("r/T__P__3d_fullres"), ("all",))),
])
def test_member_specification(text, expected):
    assert MemberSource.parse(text) == expected


@pytest.mark.parametrize("text", ["no-equals-sign", "=folder", "a=folder:x@", "a b=folder"])
def test_bad_member_specification(text):
    with pytest.raises(ValueError, match="NAME=MODEL_FOLDER"):
        MemberSource.parse(text)


def test_folds_found_and_missing(tmp_path):
    folder = tmp_path / "T__P__3d_fullres"
    for fold in (0, 3):
        (folder / f"fold_{fold}").mkdir(parents=True)
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"x")
    (folder / "fold_1").mkdir()  # unfinished: no checkpoint_final.pth
    assert MemberSource("m", folder).resolved_folds() == (0, 3)
    with pytest.raises(ValueError, match="no fold_\\*/checkpoint_final.pth"):
        MemberSource("m", tmp_path).resolved_folds()


def test_slim_checkpoint_keeps_inference_keys(tmp_path):
    full = {"network_weights": {"w": torch.ones(3)}, "trainer_name": "StrokeTrainerDefault",
            "init_args": {"configuration": "3d_fullres"},
            "inference_allowed_mirroring_axes": (0, 1, 2),
            "optimizer_state": {"state": {0: torch.zeros(1000)}}, "current_epoch": 5}
    torch.save(full, tmp_path / "full.pth")
    slim_checkpoint(tmp_path / "full.pth", tmp_path / "out" / "slim.pth")
    slim = torch.load(tmp_path / "out" / "slim.pth", weights_only=False)
    assert set(slim) == set(INFERENCE_CHECKPOINT_KEYS)
    assert torch.equal(slim["network_weights"]["w"], torch.ones(3))
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(BundleError, match="nnU-Net v2 checkpoint"):
        slim_checkpoint(tmp_path / "other.pth", tmp_path / "x.pth")


def test_package_refusals(tmp_path):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    with pytest.raises(ValueError, match="at least one"):
        package_bundle(tmp_path / "b", [], name="b", version="1")
    with pytest.raises(ValueError, match="unique"):
        package_bundle(tmp_path / "b", [MemberSource("a", folder), MemberSource("a", folder)],
                       name="b", version="1")
    with pytest.raises(ValueError, match="not a trained-model folder"):
        package_bundle(tmp_path / "b", [MemberSource("a", folder, (0,))], name="b", version="1")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b*"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="--force"):
        package_bundle(tmp_path / "taken", [MemberSource("a", folder)], name="b", version="1")
    with pytest.raises(FileExistsError, match="not a bundle"):
        package_bundle(tmp_path / "taken", [MemberSource("a", folder)], name="b", version="1",
                       overwrite=True)
