"""Workflow graphs build (without running) and expose the documented fields."""

from __future__ import annotations

from pathlib import Path

from stroke_lesion_app.config import Config, ExecutionSettings
from stroke_lesion_app.core.bids import T1wInput
from stroke_lesion_app.workflows.anatomical import init_anat_prep_wf
from stroke_lesion_app.workflows.base import init_single_subject_wf, init_stroke_lesion_wf


def _inputs():
    return [
        T1wInput(Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), {"subject": "01"},
                 uri="bids:raw:sub-01/anat/sub-01_T1w.nii.gz"),
        T1wInput(Path("/data/sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz"),
                 {"subject": "02", "session": "1", "run": "2"},
                 [Path("/data/sub-02/ses-1/anat/sub-02_ses-1_label-lesion_roi.nii.gz")],
                 uri="bids:raw:sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz"),
    ]


def test_stroke_lesion_wf_builds(tmp_path):
    config = Config(ExecutionSettings(bids_dir=Path("/data"), output_dir=tmp_path / "out",
                                      work_dir=tmp_path / "work"))
    workflow = init_stroke_lesion_wf(config=config, inputs=_inputs())
    working = [name for name in workflow.list_node_names()
               if not name.endswith(("inputnode", "outputnode"))]
    assert sorted(working) == sorted([
        "sub-01_wf.anat_prep_wf.validate_t1w", "sub-01_wf.ds_anat_wf.ds_t1w_preproc",
        "sub-02_ses-1_run-2_wf.anat_prep_wf.validate_t1w",
        "sub-02_ses-1_run-2_wf.ds_anat_wf.ds_t1w_preproc",
    ])
    flat = workflow._create_flat_graph()
    assert len(flat.nodes()) >= 4


def test_single_subject_wf_fields(tmp_path):
    t1w_input = _inputs()[1]
    workflow = init_single_subject_wf(t1w_input=t1w_input, output_dir=tmp_path,
                                      crashdump_dir=tmp_path / "log", name="sub-02_wf")
    inputnode = workflow.get_node("inputnode")
    assert inputnode.inputs.t1w == str(t1w_input.path)
    assert inputnode.inputs.lesion_masks == [str(t1w_input.lesion_masks[0])]
    assert workflow.config["execution"]["crashdump_dir"] == str(tmp_path / "log")
    sink = workflow.get_node("ds_anat_wf.ds_t1w_preproc")
    assert sink.inputs.source_entities == {"subject": "02", "session": "1", "run": "2"}
    assert sink.inputs.kind == "t1w_preproc"


def test_anat_prep_wf_fields():
    workflow = init_anat_prep_wf()
    assert set(workflow.get_node("inputnode").inputs.copyable_trait_names()) == {"t1w"}
    assert set(workflow.get_node("outputnode").inputs.copyable_trait_names()) == {
        "t1w_preproc", "t1w_description"}
