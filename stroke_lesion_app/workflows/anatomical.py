"""Anatomical preparation of the T1w image."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.bids import ValidateT1w


def init_anat_prep_wf(*, omp_nthreads: int = 1, name: str = "anat_prep_wf") -> pe.Workflow:
    """Validate the raw T1w and conform it (RAS+, float32, NaN-free; no resampling).

    Skull-stripping and bias-field correction join this workflow in a later release.

    Workflow Graph
    --------------
    ``inputnode.t1w → validate_t1w → outputnode.t1w_preproc``

    Parameters
    ----------
    omp_nthreads : int
        Threads a node of this workflow may use.
    name : str
        Workflow name.

    Inputs
    ------
    t1w
        Raw T1w NIfTI (native space, any orientation and voxel size).

    Outputs
    -------
    t1w_preproc
        Conformed T1w (native space, RAS+ axis order, float32), same voxel grid positions.
    t1w_description
        Dictionary with the raw image's shape, voxel size (mm), orientation and dtype.
    """
    anat_prep_wf = pe.Workflow(name=name)
    anat_prep_wf.__desc__ = (
        "The T1-weighted image was checked (3D, finite, non-constant, plausible affine) and "
        "reoriented to RAS+ without resampling."
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc", "t1w_description"]),
                         name="outputnode")
    validate_t1w = pe.Node(ValidateT1w(), name="validate_t1w", n_procs=1)
    anat_prep_wf.connect([
        (inputnode, validate_t1w, [("t1w", "in_file")]),
        (validate_t1w, outputnode, [("out_file", "t1w_preproc"),
                                    ("out_description", "t1w_description")]),
    ])
    return anat_prep_wf
