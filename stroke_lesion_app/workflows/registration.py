"""Registration of the T1w to MNI152NLin2009aSym."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.registration import Register, TemplateBrain


def init_register_template_wf(
    *,
    registration: str = "affine",
    use_lesion_mask: bool = False,
    omp_nthreads: int = 1,
    name: str = "register_template_wf",
) -> pe.Workflow:
    """Register the skull-stripped T1w to the MNI152NLin2009aSym brain (1 mm) with antspyx.

    Workflow Graph
    --------------
    ``template_brain ─┐``
    ``inputnode ──────┴→ register → outputnode``

    Parameters
    ----------
    registration : {"affine", "syn"}
        ``affine`` (rigid → affine, the normalisation of ATLAS v2.0) or ``syn`` (affine + SyN).
    use_lesion_mask : bool
        Whether ``inputnode.lesion_mask`` is connected (``syn`` only): the lesion is then
        excluded from the SyN stage's
        similarity metric (cost-function masking).
    omp_nthreads : int
        ITK threads.
    name : str
        Workflow name.

    Inputs
    ------
    t1w_preproc
        Bias-corrected T1w head (native space); resampled onto the template grid as ``std_t1w``.
    t1w_brain
        Skull-stripped T1w (native space), the moving image.
    t1w_mask
        Brain mask (native space), the moving metric mask.
    lesion_mask
        Native-space lesion mask (only used when ``use_lesion_mask``).

    Outputs
    -------
    anat2std_xfm
        T1w → MNI152NLin2009aSym transform (``.mat`` affine, ``.h5`` composite for SyN).
    std2anat_xfm
        MNI152NLin2009aSym → T1w transform, same format.
    std_t1w
        ``t1w_preproc`` resampled (linear) onto the 197×233×189 template grid.
    template_source
        Where the template came from (``templateflow`` or ``nilearn``).
    template
        The template brain (1 mm grid) used as the fixed image, for later resampling.
    template_mask
        The template brain mask, for the report's registration check.
    """
    register_template_wf = pe.Workflow(name=name)
    register_template_wf.__desc__ = (
        "The skull-stripped T1w was registered to the MNI152NLin2009aSym template "
        "[@mni2009; @templateflow] with antspyx [@ants] ("
        + ("rigid and affine stages, mutual information" if registration == "affine"
           else "rigid, affine and symmetric image normalisation (SyN) stages")
        + ("; the known lesion was excluded from the similarity metric" if use_lesion_mask
           else "") + ")."
    )
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["t1w_preproc", "t1w_brain", "t1w_mask", "lesion_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["anat2std_xfm", "std2anat_xfm", "std_t1w", "template_source", "template",
                "template_mask"]),
        name="outputnode")
    template_brain = pe.Node(TemplateBrain(), name="template_brain")
    register = pe.Node(Register(mode=registration, num_threads=omp_nthreads), name="register",
                       n_procs=omp_nthreads, mem_gb=2)
    register_template_wf.connect([
        (inputnode, register, [("t1w_brain", "in_file"), ("t1w_mask", "in_mask"),
                               ("t1w_preproc", "moving_full")]),
        (template_brain, register, [("brain", "reference"), ("brain_mask", "reference_mask")]),
        (register, outputnode, [("anat2std_xfm", "anat2std_xfm"),
                                ("std2anat_xfm", "std2anat_xfm"), ("out_file", "std_t1w")]),
        (template_brain, outputnode, [("source", "template_source"), ("brain", "template"),
                                      ("brain_mask", "template_mask")]),
    ])
    if use_lesion_mask:
        register_template_wf.connect(inputnode, "lesion_mask", register, "lesion_mask")
    return register_template_wf
