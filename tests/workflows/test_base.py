"""Workflow graphs build (without running) and expose the documented fields."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from stroke_lesion_app.config import Config, ExecutionSettings, WorkflowSettings
from stroke_lesion_app.core.bids import T1wInput
from stroke_lesion_app.core.bundle import DEMO_WARNING, load_bundle, write_bundle_manifest
from stroke_lesion_app.core.segmentation import InferenceSettings
from stroke_lesion_app.workflows.anatomical import init_anat_prep_wf
from stroke_lesion_app.workflows.base import init_single_subject_wf, init_stroke_lesion_wf
from stroke_lesion_app.workflows.projection import init_lesion_to_native_wf
from stroke_lesion_app.workflows.registration import init_register_template_wf


def _inputs():
    return [
        T1wInput(Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), {"subject": "01"},
                 uri="bids:raw:sub-01/anat/sub-01_T1w.nii.gz"),
        T1wInput(Path("/data/sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz"),
                 {"subject": "02", "session": "1", "run": "2"},
                 [Path("/data/sub-02/ses-1/anat/sub-02_ses-1_label-lesion_roi.nii.gz")],
                 uri="bids:raw:sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz"),
    ]


PER_IMAGE_NODES = [
    "anat_prep_wf.validate_t1w", "anat_prep_wf.bias_correction", "anat_prep_wf.brain_extraction",
    "register_template_wf.template_brain", "register_template_wf.register",
    "ds_anat_wf.ds_t1w_preproc", "ds_anat_wf.ds_t1w_mask", "ds_registration_wf.meta",
    "ds_registration_wf.ds_anat2std_xfm", "ds_registration_wf.ds_std2anat_xfm",
    "ds_registration_wf.ds_std_t1w", "image_report",
]
MANUAL_LESION_NODES = [
    "lesion_wf.lesion_load_wf.project_to_template",
    "lesion_wf.lesion_load_wf.lesion_load", "ds_lesion_load_wf.columns_meta",
    "ds_lesion_load_wf.ds_lesion_load", "ds_lesion_load_wf.ds_lesion_components",
    "ds_lesion_load_wf.ds_std_lesion_mask",
]
SEGMENTATION_NODES = [
    "lesion_wf.lesion_seg_wf.project_brain_mask", "lesion_wf.lesion_seg_wf.segment_lesion",
    "lesion_wf.lesion_to_native_wf.project_probseg",
    "lesion_wf.lesion_to_native_wf.project_mask", "ds_segmentation_wf.ds_std_lesion_probseg",
    "ds_segmentation_wf.ds_std_lesion_mask", "ds_segmentation_wf.ds_lesion_probseg",
    "ds_segmentation_wf.ds_lesion_mask", "lesion_wf.lesion_load_wf.lesion_load",
    "ds_lesion_load_wf.columns_meta", "ds_lesion_load_wf.ds_lesion_load",
    "ds_lesion_load_wf.ds_lesion_components",
]

GROUP_SPACE_NODES = [
    "group_space_wf.normalise", "group_space_wf.maps_std", "ds_group_space_wf.ds_anat2group_xfm",
    "ds_group_space_wf.ds_group2anat_xfm", "ds_group_space_wf.meta_std_mask",
    "ds_group_space_wf.ds_std_mask",
]
GROUP_SPACE_PROBSEG_NODES = ["ds_group_space_wf.meta_std_probseg",
                             "ds_group_space_wf.ds_std_probseg"]


@pytest.fixture
def manifest_only_bundle(tmp_path):
    """A bundle folder with a manifest (graphs read only the manifest; nothing is loaded)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    write_bundle_manifest(bundle, name="fake", version="2.0", description="for graph tests",
                          resolution_mm=2, threshold=0.4, connectivity=18, demo=True,
                          members=[{"name": "m", "folder": "m", "trainer": "T",
                                    "configuration": "3d_fullres", "folds": [0, 1],
                                    "sha256": {"fold_0/checkpoint_final.pth": "0" * 64,
                                               "fold_1/checkpoint_final.pth": "0" * 64}}])
    return load_bundle(bundle)


@pytest.mark.parametrize(("lesion_source", "group_normalisation"),
                         [("model", "auto"), ("manual", "auto"), ("model", "affine")])
