"""Top-level workflows: one per run, one per T1w image. The only workflow module that reads
the run-wide :class:`~stroke_lesion_app.config.Config`."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.config import Config
from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core.atlases import Atlas
from stroke_lesion_app.core.bids import T1wInput, derivative_path
from stroke_lesion_app.core.bundle import DEMO_WARNING, ModelBundle
from stroke_lesion_app.core.segmentation import InferenceSettings
from stroke_lesion_app.core.templates import fsl_template, templateflow_atlases
from stroke_lesion_app.interfaces.reports import ImageReport
from stroke_lesion_app.workflows.anatomical import init_anat_prep_wf
from stroke_lesion_app.workflows.edited import init_edited_lesion_wf
from stroke_lesion_app.workflows.group_space import init_group_space_wf
from stroke_lesion_app.workflows.lesion import init_lesion_wf
from stroke_lesion_app.workflows.outputs import (
    init_ds_anat_wf,
    init_ds_group_space_wf,
    init_ds_lesion_load_wf,
    init_ds_registration_wf,
    init_ds_segmentation_wf,
)
from stroke_lesion_app.workflows.registration import init_register_template_wf


def init_stroke_lesion_wf(
    *,
    config: Config,
    inputs: list[T1wInput],
    bundle: ModelBundle | None = None,
    inference: InferenceSettings | None = None,
    edited_masks: dict[str, Path] | None = None,
    name: str = "stroke_lesion_app_wf",
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
    bundle : ModelBundle, optional
        The ``--model`` bundle, parsed and validated once by the CLI (needed when
        ``config.workflow.lesion_source`` is ``"model"``); never reloaded here.
    inference : InferenceSettings, optional
        The inference settings of the command line (``--fast`` already applied, the device
        as the user gave it); :meth:`~.InferenceSettings.from_options` of ``config`` when not
        given.
    edited_masks : dict, optional
        ``--lesion-masks``: the edited mask of each image to re-measure (by
        :attr:`T1wInput.name`); those images get :func:`init_edited_lesion_wf` instead of the
        full pipeline.
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
    if inference is None:
        inference = settings.inference_settings()
    atlases = list(settings.atlases) + templateflow_atlases()
    fsl_space = fsl_space_enabled(config)
    for t1w_input in inputs:
        crashdump_dir = subject_log_dir(config, t1w_input) / t1w_input.name
        if edited_masks is not None:
            edited_wf = init_edited_lesion_wf(
                t1w_input=t1w_input, edited_mask=edited_masks[t1w_input.name],
                output_dir=config.execution.output_dir, registration=settings.registration,
                atlases=atlases, fsl_space=fsl_space,
                omp_nthreads=config.resolved_omp_nthreads(), name=f"{t1w_input.name}_edited_wf")
            _set_crashdump_dir(edited_wf, crashdump_dir)
            stroke_lesion_wf.add_nodes([edited_wf])
            continue
        single_subject_wf = init_single_subject_wf(
            t1w_input=t1w_input,
            output_dir=config.execution.output_dir,
            skull_strip=config.workflow.skull_strip,
            registration=config.workflow.registration,
            atlases=atlases,
            omp_nthreads=config.resolved_omp_nthreads(),
            crashdump_dir=crashdump_dir,
            lesion_source=settings.lesion_source,
            bundle=bundle,
            inference=inference,
            group_normalisation=settings.group_normalisation,
            fsl_space=fsl_space,
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
    atlases: list[Atlas] | None = None,
    omp_nthreads: int = 1,
    crashdump_dir: Path | None = None,
    lesion_source: str = "model",
    bundle: ModelBundle | None = None,
    inference: InferenceSettings | None = None,
    group_normalisation: str = "auto",
    fsl_space: bool = False,
    name: str = "single_subject_wf",
) -> pe.Workflow:
    """Process one T1w image and write its derivatives.

    Workflow Graph
    --------------
    ``inputnode.t1w → anat_prep_wf → register_template_wf → ds_registration_wf``
    ``                      └──────→ ds_anat_wf            └→ image_report``
    ``register_template_wf → lesion_wf → ds_segmentation_wf, ds_lesion_load_wf, image_report``
    ``lesion_wf → group_space_wf → ds_group_space_wf`` (unless ``group_normalisation="affine"``)
    (``lesion_source="model"``: ``lesion_wf`` segments; ``"manual"``: ``inputnode.lesion_mask
    → lesion_wf``, only for an image with a manual mask)

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
    atlases : list of Atlas, optional
        Label atlases for the lesion-load overlap.
    omp_nthreads : int
        Threads per node.
    crashdump_dir : Path, optional
        Where Nipype writes crash files of this image's nodes.
    lesion_source : {"model", "manual"}
        Segment with ``bundle``, or measure the dataset's manual mask (if any).
    bundle : ModelBundle, optional
        The validated model bundle (required with ``lesion_source="model"``).
    inference : InferenceSettings, optional
        TTA, step, folds and the requested device (``auto``/``cpu``/``cuda``: skull-stripping
        and segmentation nodes decide it where they run); the defaults when not given.
    group_normalisation : {"auto", "enantiomorphic", "cost-function", "syn", "affine"}
        The lesion-aware second normalisation of the group-space maps (``affine``: none, the
        group uses the first-pass template maps).
    fsl_space : bool
        Also write group-space maps on MNI152NLin6Asym (its template is available).
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
    inference = inference or InferenceSettings()
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
                                     device=inference.device)
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
        (inputnode, ds_anat_wf, [("t1w", "inputnode.source_t1w")]),
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
            ("outputnode.template_mask", "inputnode.template_mask"),
            ("outputnode.template_source", "inputnode.template_source")]),
        (anat_prep_wf, outputnode, [("outputnode.t1w_preproc", "t1w_preproc"),
                                    ("outputnode.t1w_mask", "t1w_mask")]),
        (register_template_wf, outputnode, [("outputnode.anat2std_xfm", "anat2std_xfm"),
                                            ("outputnode.std2anat_xfm", "std2anat_xfm"),
                                            ("outputnode.std_t1w", "std_t1w")]),
    ])
    if registration == "syn" and t1w_input.lesion_masks:
        single_subject_wf.connect(inputnode, "lesion_mask",
                                  register_template_wf, "inputnode.lesion_mask")

    # The lesion branch: segmented by the bundle, or the dataset's manual mask when there is one
    lesion_wf = None
    if lesion_source == "model" or t1w_input.lesion_masks:
        lesion_wf = init_lesion_wf(lesion_source=lesion_source, bundle=bundle,
                                   inference=inference, atlases=atlases,
                                   omp_nthreads=omp_nthreads)
        single_subject_wf.connect([
            (anat_prep_wf, lesion_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                                       ("outputnode.t1w_mask", "inputnode.t1w_mask")]),
            (register_template_wf, lesion_wf, [
                ("outputnode.std_t1w", "inputnode.std_t1w"),
                ("outputnode.anat2std_xfm", "inputnode.anat2std_xfm"),
                ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm"),
                ("outputnode.template", "inputnode.template")]),
        ])
        if lesion_source == "manual":
            single_subject_wf.connect(inputnode, "lesion_mask", lesion_wf, "inputnode.lesion_mask")
        _connect_lesion_outputs(single_subject_wf, lesion_wf, inputnode, t1w_input=t1w_input,
                                output_dir=output_dir, lesion_source=lesion_source)
        if group_normalisation != "affine":
            _connect_group_space(single_subject_wf, lesion_wf, anat_prep_wf,
                                 register_template_wf, t1w_input=t1w_input,
                                 output_dir=output_dir, lesion_source=lesion_source,
                                 registration=registration, branch=group_normalisation,
                                 fsl_space=fsl_space, omp_nthreads=omp_nthreads)

    # The report, last: its methods come from the workflows built above
    image_report = pe.Node(
        ImageReport(output_dir=str(output_dir), source_entities=dict(t1w_input.entities),
                    registration=registration, methods=workflow_methods(single_subject_wf)),
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
    if lesion_wf is not None:
        image_report.inputs.lesion_source = _lesion_source_text(lesion_source, bundle, t1w_input)
        if lesion_source == "model" and bundle.demo:
            image_report.inputs.model_warning = DEMO_WARNING
        single_subject_wf.connect(lesion_wf, "outputnode.lesion_mask", image_report, "lesion_mask")
        if lesion_source == "model":  # the probability map and the threshold it is cut at
            single_subject_wf.connect(lesion_wf, "outputnode.lesion_probseg",
                                      image_report, "lesion_probseg")
            image_report.inputs.lesion_threshold = bundle.threshold
        single_subject_wf.connect([(lesion_wf, image_report, [
            ("outputnode.lesion_load", "lesion_load"),
            ("outputnode.lesion_components", "lesion_components")])])
    if crashdump_dir is not None:
        _set_crashdump_dir(single_subject_wf, crashdump_dir)
    return single_subject_wf


def _set_crashdump_dir(workflow: pe.Workflow, crashdump_dir: Path) -> None:
    """Nipype merges only the configuration of the workflow it runs into the nodes, not that
    of a nested workflow: every node carries the crash folder itself, or a crash file lands in
    the user's working directory."""
    workflow.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    for node in workflow._get_all_nodes():
        node.config = dict(node.config or {})
        node.config["execution"] = {**node.config.get("execution", {}),
                                    "crashdump_dir": str(crashdump_dir)}


def fsl_space_enabled(config: Config) -> bool:
    """Group-space maps go onto MNI152NLin6Asym too: the lesion-aware pass runs (or edited
    masks reuse it) and the template is in ``$TEMPLATEFLOW_HOME``."""
    return config.workflow.group_normalisation != "affine" and fsl_template() is not None


def _manual_lesion_uri(t1w_input: T1wInput) -> str:
    """``bids:raw:`` URI of an image's first manual lesion mask."""
    return t1w_input.uri.rsplit("/", 1)[0] + "/" + t1w_input.lesion_masks[0].name


def _lesion_source_text(lesion_source: str, bundle: ModelBundle | None,
                        t1w_input: T1wInput) -> str:
    """Where the lesion of the report comes from, in one phrase."""
    if lesion_source == "model":
        return f"model bundle {bundle.name} {bundle.version} ({bundle.description})"
    return f"manual, from the input dataset ({_manual_lesion_uri(t1w_input)})"


def _connect_lesion_outputs(single_subject_wf: pe.Workflow, lesion_wf: pe.Workflow,
                            inputnode: pe.Node, *, t1w_input: T1wInput, output_dir: Path,
                            lesion_source: str) -> None:
    """Write ``lesion_wf``'s outputs as derivatives (segmentation maps and lesion load); the
    native maps go onto the grid of ``inputnode.t1w`` (the raw T1w)."""
    model = lesion_source == "model"
    ds_lesion_load_wf = init_ds_lesion_load_wf(
        output_dir=output_dir, source_entities=t1w_input.entities,
        source_uri=t1w_input.uri, lesion_source=lesion_source,
        manual_lesion_uri=None if model else _manual_lesion_uri(t1w_input))
    single_subject_wf.connect([(lesion_wf, ds_lesion_load_wf, [
        ("outputnode.lesion_load", "inputnode.lesion_load"),
        ("outputnode.lesion_components", "inputnode.lesion_components"),
        ("outputnode.lesion_load_columns", "inputnode.lesion_load_columns")])])
    if not model:
        single_subject_wf.connect(lesion_wf, "outputnode.std_lesion_mask",
                                  ds_lesion_load_wf, "inputnode.std_lesion_mask")
        return
    ds_segmentation_wf = init_ds_segmentation_wf(
        output_dir=output_dir, source_entities=t1w_input.entities, source_uri=t1w_input.uri)
    single_subject_wf.connect(inputnode, "t1w", ds_segmentation_wf, "inputnode.source_t1w")
    single_subject_wf.connect([(lesion_wf, ds_segmentation_wf, [
        ("outputnode.std_lesion_probseg", "inputnode.std_lesion_probseg"),
        ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask"),
        ("outputnode.segmentation_metadata", "inputnode.segmentation_metadata"),
        ("outputnode.lesion_probseg", "inputnode.lesion_probseg"),
        ("outputnode.lesion_mask", "inputnode.lesion_mask")])])


def _connect_group_space(single_subject_wf: pe.Workflow, lesion_wf: pe.Workflow,
                         anat_prep_wf: pe.Workflow, register_template_wf: pe.Workflow, *,
                         t1w_input: T1wInput, output_dir: Path, lesion_source: str,
                         registration: str, branch: str, fsl_space: bool,
                         omp_nthreads: int) -> None:
    """The lesion-aware second normalisation and the group-space maps it stores."""
    model = lesion_source == "model"
    group_space_wf = init_group_space_wf(branch=branch, model_lesion=model, fsl_space=fsl_space,
                                         omp_nthreads=omp_nthreads)
    ds_group_space_wf = init_ds_group_space_wf(
        output_dir=output_dir, source_entities=t1w_input.entities, source_uri=t1w_input.uri,
        lesion_source=lesion_source, registration=registration,
        lesion_uri=None if model else _manual_lesion_uri(t1w_input), fsl_space=fsl_space)
    spaces = ["std"] + (["fsl"] if fsl_space else [])
    fields = ["anat2group_xfm", "group2anat_xfm", "record"] + [
        f"{prefix}_{field}" for prefix in spaces
        for field in ("mask", "probseg", "chain", "interpolation")
        if model or field != "probseg"]
    single_subject_wf.connect([
        (anat_prep_wf, group_space_wf, [("outputnode.t1w_brain", "inputnode.t1w_brain"),
                                        ("outputnode.t1w_mask", "inputnode.t1w_mask")]),
        (lesion_wf, group_space_wf, [("outputnode.lesion_mask", "inputnode.lesion_mask")]),
        (register_template_wf, group_space_wf, [
            ("outputnode.anat2std_xfm", "inputnode.anat2std_xfm"),
            ("outputnode.std2anat_xfm", "inputnode.std2anat_xfm"),
            ("outputnode.template", "inputnode.template"),
            ("outputnode.template_mask", "inputnode.template_mask")]),
        (group_space_wf, ds_group_space_wf, [(f"outputnode.{field}", f"inputnode.{field}")
                                             for field in fields]),
    ])
    if model:
        single_subject_wf.connect([(lesion_wf, group_space_wf, [
            ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask"),
            ("outputnode.std_lesion_probseg", "inputnode.std_lesion_probseg")])])


def workflow_methods(workflow: pe.Workflow) -> list[str]:
    """The methods paragraphs (``__desc__``) of the sub-workflows of ``workflow``, nested ones
    included, in data-flow order: what the report's methods section says was run."""
    paragraphs = []
    for node in nx.topological_sort(workflow._graph):
        if isinstance(node, pe.Workflow):
            if getattr(node, "__desc__", None):
                paragraphs.append(node.__desc__)
            paragraphs += workflow_methods(node)
    return paragraphs


def subject_log_dir(config: Config, t1w_input: T1wInput) -> Path:
    """``OUTPUT_DIR/sub-<label>/log/<run_uuid>``: settings dump and crash files of one run."""
    return (config.execution.output_dir / f"sub-{t1w_input.entities['subject']}" / "log"
            / config.execution.run_uuid)


def expected_outputs(output_dir: Path, t1w_input: T1wInput, registration: str,
                     lesion_source: str = "model", group_normalisation: str = "affine",
                     fsl_space: bool = False) -> list[Path]:
    """Derivatives a successful run writes for one image."""
    xfm_extension = bids_core.xfm_extension(registration)
    kinds = [("t1w_preproc", {}), ("t1w_mask", {}), ("std_t1w", {}),
             ("anat2std_xfm", {"extension": xfm_extension}),
             ("std2anat_xfm", {"extension": xfm_extension})]
    if lesion_source == "model":
        kinds += [("lesion_mask", {}), ("lesion_probseg", {}), ("std_lesion_mask", {}),
                  ("std_lesion_probseg", {}), ("lesion_load", {}), ("lesion_components", {})]
    elif t1w_input.lesion_masks:
        kinds += [("lesion_load", {}), ("lesion_components", {}),
                  ("std_lesion_mask", {"desc": "manual"})]
    if group_normalisation != "affine" and (lesion_source == "model" or t1w_input.lesion_masks):
        maps = ["group_lesion_mask"] + (["group_lesion_probseg"] if lesion_source == "model"
                                        else [])
        spaces = [bids_core.TEMPLATE_SPACE] + (["MNI152NLin6Asym"] if fsl_space else [])
        kinds += [("anat2group_xfm", {}), ("group2anat_xfm", {})]
        kinds += [(kind, {"space": space}) for space in spaces for kind in maps]
    return [derivative_path(output_dir, t1w_input.entities, kind, **overrides)
            for kind, overrides in kinds]
