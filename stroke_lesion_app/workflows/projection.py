"""Back-projection of template-space lesion maps to the native T1w grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.registration import ApplyTransform


def init_lesion_to_native_wf(*, omp_nthreads: int = 1,
                             name: str = "lesion_to_native_wf") -> pe.Workflow:
    """Bring the template-space lesion probability (linear) and mask (label) to native space.

    Workflow Graph
    --------------
    ``inputnode → project_probseg (linear), project_mask (genericLabel) → outputnode``

    Parameters
    ----------
    omp_nthreads : int
        ITK threads.
    name : str
        Workflow name.

    Inputs
    ------
    std_lesion_probseg
        Lesion probability, MNI152NLin2009aSym grid.
    std_lesion_mask
        Lesion mask, MNI152NLin2009aSym grid.
    std2anat_xfm
        Template → T1w transform.
    t1w_preproc
        Native T1w whose grid and affine the outputs take, exactly.

    Outputs
    -------
    lesion_probseg
        Lesion probability (float32, 0-1), native grid.
    lesion_mask
        Lesion mask (uint8), native grid.
    """
    lesion_to_native_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["std_lesion_probseg", "std_lesion_mask", "std2anat_xfm", "t1w_preproc"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["lesion_probseg", "lesion_mask"]),
                         name="outputnode")
    project_probseg = pe.Node(ApplyTransform(interpolation="linear", num_threads=omp_nthreads),
                              name="project_probseg", n_procs=omp_nthreads)
    project_mask = pe.Node(ApplyTransform(interpolation="genericLabel",
                                          num_threads=omp_nthreads),
                           name="project_mask", n_procs=omp_nthreads)
    lesion_to_native_wf.connect([
        (inputnode, project_probseg, [("std_lesion_probseg", "in_file"),
                                      ("t1w_preproc", "reference"),
                                      ("std2anat_xfm", "transform")]),
        (inputnode, project_mask, [("std_lesion_mask", "in_file"),
                                   ("t1w_preproc", "reference"),
                                   ("std2anat_xfm", "transform")]),
        (project_probseg, outputnode, [("out_file", "lesion_probseg")]),
        (project_mask, outputnode, [("out_file", "lesion_mask")]),
    ])
    return lesion_to_native_wf
