"""End to end with an imported model: a MAPPING-layout tree of nnU-Net v1 models (Task100
Default, DTK10 and ResUNet-DA3, Task103 self-training; 5 folds each, random weights) imported in
one command into a 20-network bundle, then ``stroke-lesion-app BIDS OUT participant --model
<bundle>`` on a tiny synthetic head.

The networks are the small v1 fixtures of ``tests/data/nnunet_v1`` (``generic_small``,
``fabians_import_small``: v1's own ``Generic_UNet`` and ``FabiansUNet`` checkpoints); their
plans are set to 2 mm, so that the bundle runs on the app's 2 mm template grid (99×117×95, as
the demo bundle). ``--fast`` runs the first fold of each member (4 networks, about 8 s; the
average of all 20 is checked in ``tests/training/test_model_import.py``); the whole test takes
about 40 s on 2 CPU cores (70 s on a busy machine), most of it the affine registration. What is
checked: the outputs, the provenance in the sidecars (framework, URL, licence "not stated", each
member's v1 trainer) and the report's header (the bundle's own description, no demo warning).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.fixtures import MAPPING_TREE, copy_v1_model
from stroke_lesion_app.cli.model import cli as model_cli
from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.core.bundle import DEMO_WARNING, load_bundle
from tests.conftest import leftover_temporary_files, tiny_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "nnunet_v1"
GENERIC = (DATA / "generic_small" / "v1_models" / "3d_fullres" / "Task900_SmallImport" /
           "nnUNetTrainerV2__nnUNetPlansv2.1")
FABIANS = (DATA / "fabians_import_small" / "v1_models" / "3d_fullres" / "Task900_SmallImport" /
           "nnUNetTrainerV2_ResencUNet_DA3__nnUNetPlans_FabiansResUNet_v2.1")
URL = "https://example.org/mapping-weights.zip"
DESCRIPTION = "MAPPING-layout test bundle (random weights, 2 mm)"
#: the fixture model of each network kind of MAPPING_TREE
MODELS = {"generic": GENERIC, "fabians": FABIANS}
LESION_MAPS = ("label-L_mask", "label-L_probseg", "space-MNI152NLin2009aSym_label-L_mask",
               "space-MNI152NLin2009aSym_label-L_probseg")


def test_imported_mapping_bundle_runs_participant(bids_root, tmp_path):
    trained = tmp_path / "nnUNet_trained_models" / "nnUNet" / "3d_fullres"
    for task, folder, trainer, kind in MAPPING_TREE:
        copy_v1_model(MODELS[kind], trained / task / folder, trainer, spacing_mm=2.0)
    bundle_dir = tmp_path / "bundles" / "mapping"
    result = CliRunner().invoke(model_cli, [
        "import", str(tmp_path / "nnUNet_trained_models"), "-o", str(bundle_dir),
        "--name", "mapping-test", "--url", URL, "--description", DESCRIPTION,
        "--citation", "Huo et al. 2022, arXiv:2211.15486"])
    assert result.exit_code == 0, result.output
    assert "4 member(s), 20 network(s)" in result.output
    bundle = load_bundle(bundle_dir)
    assert bundle.resolution_mm == 2.0 and not bundle.demo

    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz":
                      tiny_head(shape=(20, 24, 18), zooms=(2.0, 2.0, 2.0))})
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(root), str(out), "participant", "-w",
                                      str(tmp_path / "work"), "--plugin", "Linear",
                                      "--skull-strip", "none", "--fast",
                                      "--group-normalisation", "affine",
                                      "--model", str(bundle_dir)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    anat = out / "sub-01" / "anat"
    raw = nib.load(root / "sub-01/anat/sub-01_T1w.nii.gz")
    for name in (*LESION_MAPS, "label-L_desc-lesionload_stats"):
        suffix = ".tsv" if name.endswith("stats") else ".nii.gz"
        assert (anat / f"sub-01_{name}{suffix}").is_file(), name
        assert (anat / f"sub-01_{name}.json").is_file(), name
    assert nib.load(anat / "sub-01_label-L_mask.nii.gz").shape == raw.shape
    probability = nib.load(anat / "sub-01_label-L_probseg.nii.gz").get_fdata()
    assert np.isfinite(probability).all() and 0 <= probability.min() <= probability.max() <= 1
    assert not leftover_temporary_files(out)

    for name in LESION_MAPS:
        sidecar = json.loads((anat / f"sub-01_{name}.json").read_text())
        model = sidecar["Model"]
        assert model["name"] == "mapping-test" and sidecar["Demo"] is False, name
        assert model["manifest_sha256"] == bundle.identity()["manifest_sha256"]
        assert model["source"]["framework"] == "nnU-Net v1"
        assert model["source"]["url"] == URL
        assert model["source"]["citation"] == "Huo et al. 2022, arXiv:2211.15486"
        assert model["licence"] == "not stated"
        assert sorted(m["source"]["trainer"] for m in model["members"]) == sorted(
            trainer for _, _, trainer, _ in MAPPING_TREE)
        assert {m["aggregation"] for m in model["members"]} == {"softmax"}
        assert sidecar["LesionSource"] == "model"
    segmentation = json.loads((anat / "sub-01_space-MNI152NLin2009aSym_label-L_mask.json")
                              .read_text())
    assert segmentation["ModelResolution"] == "2 mm"
    # --fast: the first fold of each of the 4 members
    assert len(segmentation["NetworkPasses"]) == 4

    report = (out / "sub-01.html").read_text()
    assert DESCRIPTION in report and "mapping-test" in report
    assert DEMO_WARNING.split(":")[0] not in report
