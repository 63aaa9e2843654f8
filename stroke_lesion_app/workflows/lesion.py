"""The lesion branch of one image: segment (or take the manual mask) → native space → measure."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.atlases import Atlas
from stroke_lesion_app.core.bundle import ModelBundle
from stroke_lesion_app.core.segmentation import InferenceSettings
from stroke_lesion_app.workflows.measures import init_lesion_load_wf
from stroke_lesion_app.workflows.projection import init_lesion_to_native_wf
from stroke_lesion_app.workflows.segmentation import init_lesion_seg_wf

#: Fields of ``init_lesion_wf``'s outputnode.
LESION_OUTPUTS = ("lesion_mask", "lesion_probseg", "std_lesion_mask", "std_lesion_probseg",
                  "segmentation_metadata", "lesion_load", "lesion_components",
                  "lesion_load_columns")


def init_lesion_wf(
    *,
    lesion_source: str = "model",
    bundle: ModelBundle | None = None,
    inference: InferenceSettings | None = None,
    atlases: list[Atlas] | None = None,
    omp_nthreads: int = 1,
    name: str = "lesion_wf",
) -> pe.Workflow:
    """Find the lesion of one image and measure it.

    Workflow Graph
    --------------
    ``lesion_source="model"``:
    ``inputnode.std_t1w → lesion_seg_wf → lesion_to_native_wf → lesion_load_wf → outputnode``
    (``lesion_seg_wf.std_lesion_mask → lesion_load_wf`` as the template-space mask).
    ``lesion_source="manual"``:
    ``inputnode.lesion_mask → lesion_load_wf (projected to the template) → outputnode``.

    Parameters
    ----------
    lesion_source : {"model", "manual"}
        Segment with ``bundle``, or measure the manual mask given in ``inputnode.lesion_mask``.
    bundle : ModelBundle, optional
        The validated model bundle (``lesion_source="model"``); its connectivity is the
        components' neighbourhood.
    inference : InferenceSettings, optional
        TTA, step, folds and the requested device (decided in the segmentation node);
        the defaults when not given.
    atlases : list of Atlas, optional
        Label atlases in MNI152NLin2009aSym space for the regional overlap.
    omp_nthreads : int
        Threads per node.
    name : str
        Workflow name.

    Inputs
    ------
    std_t1w
        Bias-corrected T1w on the 1 mm MNI152NLin2009aSym grid.
    t1w_preproc
        Native T1w (the grid of the native outputs).
    t1w_mask
        Brain mask, native space.
    anat2std_xfm
        T1w → template transform.
    std2anat_xfm
        Template → T1w transform.
    template
        Template image on the 1 mm grid.
    lesion_mask
        Manual lesion mask, native space (``lesion_source="manual"`` only).

    Outputs
    -------
    lesion_mask
        Lesion mask, native space (the model's, or the manual mask itself).
    lesion_probseg
        Lesion probability, native space (model only).
    std_lesion_mask
        Lesion mask on the 1 mm MNI152NLin2009aSym grid.
    std_lesion_probseg
        Lesion probability on that grid (model only).
    segmentation_metadata
        Bundle identity and inference settings for the sidecars (model only).
    lesion_load
        One-row lesion-load TSV.
    lesion_components
        Per-component TSV.
    lesion_load_columns
        Column descriptions of the lesion-load TSV.
    """
    if lesion_source not in ("model", "manual"):
        raise ValueError(f"lesion_source must be 'model' or 'manual', got {lesion_source!r}")
    if lesion_source == "model" and bundle is None:
        raise ValueError("lesion_source='model' needs a validated model bundle")
    lesion_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["std_t1w", "t1w_preproc", "t1w_mask", "anat2std_xfm", "std2anat_xfm",
                "template", "lesion_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(LESION_OUTPUTS)), name="outputnode")
    model = lesion_source == "model"
    lesion_load_wf = init_lesion_load_wf(
        atlases=atlases, connectivity=bundle.connectivity if model else 26,
        std_mask_given=model, omp_nthreads=omp_nthreads)
    lesion_wf.connect([
        (inputnode, lesion_load_wf, [("anat2std_xfm", "inputnode.anat2std_xfm"),
                                     ("std2anat_xfm", "inputnode.std2anat_xfm"),
                                     ("template", "inputnode.template")]),
        (lesion_load_wf, outputnode, [
            ("outputnode.std_lesion_mask", "std_lesion_mask"),
            ("outputnode.lesion_load", "lesion_load"),
            ("outputnode.lesion_components", "lesion_components"),
            ("outputnode.lesion_load_columns", "lesion_load_columns")]),
    ])
    if not model:
        lesion_wf.connect([
            (inputnode, lesion_load_wf, [("lesion_mask", "inputnode.lesion_mask")]),
            (inputnode, outputnode, [("lesion_mask", "lesion_mask")]),
        ])
        return lesion_wf

    lesion_seg_wf = init_lesion_seg_wf(bundle=bundle, inference=inference or InferenceSettings(),
                                       omp_nthreads=omp_nthreads)
    lesion_to_native_wf = init_lesion_to_native_wf(omp_nthreads=omp_nthreads)
    lesion_wf.connect([
        (inputnode, lesion_seg_wf, [("std_t1w", "inputnode.std_t1w"),
                                    ("anat2std_xfm", "inputnode.anat2std_xfm"),
                                    ("t1w_mask", "inputnode.t1w_mask")]),
        (lesion_seg_wf, lesion_to_native_wf, [
            ("outputnode.std_lesion_probseg", "inputnode.std_lesion_probseg"),
            ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask")]),
        (inputnode, lesion_to_native_wf, [("std2anat_xfm", "inputnode.std2anat_xfm"),
                                          ("t1w_preproc", "inputnode.t1w_preproc")]),
        (lesion_seg_wf, lesion_load_wf, [("outputnode.std_lesion_mask",
                                          "inputnode.std_lesion_mask")]),
        (lesion_to_native_wf, lesion_load_wf, [("outputnode.lesion_mask",
                                                "inputnode.lesion_mask")]),
        (lesion_seg_wf, outputnode, [
            ("outputnode.std_lesion_probseg", "std_lesion_probseg"),
            ("outputnode.segmentation_metadata", "segmentation_metadata")]),
        (lesion_to_native_wf, outputnode, [("outputnode.lesion_probseg", "lesion_probseg"),
                                           ("outputnode.lesion_mask", "lesion_mask")]),
    ])
    return lesion_wf
