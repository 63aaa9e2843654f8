"""SegmentLesion as a Nipype node: the demo bundle on the template brain, and where the device
is decided (in the node, on the machine that runs it)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.bundle import load_bundle
from stroke_lesion_app.core.segmentation import InferenceSettings
from stroke_lesion_app.core.templates import TEMPLATE_SHAPE, get_template, template_brain
from stroke_lesion_app.interfaces import segmentation as segmentation_interface
from stroke_lesion_app.interfaces.segmentation import SegmentLesion


@pytest.fixture(scope="module")
def template_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    brain, mask = template_brain(get_template())
    nib.save(brain, folder / "std_t1w.nii.gz")
    nib.save(mask, folder / "brain_mask.nii.gz")
    return folder / "std_t1w.nii.gz", folder / "brain_mask.nii.gz"


def test_auto_device_is_decided_when_the_node_runs(tmp_path, monkeypatch, template_inputs):
    import torch

    std_t1w, brain_mask = template_inputs
    decided = []
    real_resolve = segmentation_interface.InferenceSettings.resolved

    def recording_resolve(settings, num_threads=None):
        resolved = real_resolve(settings, num_threads)
        decided.append((settings.device, resolved.device))
        return resolved

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(segmentation_interface.InferenceSettings, "resolved", recording_resolve)
    node = pe.Node(SegmentLesion(std_t1w=str(std_t1w), brain_mask=str(brain_mask),
                                 bundle=load_bundle("demo"),
                                 inference=InferenceSettings.from_options(device="auto",
                                                                          fast=True),
                                 num_threads=2), name="segment_lesion", base_dir=str(tmp_path))
    assert node.inputs.inference.device == "auto"  # nothing decided when the node was built
    result = node.run()
    assert decided == [("auto", "cpu")]
    assert result.outputs.metadata["Inference"]["Device"] == "cpu"
    for name in ("std_lesion_probseg", "std_lesion_mask"):
        image = nib.load(getattr(result.outputs, name))
        assert image.shape == TEMPLATE_SHAPE
    probability = np.asanyarray(nib.load(result.outputs.std_lesion_probseg).dataobj)
    assert probability.min() >= 0 and probability.max() <= 1
    json.dumps(result.outputs.metadata)  # the sidecar metadata is JSON-ready


def test_cuda_without_a_gpu_fails_in_the_node(tmp_path, monkeypatch, template_inputs):
    import torch

    std_t1w, brain_mask = template_inputs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    node = pe.Node(SegmentLesion(std_t1w=str(std_t1w), bundle=load_bundle("demo"),
                                 inference=InferenceSettings(device="cuda")),
                   name="segment_lesion", base_dir=str(tmp_path))
    with pytest.raises(Exception, match="--device cuda: no CUDA device is visible"):
        node.run()
