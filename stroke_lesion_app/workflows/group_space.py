"""Group-space lesion maps of one image: lesion-aware normalisation and resampling."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.bids import TEMPLATE_SPACE
from stroke_lesion_app.interfaces.group_space import GroupSpaceMaps, LesionAwareNormalisation

#: The second group space (FSL's MNI152), used when its template is available.
FSL_SPACE = "MNI152NLin6Asym"


def init_group_space_wf(
    *,
    branch: str = "auto",
    model_lesion: bool = True,
    fsl_space: bool = False,
    omp_nthreads: int = 1,
    name: str = "group_space_wf",
) -> pe.Workflow:
    """Re-normalise one T1w with its lesion known, and put the lesion maps in group space.

    Segmentation keeps its own (first-pass) registration; this second pass only serves the
    maps that group analyses (lesion-symptom mapping, disconnection) stack across subjects.

    Workflow Graph
    --------------
    ``inputnode → normalise (enantiomorphic / cost-function / SyN) → maps_std[, maps_fsl]``
    ``→ outputnode``

    Parameters
    ----------
    branch : {"auto", "enantiomorphic", "cost-function", "syn"}
        Normalisation branch (``auto``: from the lesion's extent and sides).
    model_lesion : bool
        The lesion comes from the model: the maps are resampled from its first-pass
        template-space mask and probability (one interpolation); otherwise from the native mask.
    fsl_space : bool
        Also write the maps on the MNI152NLin6Asym 1 mm grid (182×218×182) through the
        template-to-template transform.
    omp_nthreads : int
        ITK threads.
    name : str
        Workflow name.

    Inputs
    ------
    t1w_brain
        Skull-stripped T1w, native space (the moving image).
    t1w_mask
        Brain mask, native space.
    lesion_mask
        Lesion mask, native space (model, manual or edited).
    std_lesion_mask
        The model's first-pass lesion mask, MNI152NLin2009aSym (``model_lesion`` only).
    std_lesion_probseg
        The model's first-pass lesion probability, MNI152NLin2009aSym (``model_lesion`` only).
    anat2std_xfm
        First-pass (segmentation) T1w → template transform.
    std2anat_xfm
        First-pass template → T1w transform.
    template
        MNI152NLin2009aSym brain, 1 mm.
    template_mask
        Its brain mask.

    Outputs
    -------
    anat2group_xfm
        Lesion-aware composite transform (``.h5``), T1w → MNI152NLin2009aSym.
    group2anat_xfm
        Its inverse.
    record
        Branch, reason, lesion geometry and parameters (sidecar ``Normalisation``).
    std_mask
        Lesion mask on the MNI152NLin2009aSym grid (uint8).
    std_probseg
        Lesion probability on that grid (``model_lesion`` only).
    std_chain
        The transforms of those maps, in the order points travel.
    std_interpolation
        Interpolation of the mask and the probability.
    fsl_mask
        Lesion mask on the MNI152NLin6Asym grid (``fsl_space`` only).
    fsl_probseg
        Lesion probability on that grid (``fsl_space`` and ``model_lesion``).
    fsl_chain
        Their transforms (template-to-template first).
    fsl_interpolation
        Their interpolation.
    """
    group_space_wf = pe.Workflow(name=name)
    group_space_wf.__desc__ = (
        "For group analyses, the T1w was normalised a second time with the lesion known "
        "[@nachev2008; @brett2001]: a unilateral lesion was filled with the mirrored healthy "
        "hemisphere, mirrored through a lesion-masked SyN (enantiomorphic normalisation), a "
        "bilateral or very large lesion was excluded from the similarity metric (cost-function "
        "masking); SyN (cross-correlation) started from the first affine registration. The "
        "lesion maps were resampled onto "
        f"{TEMPLATE_SPACE}" + (f" and {FSL_SPACE}" if fsl_space else "")
        + " through this transform in a single interpolation.")
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["t1w_brain", "t1w_mask", "lesion_mask", "std_lesion_mask", "std_lesion_probseg",
                "anat2std_xfm", "std2anat_xfm", "template", "template_mask"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["anat2group_xfm", "group2anat_xfm", "record"]
        + [f"{prefix}_{field}" for prefix in ("std", "fsl")
           for field in ("mask", "probseg", "chain", "interpolation")]),
        name="outputnode")
    normalise = pe.Node(LesionAwareNormalisation(branch=branch, num_threads=omp_nthreads),
                        name="normalise", n_procs=omp_nthreads, mem_gb=2)
    maps_std = pe.Node(GroupSpaceMaps(space=TEMPLATE_SPACE, num_threads=omp_nthreads),
                       name="maps_std", n_procs=omp_nthreads)
    group_space_wf.connect([
        (inputnode, normalise, [("t1w_brain", "in_file"), ("t1w_mask", "in_mask"),
                                ("lesion_mask", "lesion_mask"),
                                ("anat2std_xfm", "anat2std_xfm"),
                                ("std2anat_xfm", "std2anat_xfm"), ("template", "reference"),
                                ("template_mask", "reference_mask")]),
        (normalise, outputnode, [("anat2group_xfm", "anat2group_xfm"),
                                 ("group2anat_xfm", "group2anat_xfm"), ("record", "record")]),
    ])
    spaces = [("std", maps_std)]
    if fsl_space:
        maps_fsl = pe.Node(GroupSpaceMaps(space=FSL_SPACE, num_threads=omp_nthreads),
                           name="maps_fsl", n_procs=omp_nthreads)
        spaces.append(("fsl", maps_fsl))
    for prefix, maps in spaces:
        group_space_wf.connect([
            (inputnode, maps, [("template", "reference")]),
            (normalise, maps, [("anat2group_xfm", "anat2group_xfm")]),
            (maps, outputnode, [("mask", f"{prefix}_mask"), ("chain", f"{prefix}_chain"),
                                ("interpolation", f"{prefix}_interpolation")]),
        ])
        if model_lesion:
            group_space_wf.connect([
                (inputnode, maps, [("std_lesion_mask", "std_lesion_mask"),
                                   ("std_lesion_probseg", "std_lesion_probseg"),
                                   ("std2anat_xfm", "std2anat_xfm")]),
                (maps, outputnode, [("probseg", f"{prefix}_probseg")]),
            ])
        else:
            group_space_wf.connect(inputnode, "lesion_mask", maps, "lesion_mask")
    return group_space_wf
