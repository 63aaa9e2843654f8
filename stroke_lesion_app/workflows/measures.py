"""Lesion-load measures of one lesion mask."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.atlases import Atlas
from stroke_lesion_app.interfaces.measures import LesionLoad
from stroke_lesion_app.interfaces.registration import ApplyTransform


def init_lesion_load_wf(
    *,
    atlases: list[Atlas] | None = None,
    connectivity: int = 26,
    std_mask_given: bool = False,
    omp_nthreads: int = 1,
    name: str = "lesion_load_wf",
) -> pe.Workflow:
    """Measure a native-space lesion mask: volume, components, hemisphere, tissue/atlas overlap.

    Workflow Graph
    --------------
    ``inputnode → project_to_template (genericLabel) → lesion_load → outputnode``
    (with ``std_mask_given``: ``inputnode.std_lesion_mask → lesion_load``)

    Parameters
    ----------
    atlases : list of Atlas, optional
        Label atlases in MNI152NLin2009aSym space.
    connectivity : {6, 18, 26}
        Neighbourhood of connected components.
    std_mask_given : bool
        The template-space mask comes in through ``inputnode.std_lesion_mask`` (the model's
        own), instead of being projected from the native mask.
    omp_nthreads : int
        ITK threads.
    name : str
        Workflow name.

    Inputs
    ------
    lesion_mask
        Lesion mask, native T1w space.
    anat2std_xfm
        T1w → template transform (projects the mask onto the template grid).
    std2anat_xfm
        Template → T1w transform (maps native points to template mm for hemispheres).
    template
        Template image on the 1 mm MNI152NLin2009aSym grid (the grid of ``std_lesion_mask``).
    std_lesion_mask
        Template-space lesion mask (only read with ``std_mask_given``).

    Outputs
    -------
    std_lesion_mask
        The lesion mask on the 1 mm MNI152NLin2009aSym grid (label interpolation).
    lesion_load
        One-row summary TSV.
    lesion_components
        Per-component TSV.
    lesion_load_columns
        Column descriptions for the summary TSV's JSON sidecar.
    """
    lesion_load_wf = pe.Workflow(name=name)
    lesion_load_wf.__desc__ = (
        "Lesion load was measured in native space (volume in mL, connected components with "
        f"{connectivity}-connectivity, left/right split at the template midline) and on the "
        "MNI152NLin2009aSym grid (overlap with grey matter, white matter and CSF of the "
        "template" + (", and with user-supplied atlases" if atlases else "") + ")."
    )
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["lesion_mask", "anat2std_xfm", "std2anat_xfm", "template", "std_lesion_mask"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["std_lesion_mask", "lesion_load", "lesion_components", "lesion_load_columns"]),
        name="outputnode")
    lesion_load = pe.Node(LesionLoad(atlases=list(atlases or []), connectivity=connectivity),
                          name="lesion_load")
    lesion_load_wf.connect([
        (inputnode, lesion_load, [("lesion_mask", "lesion_mask"),
                                  ("std2anat_xfm", "std2anat_xfm")]),
        (lesion_load, outputnode, [("out_file", "lesion_load"),
                                   ("out_components", "lesion_components"),
                                   ("out_columns", "lesion_load_columns")]),
    ])
    if std_mask_given:
        lesion_load_wf.connect([
            (inputnode, lesion_load, [("std_lesion_mask", "std_lesion_mask")]),
            (inputnode, outputnode, [("std_lesion_mask", "std_lesion_mask")]),
        ])
        return lesion_load_wf
    project_to_template = pe.Node(
        ApplyTransform(interpolation="genericLabel", num_threads=omp_nthreads),
        name="project_to_template", n_procs=omp_nthreads)
    lesion_load_wf.connect([
        (inputnode, project_to_template, [("lesion_mask", "in_file"),
                                          ("anat2std_xfm", "transform"),
                                          ("template", "reference")]),
        (project_to_template, lesion_load, [("out_file", "std_lesion_mask")]),
        (project_to_template, outputnode, [("out_file", "std_lesion_mask")]),
    ])
    return lesion_load_wf
