"""Anatomical preparation of the T1w image: checks, bias correction, skull-stripping."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.anatomical import BiasFieldCorrection, BrainExtraction
from stroke_lesion_app.interfaces.bids import ValidateT1w

SKULL_STRIP_DESCRIPTIONS = {
    "auto": "deepbet [@deepbet] (registration-based extraction with antspyx when deepbet is "
            "unavailable)",
    "deepbet": "deepbet [@deepbet]",
    "ants": "registration of the head to the MNI152NLin2009aSym brain with antspyx and "
            "back-projection of the template brain mask",
    "none": "none (the input was declared skull-stripped; the mask is its non-zero region)",
}


def init_anat_prep_wf(
    *,
    skull_strip: str = "auto",
    omp_nthreads: int = 1,
    device: str = "cpu",
    name: str = "anat_prep_wf",
) -> pe.Workflow:
    """Check the raw T1w, conform it, correct the bias field and extract the brain.

    Workflow Graph
    --------------
    ``inputnode.t1w → validate_t1w → bias_correction → brain_extraction → outputnode``

    Parameters
    ----------
    skull_strip : {"auto", "deepbet", "ants", "none"}
        Skull-stripping backend (``none`` for already skull-stripped inputs).
    omp_nthreads : int
        Threads a node of this workflow may use.
    device : {"auto", "cpu", "cuda"}
        Where deepbet runs, as requested (``auto`` is decided by the node, where it runs).
    name : str
        Workflow name.

    Inputs
    ------
    t1w
        Raw T1w NIfTI (native space, any orientation and voxel size).

    Outputs
    -------
    t1w_preproc
        Conformed (RAS+, float32), N4 bias-corrected T1w head, native space, same voxel grid
        positions as the input.
    t1w_brain
        ``t1w_preproc`` with zeros outside the brain mask.
    t1w_mask
        Brain mask (uint8), native space.
    t1w_description
        Dictionary with the raw image's shape, voxel size (mm), orientation and dtype.
    skull_strip_method
        Backend actually used (``auto`` resolved).
    """
    anat_prep_wf = pe.Workflow(name=name)
    anat_prep_wf.__desc__ = (
        "The T1-weighted image was checked (3D, finite, non-constant, plausible affine), "
        "reoriented to RAS+ without resampling, corrected for intensity non-uniformity with "
        "N4 [@n4] (antspyx) and skull-stripped with "
        f"{SKULL_STRIP_DESCRIPTIONS[skull_strip]}."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        "t1w_preproc", "t1w_brain", "t1w_mask", "t1w_description", "skull_strip_method"]),
        name="outputnode")
    validate_t1w = pe.Node(ValidateT1w(), name="validate_t1w", n_procs=1)
    bias_correction = pe.Node(BiasFieldCorrection(num_threads=omp_nthreads),
                              name="bias_correction", n_procs=omp_nthreads)
    brain_extraction = pe.Node(
        BrainExtraction(method=skull_strip, device=device, num_threads=omp_nthreads),
        name="brain_extraction", n_procs=omp_nthreads, mem_gb=3)
    anat_prep_wf.connect([
        (inputnode, validate_t1w, [("t1w", "in_file")]),
        (validate_t1w, bias_correction, [("out_file", "in_file")]),
        (bias_correction, brain_extraction, [("out_file", "in_file")]),
        (validate_t1w, outputnode, [("out_description", "t1w_description")]),
        (bias_correction, outputnode, [("out_file", "t1w_preproc")]),
        (brain_extraction, outputnode, [("out_file", "t1w_brain"),
                                        ("out_mask", "t1w_mask"),
                                        ("method", "skull_strip_method")]),
    ])
    return anat_prep_wf
