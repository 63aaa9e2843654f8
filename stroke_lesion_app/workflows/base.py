"""Top-level workflows: one per run, one per T1w image. The only workflow module that reads
the run-wide :class:`~stroke_lesion_app.config.Config`."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.config import Config
from stroke_lesion_app.core.bids import T1wInput
from stroke_lesion_app.workflows.anatomical import init_anat_prep_wf
from stroke_lesion_app.workflows.outputs import init_ds_anat_wf

#: Stages this release runs, in order; the CLI reports the last one so users know where the
#: pipeline stops today.
IMPLEMENTED_STAGES = ("input validation", "conforming to RAS+")
#: Stages of the full pipeline not yet available in this release.
PENDING_STAGES = ("skull-stripping", "registration to MNI152NLin2009aSym",
                  "lesion segmentation", "lesion-load report")


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
    for t1w_input in inputs:
        single_subject_wf = init_single_subject_wf(
            t1w_input=t1w_input,
            output_dir=config.execution.output_dir,
            omp_nthreads=config.resolved_omp_nthreads(),
            crashdump_dir=subject_log_dir(config, t1w_input) / t1w_input.name,
            name=f"{t1w_input.name}_wf",
        )
        stroke_lesion_wf.add_nodes([single_subject_wf])
    return stroke_lesion_wf


def init_single_subject_wf(
    *,
    t1w_input: T1wInput,
    output_dir: Path,
    omp_nthreads: int = 1,
    crashdump_dir: Path | None = None,
    name: str = "single_subject_wf",
) -> pe.Workflow:
    """Process one T1w image and write its derivatives.

    Workflow Graph
    --------------
    ``inputnode.t1w → anat_prep_wf → ds_anat_wf``

    Parameters
    ----------
    t1w_input : T1wInput
        The image, its BIDS entities and any raw lesion masks.
    output_dir : Path
        Root of the derivatives dataset.
    omp_nthreads : int
        Threads per node.
    crashdump_dir : Path, optional
        Where Nipype writes crash files of this image's nodes.
    name : str
        Workflow name, ``sub-<label>[_ses-<label>][_run-<n>]_wf`` by convention.

    Inputs
    ------
    t1w
        Raw T1w path (set from ``t1w_input``).
    lesion_masks
        Raw-BIDS lesion masks of this image (may be empty).

    Outputs
    -------
    t1w_preproc
        Conformed T1w (native space).
    """
    single_subject_wf = pe.Workflow(name=name)
    if crashdump_dir is not None:
        single_subject_wf.config["execution"]["crashdump_dir"] = str(crashdump_dir)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w", "lesion_masks"]), name="inputnode")
    inputnode.inputs.t1w = str(t1w_input.path)
    inputnode.inputs.lesion_masks = [str(path) for path in t1w_input.lesion_masks]
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc"]), name="outputnode")

    anat_prep_wf = init_anat_prep_wf(omp_nthreads=omp_nthreads)
    ds_anat_wf = init_ds_anat_wf(output_dir=output_dir, source_entities=t1w_input.entities,
                                 source_uri=t1w_input.uri)
    single_subject_wf.connect([
        (inputnode, anat_prep_wf, [("t1w", "inputnode.t1w")]),
        (anat_prep_wf, ds_anat_wf, [("outputnode.t1w_preproc", "inputnode.t1w_preproc"),
                                    ("outputnode.t1w_description",
                                     "inputnode.t1w_description")]),
        (anat_prep_wf, outputnode, [("outputnode.t1w_preproc", "t1w_preproc")]),
    ])
    return single_subject_wf


def subject_log_dir(config: Config, t1w_input: T1wInput) -> Path:
    """``OUTPUT_DIR/sub-<label>/log/<run_uuid>``: settings dump and crash files of one run."""
    return (config.execution.output_dir / f"sub-{t1w_input.entities['subject']}" / "log"
            / config.execution.run_uuid)


def expected_outputs(output_dir: Path, t1w_input: T1wInput) -> list[Path]:
    """Derivatives a successful run of this release writes for one image."""
    from stroke_lesion_app.core.bids import derivative_path

    return [derivative_path(output_dir, t1w_input.entities, "t1w_preproc")]
