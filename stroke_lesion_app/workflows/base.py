"""Top-level workflows: one per run, one per T1w image. The only workflow module that reads
the run-wide :class:`~stroke_lesion_app.config.Config`."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.config import Config
from stroke_lesion_app.core.bids import T1wInput, derivative_path
from stroke_lesion_app.core.bundle import DEMO_WARNING, load_bundle
from stroke_lesion_app.core.templates import templateflow_atlases
from stroke_lesion_app.interfaces.reports import ImageReport
from stroke_lesion_app.workflows.anatomical import init_anat_prep_wf
from stroke_lesion_app.workflows.measures import init_lesion_load_wf
from stroke_lesion_app.workflows.outputs import (
    init_ds_anat_wf,
    init_ds_lesion_load_wf,
    init_ds_registration_wf,
    init_ds_segmentation_wf,
)
from stroke_lesion_app.workflows.projection import init_lesion_to_native_wf
from stroke_lesion_app.workflows.registration import init_register_template_wf
from stroke_lesion_app.workflows.segmentation import init_lesion_seg_wf


def init_stroke_lesion_wf(
    *, config: Config, inputs: list[T1wInput], name: str = "stroke_lesion_app_wf"
) -> pe.Workflow:
    """Build the participant-level workflow: one sub-workflow per T1w image.

    Workflow Graph
    --------------
    ``sub-<label>[_ses-<label>][_run-<n>]_wf`` for every image, side by side.

    Parameters
    ----------
    config : Config
        Run-wide settings (output dir, work dir, threads, run id).
    inputs : list of T1wInput
        Images that passed input checks.
    name : str
        Workflow name.

    Inputs
    ------
    (none; every sub-workflow has its input set at construction)

    Outputs
    -------
    (none; every sub-workflow writes its own derivatives)
    """
    stroke_lesion_wf = pe.Workflow(name=name,
                                   base_dir=str(config.execution.work_dir))
    settings = config.workflow
    segmentation = {}
    if settings.lesion_source == "model":
        segmentation = {"bundle": Path(settings.model), "tta": settings.tta and not settings.fast,
                        "step_size": 1.0 if settings.fast else settings.step_size,
                        "folds_per_member": 1 if settings.fast else None}
    for t1w_input in inputs:
        single_subject_wf = init_single_subject_wf(
            t1w_input=t1w_input,
            output_dir=config.execution.output_dir,
            skull_strip=config.workflow.skull_strip,
            registration=config.workflow.registration,
            device=config.workflow.resolved_device(),
            atlases=list(config.workflow.atlases) + templateflow_atlases(),
            omp_nthreads=config.resolved_omp_nthreads(),
            crashdump_dir=subject_log_dir(config, t1w_input) / t1w_input.name,
            lesion_source=settings.lesion_source,
            **segmentation,
            name=f"{t1w_input.name}_wf",
        )
        stroke_lesion_wf.add_nodes([single_subject_wf])
    return stroke_lesion_wf


def init_single_subject_wf(
    *,
    t1w_input: T1wInput,
    output_dir: Path,
    skull_strip: str = "auto",
    registration: str = "affine",
    device: str = "cpu",
    atlases: list[str] | None = None,
    omp_nthreads: int = 1,
    crashdump_dir: Path | None = None,
    lesion_source: str = "model",
    bundle: Path | None = None,
    tta: bool = True,
    step_size: float = 0.5,
    folds_per_member: int | None = None,
    name: str = "single_subject_wf",
) -> pe.Workflow:
    """Process one T1w image and write its derivatives.

    Workflow Graph
    --------------
    ``inputnode.t1w → anat_prep_wf → register_template_wf → ds_registration_wf``
    ``                      └──────→ ds_anat_wf            └→ image_report``
    ``register_template_wf.std_t1w → lesion_seg_wf → lesion_to_native_wf → ds_segmentation_wf``
    ``                                  └───────────→ lesion_load_wf → ds_lesion_load_wf``
    (``lesion_source="model"``), or ``inputnode.lesion_mask → lesion_load_wf →
    ds_lesion_load_wf`` (``"manual"``, for an image with a manual mask)

    Parameters
    ----------
    t1w_input : T1wInput
        The image, its BIDS entities and any raw lesion masks.
    output_dir : Path
        Root of the derivatives dataset.
    skull_strip : {"auto", "deepbet", "ants", "none"}
        Skull-stripping backend.
    registration : {"affine", "syn"}
        Registration to the template; with ``syn`` the first raw lesion mask, if any, is
        excluded from the non-linear stage's metric.
    device : {"cpu", "cuda"}
        Where neural networks run.
    atlases : list of str, optional
        ``NAME=IMAGE[:LABELS]`` atlases for the lesion-load overlap.
    omp_nthreads : int
        Threads per node.
    crashdump_dir : Path, optional
        Where Nipype writes crash files of this image's nodes.
    lesion_source : {"model", "manual"}
        Segment with ``bundle``, or measure the dataset's manual mask (if any).
    bundle : Path, optional
        Validated model bundle folder; the package's demo bundle by default.
    tta : bool
        Mirroring test-time augmentation.
    step_size : float
        Sliding-window step, fraction of the patch.
    folds_per_member : int, optional
        Use only the first N folds of each ensemble member.
    name : str
        Workflow name, ``sub-<label>[_ses-<label>][_run-<n>]_wf`` by convention.

    Inputs
    ------
    t1w
        Raw T1w path (set from ``t1w_input``).
    lesion_masks
        Raw-BIDS lesion masks of this image (may be empty).
    lesion_mask
        The first of them: with ``syn``, excluded from the registration metric; with
        ``lesion_source="manual"``, measured (lesion load, report); unset when none.

    Outputs
    -------
    t1w_preproc
        Conformed, bias-corrected T1w (native space).
    t1w_mask
        Brain mask (native space).
    anat2std_xfm
        T1w → MNI152NLin2009aSym transform.
    std2anat_xfm
        MNI152NLin2009aSym → T1w transform.
    std_t1w
        T1w on the template grid.
    """
    single_subject_wf = pe.Workflow(name=name)
    if crashdump_dir is not None:
        single_subject_wf.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "lesion_masks", "lesion_mask"]),
                        name="inputnode")
    inputnode.inputs.t1w = str(t1w_input.path)
    inputnode.inputs.lesion_masks = [str(path) for path in t1w_input.lesion_masks]
    if t1w_input.lesion_masks:
        inputnode.inputs.lesion_mask = str(t1w_input.lesion_masks[0])
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["t1w_preproc", "t1w_mask", "anat2std_xfm", "std2anat_xfm", "std_t1w"]),
        name="outputnode")

    anat_prep_wf = init_anat_prep_wf(skull_strip=skull_strip, omp_nthreads=omp_nthreads,
                                     device=device)
    register_template_wf = init_register_template_wf(
        registration=registration,
        use_lesion_mask=bool(t1w_input.lesion_masks) and registration == "syn",
        omp_nthreads=omp_nthreads)
    ds_anat_wf = init_ds_anat_wf(output_dir=output_dir, source_entities=t1w_input.entities,
                                 source_uri=t1w_input.uri)
    ds_registration_wf = init_ds_registration_wf(
        output_dir=output_dir, source_entities=t1w_input.entities, source_uri=t1w_input.uri,
        registration=registration)
    single_subject_wf.connect([
        (inputnode, anat_prep_wf, [("t1w", "inputnode.t1w")]),
        (anat_prep_wf, register_template_wf, [
            ("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
            ("outputnode.t1w_brain", "inputnode.t1w_brain"),
            ("outputnode.t1w_mask", "inputnode.t1w_mask")]),
        (anat_prep_wf, ds_anat_wf, [
            ("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
            ("outputnode.t1w_description", "inputnode.t1w_description"),
            ("outputnode.t1w_mask", "inputnode.t1w_mask"),
            ("outputnode.skull_strip_method", "inputnode.skull_strip_method")]),
        (register_template_wf, ds_registration_wf, [
            ("outputnode.anat2std_xfm", "inputnode.anat2std_xfm"),
            ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm"),
            ("outputnode.std_t1w", "inputnode.std_t1w"),
            ("outputnode.template_source", "inputnode.template_source")]),
        (anat_prep_wf, outputnode, [("outputnode.t1w_preproc", "t1w_preproc"),
                                    ("outputnode.t1w_mask", "t1w_mask")]),
        (register_template_wf, outputnode, [("outputnode.anat2std_xfm", "anat2std_xfm"),
                                            ("outputnode.std2anat_xfm", "std2anat_xfm"),
                                            ("outputnode.std_t1w", "std_t1w")]),
    ])
    image_report = pe.Node(
        ImageReport(output_dir=str(output_dir), source_entities=dict(t1w_input.entities),
                    registration=registration,
                    methods=[workflow.__desc__ for workflow in
                             (anat_prep_wf, register_template_wf) if workflow.__desc__]),
        name="image_report", mem_gb=1)
    single_subject_wf.connect([
        (anat_prep_wf, image_report, [("outputnode.t1w_preproc", "t1w_preproc"),
                                      ("outputnode.t1w_mask", "t1w_mask"),
                                      ("outputnode.t1w_description", "t1w_description"),
                                      ("outputnode.skull_strip_method", "skull_strip_method")]),
        (register_template_wf, image_report, [("outputnode.std_t1w", "std_t1w"),
                                              ("outputnode.template_source",
                                               "template_source"),
                                              ("outputnode.template_mask", "template_mask")]),
    ])
    if registration == "syn" and t1w_input.lesion_masks:
        single_subject_wf.connect(inputnode, "lesion_mask",
                                  register_template_wf, "inputnode.lesion_mask")
    if lesion_source == "model":
        _connect_segmentation(single_subject_wf, t1w_input=t1w_input, output_dir=output_dir,
                              bundle=bundle, device=device, tta=tta, step_size=step_size,
                              folds_per_member=folds_per_member, atlases=atlases,
                              omp_nthreads=omp_nthreads)
    elif t1w_input.lesion_masks:
        lesion_uri = t1w_input.uri.rsplit("/", 1)[0] + "/" + t1w_input.lesion_masks[0].name
        lesion_load_wf = init_lesion_load_wf(atlases=atlases, omp_nthreads=omp_nthreads)
        ds_lesion_load_wf = init_ds_lesion_load_wf(
            output_dir=output_dir, source_entities=t1w_input.entities,
            source_uris=[t1w_input.uri, lesion_uri], lesion_source="manual")
        image_report.inputs.lesion_source = f"manual, from the input dataset ({lesion_uri})"
        image_report.inputs.methods = image_report.inputs.methods + [lesion_load_wf.__desc__]
        single_subject_wf.connect([
            (inputnode, lesion_load_wf, [("lesion_mask", "inputnode.lesion_mask")]),
            (register_template_wf, lesion_load_wf, [
                ("outputnode.anat2std_xfm", "inputnode.anat2std_xfm"),
                ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm"),
                ("outputnode.template", "inputnode.template")]),
            (lesion_load_wf, ds_lesion_load_wf, [
                ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask"),
                ("outputnode.lesion_load", "inputnode.lesion_load"),
                ("outputnode.lesion_components", "inputnode.lesion_components"),
                ("outputnode.lesion_load_columns", "inputnode.lesion_load_columns")]),
            (inputnode, image_report, [("lesion_mask", "lesion_mask")]),
            (lesion_load_wf, image_report, [
                ("outputnode.lesion_load", "lesion_load"),
                ("outputnode.lesion_components", "lesion_components")]),
        ])
    return single_subject_wf


def _connect_segmentation(single_subject_wf: pe.Workflow, *, t1w_input: T1wInput,
                          output_dir: Path, bundle: Path | None, device: str, tta: bool,
                          step_size: float, folds_per_member: int | None,
                          atlases: list[str] | None, omp_nthreads: int) -> None:
    """Add segmentation, back-projection, lesion load and their outputs to an image's workflow.

    Reads ``anat_prep_wf``, ``register_template_wf`` and ``image_report`` of
    ``single_subject_wf`` (built by :func:`init_single_subject_wf`).
    """
    model = load_bundle(bundle if bundle is not None else "demo")
    anat_prep_wf = single_subject_wf.get_node("anat_prep_wf")
    register_template_wf = single_subject_wf.get_node("register_template_wf")
    image_report = single_subject_wf.get_node("image_report")
    lesion_seg_wf = init_lesion_seg_wf(
        bundle=model.root, bundle_description=f"'{model.name}' {model.version}",
        device=device, tta=tta, step_size=step_size, folds_per_member=folds_per_member,
        omp_nthreads=omp_nthreads)
    lesion_to_native_wf = init_lesion_to_native_wf(omp_nthreads=omp_nthreads)
    ds_segmentation_wf = init_ds_segmentation_wf(
        output_dir=output_dir, source_entities=t1w_input.entities, source_uri=t1w_input.uri)
    lesion_load_wf = init_lesion_load_wf(atlases=atlases, connectivity=model.connectivity,
                                         std_mask_given=True, omp_nthreads=omp_nthreads)
    ds_lesion_load_wf = init_ds_lesion_load_wf(
        output_dir=output_dir, source_entities=t1w_input.entities,
        source_uris=[t1w_input.uri], lesion_source="model")
    image_report.inputs.lesion_source = (
        f"model bundle {model.name} {model.version} ({model.description})")
    if model.demo:
        image_report.inputs.model_warning = DEMO_WARNING
    image_report.inputs.methods = image_report.inputs.methods + [
        lesion_seg_wf.__desc__, lesion_load_wf.__desc__]
    single_subject_wf.connect([
        (register_template_wf, lesion_seg_wf, [("outputnode.std_t1w", "inputnode.std_t1w"),
                                               ("outputnode.anat2std_xfm",
                                                "inputnode.anat2std_xfm")]),
        (anat_prep_wf, lesion_seg_wf, [("outputnode.t1w_mask", "inputnode.t1w_mask")]),
        (lesion_seg_wf, lesion_to_native_wf, [
            ("outputnode.std_lesion_probseg", "inputnode.std_lesion_probseg"),
            ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask")]),
        (register_template_wf, lesion_to_native_wf, [
            ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm")]),
        (anat_prep_wf, lesion_to_native_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc")]),
        (lesion_seg_wf, ds_segmentation_wf, [
            ("outputnode.std_lesion_probseg", "inputnode.std_lesion_probseg"),
            ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask"),
            ("outputnode.segmentation_metadata", "inputnode.segmentation_metadata")]),
        (lesion_to_native_wf, ds_segmentation_wf, [
            ("outputnode.lesion_probseg", "inputnode.lesion_probseg"),
            ("outputnode.lesion_mask", "inputnode.lesion_mask")]),
        (lesion_to_native_wf, lesion_load_wf, [("outputnode.lesion_mask",
                                                "inputnode.lesion_mask")]),
        (lesion_seg_wf, lesion_load_wf, [("outputnode.std_lesion_mask",
                                          "inputnode.std_lesion_mask")]),
        (register_template_wf, lesion_load_wf, [
            ("outputnode.anat2std_xfm", "inputnode.anat2std_xfm"),
            ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm"),
            ("outputnode.template", "inputnode.template")]),
        (lesion_load_wf, ds_lesion_load_wf, [
            ("outputnode.lesion_load", "inputnode.lesion_load"),
            ("outputnode.lesion_components", "inputnode.lesion_components"),
            ("outputnode.lesion_load_columns", "inputnode.lesion_load_columns")]),
        (lesion_to_native_wf, image_report, [("outputnode.lesion_mask", "lesion_mask")]),
        (lesion_load_wf, image_report, [
            ("outputnode.lesion_load", "lesion_load"),
            ("outputnode.lesion_components", "lesion_components")]),
    ])


def subject_log_dir(config: Config, t1w_input: T1wInput) -> Path:
    """``OUTPUT_DIR/sub-<label>/log/<run_uuid>``: settings dump and crash files of one run."""
    return (config.execution.output_dir / f"sub-{t1w_input.entities['subject']}" / "log"
            / config.execution.run_uuid)


def expected_outputs(output_dir: Path, t1w_input: T1wInput, registration: str,
                     lesion_source: str = "model") -> list[Path]:
    """Derivatives a successful run writes for one image."""
    xfm_extension = ".mat" if registration == "affine" else ".h5"
    kinds = [("t1w_preproc", {}), ("t1w_mask", {}), ("std_t1w", {}),
             ("anat2std_xfm", {"extension": xfm_extension}),
             ("std2anat_xfm", {"extension": xfm_extension})]
    if lesion_source == "model":
        kinds += [("lesion_mask", {}), ("lesion_probseg", {}), ("std_lesion_mask", {}),
                  ("std_lesion_probseg", {}), ("lesion_load", {}), ("lesion_components", {})]
    elif t1w_input.lesion_masks:
        kinds += [("lesion_load", {}), ("lesion_components", {}),
                  ("std_lesion_mask", {"desc": "manual"})]
    return [derivative_path(output_dir, t1w_input.entities, kind, **overrides)
            for kind, overrides in kinds]
