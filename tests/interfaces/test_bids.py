"""Interfaces run as Nipype nodes on tiny images."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.bids import DerivativesDataSink, ValidateT1w
from tests.conftest import tiny_head


def test_validate_t1w_node(tmp_path):
    head = tiny_head()
    stored = head.as_reoriented(nib.orientations.ornt_transform(
        nib.io_orientation(head.affine), nib.orientations.axcodes2ornt("LIA")))
    stored.to_filename(tmp_path / "t1w.nii.gz")
    node = pe.Node(ValidateT1w(in_file=str(tmp_path / "t1w.nii.gz")), name="validate_t1w",
                   base_dir=str(tmp_path / "work"))
    result = node.run()
    conformed = nib.load(result.outputs.out_file)
    assert nib.aff2axcodes(conformed.affine) == ("R", "A", "S")
    np.testing.assert_allclose(conformed.affine, head.affine)
    assert result.outputs.out_description["orientation"] == "LIA"


def test_derivatives_data_sink_node(tmp_path):
    tiny_head().to_filename(tmp_path / "mask.nii")
    node = pe.Node(DerivativesDataSink(
        in_file=str(tmp_path / "mask.nii"), output_dir=str(tmp_path / "out"),
        source_entities={"subject": "01", "session": "1"}, kind="std_lesion_mask",
        entity_overrides={"resolution": "2"}, source_files=["bids:raw:sub-01/anat/x.nii.gz"],
        metadata={"Threshold": 0.5}), name="ds_std_lesion_mask", base_dir=str(tmp_path / "w"))
    result = node.run()
    expected = (tmp_path / "out/sub-01/ses-1/anat/"
                "sub-01_ses-1_space-MNI152NLin2009aSym_res-2_label-L_mask.nii.gz")
    assert result.outputs.out_file == str(expected)
    assert nib.load(expected).shape == (12, 14, 10)  # re-saved gzipped, still a NIfTI
    assert json.loads(expected.with_name(expected.name.replace(".nii.gz", ".json"))
                      .read_text()) == {"Sources": ["bids:raw:sub-01/anat/x.nii.gz"],
                                        "Threshold": 0.5}
    assert sorted(p.name for p in expected.parent.iterdir()) == [
        "sub-01_ses-1_space-MNI152NLin2009aSym_res-2_label-L_mask.json", expected.name]