def test_stroke_lesion_wf_builds(tmp_path, manifest_only_bundle, lesion_source,
                                 group_normalisation, monkeypatch):
    monkeypatch.delenv("TEMPLATEFLOW_HOME", raising=False)  # no MNI152NLin6Asym
    config = Config(ExecutionSettings(bids_dir=Path("/data"), output_dir=tmp_path / "out",
                                      work_dir=tmp_path / "work"),
                    workflow=WorkflowSettings(device="cpu", model=str(manifest_only_bundle.root),
                                              lesion_source=lesion_source, fast=True,
                                              group_normalisation=group_normalisation))
    workflow = init_stroke_lesion_wf(config=config, inputs=_inputs(),
                                     bundle=manifest_only_bundle)
    working = [name for name in workflow.list_node_names()
               if not name.endswith(("inputnode", "outputnode"))]
    group = ([] if group_normalisation == "affine" else GROUP_SPACE_NODES
             + (GROUP_SPACE_PROBSEG_NODES if lesion_source == "model" else []))
    if lesion_source == "model":  # every image is segmented, with or without a manual mask
        expected = [f"{image}.{node}" for image in ("sub-01_wf", "sub-02_ses-1_run-2_wf")
                    for node in PER_IMAGE_NODES + SEGMENTATION_NODES + group]
    else:  # only the image with a manual mask gets lesion load
        expected = ([f"sub-01_wf.{node}" for node in PER_IMAGE_NODES]
                    + [f"sub-02_ses-1_run-2_wf.{node}"
                       for node in PER_IMAGE_NODES + MANUAL_LESION_NODES + group])
    assert sorted(working) == sorted(expected)
    assert len(workflow._create_flat_graph().nodes()) > 2 * len(PER_IMAGE_NODES)
    if lesion_source == "model":  # --fast: no TTA, step 1.0, one fold per member
        segment = workflow.get_node("sub-01_wf.lesion_wf.lesion_seg_wf.segment_lesion")
        inference = segment.inputs.inference
        assert (inference.tta, inference.step_size, inference.folds_per_member) == (False, 1.0, 1)
        assert segment.inputs.bundle is manifest_only_bundle  # the CLI's object, not reloaded


@pytest.mark.parametrize(("skull_strip", "registration", "with_lesion", "lesion_source"),
                         list(itertools.product(["auto", "deepbet", "ants", "none"],
                                                ["affine", "syn"], [False, True],
                                                ["model", "manual"])))
def test_single_subject_wf_option_grid(tmp_path, manifest_only_bundle, skull_strip,
                                       registration, with_lesion, lesion_source):
    t1w_input = _inputs()[1 if with_lesion else 0]
    workflow = init_single_subject_wf(t1w_input=t1w_input, output_dir=tmp_path,
                                      skull_strip=skull_strip, registration=registration,
                                      omp_nthreads=3, crashdump_dir=tmp_path / "log",
                                      lesion_source=lesion_source,
                                      bundle=manifest_only_bundle,
                                      inference=InferenceSettings(tta=True, step_size=0.7),
                                      name="sub_wf")
    workflow._create_flat_graph()
    assert workflow.get_node("anat_prep_wf.brain_extraction").inputs.method == skull_strip
    register = workflow.get_node("register_template_wf.register")
    assert register.inputs.mode == registration and register.inputs.num_threads == 3
    assert register.n_procs == 3
    register_inputs = workflow.get_node("register_template_wf")._graph
    masked = any("lesion_mask" in str(data.get("connect", []))
                 for _, _, data in register_inputs.edges(data=True))
    assert masked is (with_lesion and registration == "syn")
    if with_lesion:
        assert workflow.get_node("inputnode").inputs.lesion_mask == str(t1w_input.lesion_masks[0])
    assert workflow.get_node("register_template_wf").__desc__.count("lesion") == (
        with_lesion and registration == "syn")
    measured = with_lesion or lesion_source == "model"
    assert (workflow.get_node("lesion_wf.lesion_load_wf") is not None) is measured
    assert (workflow.get_node("lesion_wf.lesion_seg_wf") is not None) is (
        lesion_source == "model")
    report = workflow.get_node("image_report")
    # methods: anatomy, registration, lesion load, segmentation, the group-space pass
    assert len(report.inputs.methods) == 2 + 2 * measured + (lesion_source == "model")
    assert (workflow.get_node("group_space_wf") is not None) is measured
    if measured:
        normalise = workflow.get_node("group_space_wf.normalise")
        assert normalise.inputs.branch == "auto" and normalise.n_procs == 3
        assert "enantiomorphic" in report.inputs.methods[-1]
    if lesion_source == "model":
        segment = workflow.get_node("lesion_wf.lesion_seg_wf.segment_lesion")
        inference = segment.inputs.inference
        assert (inference.tta, inference.step_size, segment.n_procs) == (True, 0.7, 3)
        assert report.inputs.model_warning == DEMO_WARNING
        assert "fake 2.0" in report.inputs.lesion_source
        load = workflow.get_node("lesion_wf.lesion_load_wf.lesion_load")
        assert load.inputs.connectivity == 18  # the bundle's rule
        assert workflow.get_node("lesion_wf.lesion_load_wf.project_to_template") is None
    assert workflow.config["execution"]["crashdump_dir"] == str(tmp_path / "log")
    # nested nodes too: Nipype does not pass a nested workflow's configuration on
    for node in workflow._get_all_nodes():
        assert node.config["execution"]["crashdump_dir"] == str(tmp_path / "log"), node.fullname
    sink = workflow.get_node("ds_anat_wf.ds_t1w_preproc")
    assert sink.inputs.source_entities == t1w_input.entities


