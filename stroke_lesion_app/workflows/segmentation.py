"""Lesion segmentation in MNI152NLin2009aSym with a model bundle's ensemble."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.bundle import ModelBundle
from stroke_lesion_app.core.segmentation import (
    BRAIN_MARGIN_MM,
    InferenceSettings,
    segmentation_memory_gb,
)
from stroke_lesion_app.interfaces.registration import ApplyTransform
from stroke_lesion_app.interfaces.segmentation import SegmentLesion


def init_lesion_seg_wf(
    *,
    bundle: ModelBundle,
    inference: InferenceSettings,
    omp_nthreads: int = 1,
    name: str = "lesion_seg_wf",
) -> pe.Workflow:
    """Segment the template-space T1w: ensemble probability, brain restriction, threshold,
    small-component rule.

    Workflow Graph
    --------------
    ``inputnode → project_brain_mask (genericLabel) → segment_lesion → outputnode``
    (and ``inputnode.std_t1w → segment_lesion``)

    Parameters
    ----------
    bundle : ModelBundle
        The model bundle, parsed and validated once (by the CLI); handed to the node as is.
    inference : InferenceSettings
        TTA, sliding-window step, folds per member, and the requested device (``auto``,
        ``cpu`` or ``cuda``), which the node decides on the machine that runs it.
    omp_nthreads : int
        torch CPU threads.
    name : str
        Workflow name.

    Inputs
    ------
    std_t1w
        Bias-corrected T1w on the 1 mm MNI152NLin2009aSym grid.
    t1w_mask
        Brain mask, native space; projected onto the template grid (label interpolation), the
        lesion probability is set to 0 farther than 2 mm outside it.
    anat2std_xfm
        T1w → template transform.

    Outputs
    -------
    std_lesion_probseg
        Lesion probability (float32, 0-1), 1 mm template grid.
    std_lesion_mask
        Lesion mask (uint8) after the bundle's threshold and small-component rule.
    segmentation_metadata
        Bundle identity, inference settings and versions (for the sidecars).
    """
    lesion_seg_wf = pe.Workflow(name=name)
    lesion_seg_wf.__desc__ = (
        f"Lesions were segmented in MNI152NLin2009aSym space by the model bundle "
        f"'{bundle.name}' {bundle.version}: the softmax lesion probabilities of every nnU-Net v2 "
        "[@nnunet] ensemble member with the multi-stage cross-scale attention module "
        "[@mscsa] were averaged"
        + (" (with mirroring test-time augmentation)" if inference.tta else "")
        + (", the networks looking at the brain's bounding box" if inference.brain_box else "")
        + f", set to zero farther than {BRAIN_MARGIN_MM:g} mm outside the brain mask, "
        "thresholded and cleaned of small components as the bundle prescribes, and "
        "projected back onto the native T1w grid (probability: linear; mask: label "
        "interpolation)."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["std_t1w", "t1w_mask", "anat2std_xfm"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["std_lesion_probseg", "std_lesion_mask", "segmentation_metadata"]),
        name="outputnode")
    segment_lesion = pe.Node(
        SegmentLesion(bundle=bundle, inference=inference, num_threads=omp_nthreads),
        name="segment_lesion", n_procs=omp_nthreads,
        mem_gb=segmentation_memory_gb(bundle, inference))
    project_brain_mask = pe.Node(
        ApplyTransform(interpolation="genericLabel", num_threads=omp_nthreads),
        name="project_brain_mask", n_procs=omp_nthreads)
    lesion_seg_wf.connect([
        (inputnode, project_brain_mask, [("t1w_mask", "in_file"), ("std_t1w", "reference"),
                                         ("anat2std_xfm", "transform")]),
        (project_brain_mask, segment_lesion, [("out_file", "brain_mask")]),
        (inputnode, segment_lesion, [("std_t1w", "std_t1w")]),
        (segment_lesion, outputnode, [("std_lesion_probseg", "std_lesion_probseg"),
                                      ("std_lesion_mask", "std_lesion_mask"),
                                      ("metadata", "segmentation_metadata")]),
    ])
    return lesion_seg_wf
