"""Graph of ``init_lesion_seg_wf`` (built, not run)."""

from __future__ import annotations

from stroke_lesion_app.core.bundle import load_bundle
from stroke_lesion_app.core.segmentation import InferenceSettings
from stroke_lesion_app.workflows.segmentation import init_lesion_seg_wf


def _edges(workflow, source: str, target: str) -> set[tuple[str, str]]:
    graph = workflow._graph
    nodes = {node.name: node for node in graph.nodes()}
    return set(graph.get_edge_data(nodes[source], nodes[target])["connect"])


def test_lesion_seg_wf_restricts_to_the_projected_brain_mask():
    bundle = load_bundle("demo")
    workflow = init_lesion_seg_wf(bundle=bundle, inference=InferenceSettings.from_options(
        fast=True), omp_nthreads=2)
    assert set(workflow.get_node("inputnode").inputs.copyable_trait_names()) == {
        "std_t1w", "t1w_mask", "anat2std_xfm"}
    assert _edges(workflow, "inputnode", "project_brain_mask") == {
        ("t1w_mask", "in_file"), ("std_t1w", "reference"), ("anat2std_xfm", "transform")}
    assert _edges(workflow, "project_brain_mask", "segment_lesion") == {
        ("out_file", "brain_mask")}
    project = workflow.get_node("project_brain_mask")
    assert project.inputs.interpolation == "genericLabel"
    segment = workflow.get_node("segment_lesion")
    assert segment.inputs.brain_margin_mm == 2.0
    assert segment.inputs.inference.folds_per_member == 1
    assert "2 mm outside the brain mask" in workflow.__desc__