def test_subworkflow_fields():
    assert set(init_anat_prep_wf().get_node("inputnode").inputs.copyable_trait_names()) == {
        "t1w"}
    register = init_register_template_wf()
    assert set(register.get_node("outputnode").inputs.copyable_trait_names()) == {
        "anat2std_xfm", "std2anat_xfm", "std_t1w", "template_source", "template",
        "template_mask"}
    projection = init_lesion_to_native_wf(omp_nthreads=2)
    assert projection.get_node("project_probseg").inputs.interpolation == "linear"
    assert projection.get_node("project_mask").inputs.interpolation == "genericLabel"


def test_builder_without_a_gpu_leaves_auto_to_the_nodes(tmp_path, manifest_only_bundle,
                                                          monkeypatch):
    """A GPU-less login node builds the graph for GPU compute nodes (--plugin SLURM): the
    builder must not turn ``auto`` into ``cpu``, nor refuse ``cuda``."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    for device in ("auto", "cuda"):
        config = Config(ExecutionSettings(bids_dir=Path("/data"), output_dir=tmp_path / "out",
                                          work_dir=tmp_path / "work"),
                        workflow=WorkflowSettings(device=device,
                                                  model=str(manifest_only_bundle.root)))
        workflow = init_stroke_lesion_wf(config=config, inputs=_inputs()[:1],
                                         bundle=manifest_only_bundle)
        segment = workflow.get_node("sub-01_wf.lesion_wf.lesion_seg_wf.segment_lesion")
        assert segment.inputs.inference.device == device
        assert workflow.get_node("sub-01_wf.anat_prep_wf.brain_extraction").inputs.device == device


@pytest.mark.parametrize("lesion_source", ["model", "manual"])
def test_group_space_maps_in_both_spaces(tmp_path, manifest_only_bundle, lesion_source):
    """With the FSL template available, the group-space maps go to MNI152NLin6Asym too."""
    workflow = init_single_subject_wf(t1w_input=_inputs()[1], output_dir=tmp_path,
                                      lesion_source=lesion_source, bundle=manifest_only_bundle,
                                      group_normalisation="cost-function", fsl_space=True,
                                      name="sub_wf")
    workflow._create_flat_graph()
    assert workflow.get_node("group_space_wf.normalise").inputs.branch == "cost-function"
    for space in ("std", "fsl"):
        maps = workflow.get_node(f"group_space_wf.maps_{space}")
        assert maps.inputs.space == ("MNI152NLin6Asym" if space == "fsl"
                                     else "MNI152NLin2009aSym")
        sink = workflow.get_node(f"ds_group_space_wf.ds_{space}_mask")
        assert sink.inputs.kind == "group_lesion_mask"
        assert (workflow.get_node(f"ds_group_space_wf.ds_{space}_probseg") is not None) is (
            lesion_source == "model")
    assert workflow.get_node("ds_group_space_wf.ds_fsl_mask").inputs.entity_overrides == {
        "space": "MNI152NLin6Asym"}


def test_edited_mask_workflow_reuses_the_saved_transforms(tmp_path):
    """--lesion-masks: no segmentation or registration node; the saved files are the inputs."""
    from stroke_lesion_app.core.bids import derivative_path
    from stroke_lesion_app.workflows.edited import init_edited_lesion_wf

    t1w_input = _inputs()[0]
    for kind, extension in (("t1w_preproc", ".nii.gz"), ("t1w_mask", ".nii.gz"),
                            ("std_t1w", ".nii.gz"), ("anat2std_xfm", ".mat"),
                            ("std2anat_xfm", ".mat"), ("anat2group_xfm", ".h5")):
        path = derivative_path(tmp_path, t1w_input.entities, kind, extension=extension)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    edited = tmp_path / "sub-01_label-L_mask.nii.gz"
    edited.write_bytes(b"x")
    workflow = init_edited_lesion_wf(t1w_input=t1w_input, edited_mask=edited,
                                     output_dir=tmp_path, name="edit_wf")
    names = workflow.list_node_names()
    assert not any("register" in name or "segment" in name for name in names)
    assert "maps_std" in names and "ds_group_space_wf.ds_std_mask" in names
    assert not any("anat2group_xfm" in name for name in names)   # reused, not rewritten
    load = workflow.get_node("lesion_wf.inputnode")
    assert load.inputs.lesion_mask == str(edited)
    assert load.inputs.anat2std_xfm.endswith("_mode-image_xfm.mat")
    assert workflow.get_node("maps_std").inputs.anat2group_xfm.endswith(
        "desc-lesionaware_xfm.h5")
