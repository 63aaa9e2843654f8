"""The BIDS-App command line: ``stroke-lesion-app BIDS_DIR OUTPUT_DIR {participant,group}``."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# No telemetry, no update checks, ever: Nipype reads this before its first import.
os.environ.setdefault("NIPYPE_NO_ET", "1")

import click  # noqa: E402

from stroke_lesion_app import __version__  # noqa: E402
from stroke_lesion_app.cli import options  # noqa: E402
from stroke_lesion_app.cli.common import EXIT_USAGE, UsageError, setup_logging  # noqa: E402
from stroke_lesion_app.config import (  # noqa: E402
    LOGGERS,
    Config,
    ExecutionSettings,
    NipypeSettings,
    WorkflowSettings,
)

LOGGER = LOGGERS["cli"]

EXIT_OK, EXIT_SUBJECTS_FAILED = 0, 1
__all__ = ["EXIT_OK", "EXIT_SUBJECTS_FAILED", "EXIT_USAGE", "cli", "main"]


@dataclass
class ParticipantResult:
    """Outcome of a participant-level run: labels of images done and failed (with reasons)."""

    succeeded: list[str]
    failed: dict[str, str]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("bids_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant", "group"]))
@options.participant_label
@options.session_label
@options.bids_filter_file
@options.skip_bids_validation
@options.work_dir
@options.nprocs
@options.omp_nthreads
@options.mem_gb
@options.plugin
@options.plugin_settings
@options.model
@options.lesion_source
@options.device
@options.tta
@options.step_size
@options.brain_box
@options.fast
@options.skull_strip
@options.registration
@options.group_normalisation
@options.lesion_masks
@options.atlas
@options.flip_to_left
@options.min_overlap
@options.stop_on_first_crash
@options.config_file
@options.verbose
@click.version_option(__version__, "--version", prog_name="stroke-lesion-app")
def cli(bids_dir, output_dir, analysis_level, participant_labels, session_labels,
        bids_filter_file, skip_bids_validation, work_dir, nprocs, omp_nthreads, mem_gb, plugin,
        plugin_settings, model, lesion_source, device, tta, step_size, brain_box, fast,
        skull_strip, registration, group_normalisation, lesion_masks_dir, atlases,
        flip_to_left, min_overlap, stop_on_first_crash, config_file, verbose):
    """Find and measure stroke lesions on T1-weighted MRI in a BIDS dataset.

    BIDS_DIR is the input dataset (never written to), OUTPUT_DIR the derivatives folder
    (outside BIDS_DIR, or under BIDS_DIR/derivatives/). ANALYSIS_LEVEL is 'participant'
    (process subjects) or 'group' (cohort table from OUTPUT_DIR only).

    \b
    Examples:
      stroke-lesion-app /data/bids /data/out participant
      stroke-lesion-app /data/bids /data/out participant --participant-label 01 02 -w /scratch/work
      stroke-lesion-app /data/bids /data/out participant --plugin SLURM --plugin-settings slurm.json
      stroke-lesion-app /data/bids /data/out group
      stroke-lesion-app /data/bids /data/out group --flip-to-left --min-overlap 10

    \b
    Exit codes: 0 success; 1 some subjects failed (listed at the end); 2 usage or input error.
    No telemetry: nothing is sent anywhere and nothing is downloaded at run time.
    """
    setup_logging(verbose, logging.INFO, quiet=("bidsschematools",))
    nipype_settings = NipypeSettings(stop_on_first_crash=stop_on_first_crash)
    if plugin_settings:
        nipype_settings.plugin = plugin_settings.get("plugin", nipype_settings.plugin)
        nipype_settings.plugin_args = dict(plugin_settings.get("plugin_args", {}))
    if plugin:
        nipype_settings.plugin = plugin
    if nprocs:
        nipype_settings.nprocs = nprocs
    if omp_nthreads:
        nipype_settings.omp_nthreads = omp_nthreads
    nipype_settings.mem_gb = mem_gb
    config = Config(
        execution=ExecutionSettings(
            bids_dir=bids_dir.absolute(), output_dir=output_dir.absolute(),
            analysis_level=analysis_level,
            work_dir=(work_dir or Path("work")).absolute(),
            participant_labels=list(participant_labels), session_labels=list(session_labels),
            skip_bids_validation=skip_bids_validation, verbosity=verbose,
        ),
        nipype=nipype_settings,
        workflow=WorkflowSettings(model=model, device=device, skull_strip=skull_strip,
                                  registration=registration, atlases=list(atlases),
                                  lesion_source=lesion_source, tta=tta, step_size=step_size,
                                  brain_box=brain_box, fast=fast,
                                  group_normalisation=group_normalisation,
                                  lesion_masks_dir=(lesion_masks_dir.absolute()
                                                    if lesion_masks_dir else None)),
    )
    from stroke_lesion_app.core.bids import BIDSInputError, load_filters
    from stroke_lesion_app.core.images import ImageError

    try:
        config.execution.bids_filters = load_filters(bids_filter_file)
        if config_file is not None:
            apply_config_file(config, Config.load(config_file), click.get_current_context())
            LOGGER.info("Settings from %s (options given on the command line win).", config_file)
        if config.nipype.plugin.startswith("SLURM"):
            _set_logname()
        if analysis_level == "group":
            run_group(config, flip_to_left=flip_to_left, min_overlap=min_overlap)
            sys.exit(EXIT_OK)
        result = run_participant(config)
    except (BIDSInputError, ImageError, ValueError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:  # a full disk, a folder that became unwritable
        raise UsageError(os_error_line(error)) from None
    if result.failed:
        click.echo(f"stroke-lesion-app: {len(result.failed)} of "
                   f"{len(result.failed) + len(result.succeeded)} image(s) failed:", err=True)
        for label, reason in result.failed.items():
            click.echo(f"  {label}: {reason}", err=True)
        sys.exit(EXIT_SUBJECTS_FAILED)
    sys.exit(EXIT_OK)


#: Command-line parameter → (section, field) of :class:`Config` that ``--config-file`` fills.
CONFIG_FILE_FIELDS = {
    "participant_labels": [("execution", "participant_labels")],
    "session_labels": [("execution", "session_labels")],
    "bids_filter_file": [("execution", "bids_filters")],
    "skip_bids_validation": [("execution", "skip_bids_validation")],
    "work_dir": [("execution", "work_dir")],
    "nprocs": [("nipype", "nprocs")],
    "omp_nthreads": [("nipype", "omp_nthreads")],
    "mem_gb": [("nipype", "mem_gb")],
    "plugin": [("nipype", "plugin")],
    "plugin_settings": [("nipype", "plugin"), ("nipype", "plugin_args")],
    "stop_on_first_crash": [("nipype", "stop_on_first_crash")],
    "model": [("workflow", "model")],
    "lesion_source": [("workflow", "lesion_source")],
    "device": [("workflow", "device")],
    "tta": [("workflow", "tta")],
    "step_size": [("workflow", "step_size")],
    "brain_box": [("workflow", "brain_box")],
    "fast": [("workflow", "fast")],
    "skull_strip": [("workflow", "skull_strip")],
    "registration": [("workflow", "registration")],
    "group_normalisation": [("workflow", "group_normalisation")],
    "lesion_masks_dir": [("workflow", "lesion_masks_dir")],
    "atlases": [("workflow", "atlases")],
}


def apply_config_file(config: Config, saved: Config, context: click.Context) -> None:
    """Fill ``config`` from ``saved`` (a ``stroke_lesion_app.toml`` of an earlier run, or one
    written by hand) for every option not given on the command line.

    The positional arguments (BIDS_DIR, OUTPUT_DIR, the level), the verbosity, the run id and
    the version always come from this run.
    """
    from click.core import ParameterSource

    given = {target for name, targets in CONFIG_FILE_FIELDS.items()
             if context.get_parameter_source(name) == ParameterSource.COMMANDLINE
             for target in targets}
    for targets in CONFIG_FILE_FIELDS.values():
        for section, field_name in targets:
            if (section, field_name) not in given:
                setattr(getattr(config, section), field_name,
                        getattr(getattr(saved, section), field_name))


def _set_logname() -> None:
    """Nipype's SLURM plugins read ``$LOGNAME``, which containers and CI often leave unset."""
    import getpass

    try:
        os.environ.setdefault("LOGNAME", getpass.getuser())
    except (KeyError, OSError):  # a uid without a passwd entry (some containers)
        os.environ.setdefault("LOGNAME", "stroke-lesion-app")


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``stroke-lesion-app``)."""
    cli.main(args=args, prog_name="stroke-lesion-app")


def _nipype_logging(verbose: int) -> dict[str, str]:
    """Nipype's log levels for a verbosity count (its own handler prints them).

    Without ``-v`` Nipype's failure reports (a traceback per failed node) stay quiet: the run's
    summary gives each failed image's reason in one line and its crash file.
    """
    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    return {"workflow_level": "CRITICAL" if verbose == 0 else level, "interface_level": level,
            "utils_level": level}


def os_error_line(error: OSError) -> str:
    """One line for an operating-system error, naming the file and the fix."""
    where = error.filename2 or error.filename
    reason = error.strerror or str(error)
    fix = {28: "free space there or choose another folder",
           13: "make it writable or choose another folder",
           30: "choose a writable folder"}.get(error.errno, "check the folder")
    return f"{where}: {reason}; {fix}." if where else f"{reason}; {fix}."


def exception_line(error: BaseException) -> str:
    """The exception that caused ``error`` (Nipype re-raises and wraps), in one line."""
    cause = error.__cause__ or error
    if isinstance(cause, OSError):
        return f"{type(cause).__name__}: {os_error_line(cause)}"
    return last_meaningful_line(f"{type(cause).__name__}: {cause}")


def last_meaningful_line(text: str) -> str:
    """The last line of a traceback or crash report that is not traceback scaffolding: the
    exception and its message."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines
             if line and not line.startswith(("Traceback", "File ", "^", "~"))]
    line = lines[-1] if lines else "crashed"
    if "[Errno 28]" in line:  # ENOSPC, as text inside a Nipype error
        line += "; free space in the output and work folders or choose others"
    return line


#: Plugins whose nodes run on this machine: there ``--device cuda`` is checked before any node.
LOCAL_PLUGINS = ("MultiProc", "Linear")


def check_device(config: Config) -> None:
    """Refuse ``--device cuda`` up front when the nodes run here and torch sees no GPU.

    ``auto`` is never decided here: the skull-stripping and segmentation nodes decide it on
    the machine that runs them (a GPU compute node under ``--plugin SLURM``), where ``cuda``
    is checked again.
    """
    if config.workflow.device == "cuda" and config.nipype.plugin in LOCAL_PLUGINS:
        from stroke_lesion_app.core.device import resolve_device

        resolve_device("cuda")


def load_model(config: Config):
    """Find, parse and verify the ``--model`` bundle once, before any subject runs.

    The manifest, member folders, folds and checkpoint checksums are checked
    (:func:`~stroke_lesion_app.core.bundle.validate_bundle`); any problem is a one-line
    :class:`~stroke_lesion_app.core.bundle.BundleError`. ``config.workflow.model`` becomes the
    bundle's absolute folder, so the settings dump records exactly which bundle ran.

    Returns
    -------
    ModelBundle or None
        The bundle the workflow receives (``None`` with ``--lesion-source manual``).
    """
    if config.workflow.lesion_source != "model":
        return None
    from stroke_lesion_app.core.bundle import load_bundle, validate_bundle

    bundle = validate_bundle(load_bundle(config.workflow.model))
    LOGGER.info("Model bundle %s %s (%s)%s.", bundle.name, bundle.version, bundle.root,
                ": a synthetic-data demo, not for research or clinical use" if bundle.demo
                else "")
    config.workflow.model = str(bundle.root)
    return bundle


def run_participant(config: Config) -> ParticipantResult:
    """Check inputs, build and run the participant workflow; report per-image outcomes.

    Raises
    ------
    BIDSInputError
        Dataset-level problems (exit code 2): bad BIDS dir, output dir, work dir, labels.
    """
    from stroke_lesion_app.core import bids as bids_core
    from stroke_lesion_app.core.images import ImageError, load_t1w

    execution = config.execution
    from stroke_lesion_app.core.brainmask import resolve_method

    edit = config.workflow.lesion_masks_dir is not None
    if not edit:
        check_device(config)
    bundle = None if edit else load_model(config)
    resolve_method(config.workflow.skull_strip)
    bids_dir = bids_core.check_bids_dir(execution.bids_dir,
                                        validate=not execution.skip_bids_validation)
    bids_core.check_output_dir(execution.output_dir, bids_dir)
    if execution.work_dir.resolve().is_relative_to(bids_dir.resolve()):
        raise bids_core.BIDSInputError(
            f"{execution.work_dir}: work folder lies inside the input dataset; pass "
            "-w/--work-dir with a folder outside it.")
    bids_core.check_writable_dir(execution.work_dir, "work")

    layout = bids_core.index_dataset(bids_dir, validate=not execution.skip_bids_validation)
    discovery = bids_core.collect_t1w(layout, execution.participant_labels,
                                      execution.session_labels, execution.bids_filters)
    failed = {f"sub-{label}": message for label, message in discovery.errors.items()}
    runnable = []
    for t1w_input in discovery.inputs:
        try:
            load_t1w(t1w_input.path)
        except ImageError as error:
            failed[t1w_input.name] = str(error)
            LOGGER.error("%s", error)
            continue
        if t1w_input.lesion_masks:
            LOGGER.info("%s: raw lesion mask(s) recorded: %s", t1w_input.name,
                        ", ".join(path.name for path in t1w_input.lesion_masks))
        runnable.append(t1w_input)
    for label, message in discovery.errors.items():
        LOGGER.error("%s", message)
    edited_masks = None
    if edit:
        runnable, edited_masks = _edited_inputs(config, runnable, failed)

    bids_core.write_dataset_description(execution.output_dir, bids_dir, execution.version,
                                        model_dir=bundle.root if bundle is not None else None)
    if not runnable:
        return ParticipantResult([], failed)
    succeeded, crashed = _run_workflow(config, runnable, bundle, edited_masks)
    failed.update(crashed)
    return ParticipantResult(succeeded, failed)


def _edited_inputs(config: Config, inputs: list, failed: dict[str, str]):
    """``--lesion-masks DIR``: the images that have an edited mask there (checked: on the raw
    T1w's grid, earlier outputs present) and their masks; the others are left as they are."""
    from stroke_lesion_app.core import bids as bids_core
    from stroke_lesion_app.workflows.edited import earlier_outputs

    folder = config.workflow.lesion_masks_dir
    runnable, masks = [], {}
    for t1w_input in inputs:
        mask = bids_core.find_edited_mask(folder, t1w_input.entities)
        if mask is None:
            LOGGER.info("%s: no edited mask in %s (%s); its outputs are left as they are.",
                        t1w_input.name, folder,
                        bids_core.derivative_name(t1w_input.entities, "lesion_mask"))
            continue
        try:
            bids_core.check_edited_mask(mask, t1w_input.path, t1w_input.entities)
            earlier_outputs(config.execution.output_dir, t1w_input,
                            config.workflow.registration)
        except (bids_core.BIDSInputError, FileNotFoundError) as error:
            failed[t1w_input.name] = str(error)
            LOGGER.error("%s", error)
            continue
        LOGGER.info("%s: re-measured from the edited mask %s", t1w_input.name, mask)
        runnable.append(t1w_input)
        masks[t1w_input.name] = mask
    if not runnable and not failed:
        raise bids_core.BIDSInputError(
            f"{folder}: no edited lesion mask for any selected image; save each as the app "
            "names it (e.g. sub-01_label-L_mask.nii.gz), flat or in sub-01/anat/.")
    return runnable, masks


def _run_workflow(config: Config, runnable, bundle,
                  edited_masks=None) -> tuple[list[str], dict[str, str]]:
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    from stroke_lesion_app.core.reports import assemble_subject_report
    from stroke_lesion_app.workflows.base import (
        expected_outputs,
        fsl_space_enabled,
        init_stroke_lesion_wf,
        subject_log_dir,
    )
    from stroke_lesion_app.workflows.edited import expected_edited_outputs

    execution = config.execution
    for t1w_input in runnable:
        config.to_filename(subject_log_dir(config, t1w_input) / "stroke_lesion_app.toml")
    nipype_config.update_config({
        "execution": {"check_version": False, "crashfile_format": "txt",
                      "stop_on_first_crash": config.nipype.stop_on_first_crash,
                      "remove_unnecessary_outputs": False, "parameterize_dirs": False},
        "monitoring": {"enabled": False},
        "logging": _nipype_logging(execution.verbosity),
    })
    nipype_logging.update_logging(nipype_config)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(name).propagate = False
    workflow = init_stroke_lesion_wf(config=config, inputs=runnable, bundle=bundle,
                                     inference=config.workflow.inference_settings(),
                                     edited_masks=edited_masks)
    started = time.time()
    fsl_space = fsl_space_enabled(config)
    LOGGER.info("Processing %d image(s) with Nipype %s (%s)", len(runnable),
                config.nipype.plugin, config.nipype.plugin_settings()["plugin_args"])
    from stroke_lesion_app.cli.supervision import SupervisedMultiProcPlugin, stop_on_signals

    settings = config.nipype.plugin_settings()
    plugin = settings["plugin"]
    if plugin == "MultiProc":  # Nipype's MultiProc, with workers that die with the run
        plugin = SupervisedMultiProcPlugin(plugin_args=settings["plugin_args"])
    try:
        with stop_on_signals():
            workflow.run(plugin=plugin, plugin_args=settings["plugin_args"])
    except Exception as error:  # Nipype raises after running every node it could
        run_error = error
        LOGGER.error("Some nodes failed (%s); see the crash files listed below.",
                     exception_line(error))
    else:
        run_error = None
    succeeded, failed = [], {}
    for t1w_input in runnable:
        own_crashes = sorted((subject_log_dir(config, t1w_input) / t1w_input.name).glob("crash-*"))
        if edited_masks is not None:  # rewritten files: each must be newer than the run
            expected = expected_edited_outputs(execution.output_dir, t1w_input,
                                               config.workflow.registration, fsl_space)
            missing = [path for path in expected
                       if not path.exists() or path.stat().st_mtime < started - 1]
        else:
            missing = [path for path in expected_outputs(
                execution.output_dir, t1w_input, config.workflow.registration,
                config.workflow.lesion_source, config.workflow.group_normalisation, fsl_space)
                if not path.exists()]
        if own_crashes or missing:
            if own_crashes:
                reason = f"{crash_reason(own_crashes[0])} (crash file: {own_crashes[0]})"
            elif run_error is not None:  # e.g. a full disk: no crash file could be written
                reason = f"{exception_line(run_error)} (did not produce {missing[0]})"
            else:
                reason = (f"did not produce {missing[0]}; re-run with -v and check "
                          f"{execution.work_dir}")
            failed[t1w_input.name] = reason
        else:
            succeeded.append(t1w_input.name)
    for subject in sorted({t1w_input.entities["subject"] for t1w_input in runnable}):
        report = assemble_subject_report(execution.output_dir, subject,
                                         _report_header(config, bundle))
        if report:
            LOGGER.info("Report: %s", report)
    LOGGER.info("Outputs: %s", execution.output_dir)
    return succeeded, failed


def crash_reason(crash_file: Path) -> str:
    """The last meaningful line of a Nipype crash file: the exception and its message."""
    try:
        return last_meaningful_line(crash_file.read_text(errors="replace"))
    except OSError:
        return "crashed"


def _report_header(config: Config, bundle) -> str:
    """Top of every subject page: version, run id, the lesion source and any demo warning."""
    import html

    header = (f"<p>stroke-lesion-app {html.escape(config.execution.version)}, run "
              f"{html.escape(config.execution.run_uuid)}. Research software: not for clinical "
              "use.</p>")
    if config.workflow.lesion_masks_dir is not None:
        return header + ("<p>Lesion measures re-computed from hand-edited masks "
                         f"(<code>--lesion-masks {html.escape(str(config.workflow.lesion_masks_dir))}"
                         "</code>) with the transforms of the earlier run.</p>")
    if config.workflow.lesion_source == "manual":
        return header + ("<p>Segmentation was turned off (<code>--lesion-source manual</code>): "
                         "lesion measures come from the manual masks of the input dataset.</p>")
    from stroke_lesion_app.core.bundle import DEMO_WARNING

    header += (f"<p>Lesions segmented by model bundle <b>{html.escape(bundle.name)} "
               f"{html.escape(bundle.version)}</b>: {html.escape(bundle.description)}</p>")
    if bundle.demo:
        header += f"<p class='warning'>{html.escape(DEMO_WARNING)}</p>"
    return header


def run_group(config: Config, *, flip_to_left: bool = False, min_overlap: int = 5) -> None:
    """Group level: cohort table, lesion stacks and exports for lesion-symptom mapping, maps
    and HTML, reading OUTPUT_DIR (and BIDS_DIR/participants.tsv, read only)."""
    from stroke_lesion_app.core import bids as bids_core
    from stroke_lesion_app.core.group import run_group as write_group_outputs
    from stroke_lesion_app.core.templates import get_template, template_brain

    output_dir = config.execution.output_dir
    description = output_dir / "dataset_description.json"
    if not description.is_file():
        raise bids_core.BIDSInputError(
            f"{description}: not found; run the participant level into {output_dir} first.")
    written = write_group_outputs(output_dir, template_brain(get_template())[0],
                                  bids_dir=config.execution.bids_dir,
                                  flip_to_left=flip_to_left, min_overlap=min_overlap)
    if not written["measured"]:
        LOGGER.warning("No image in %s has lesion measures yet; the cohort table lists the "
                       "images and their status only.", output_dir)
    LOGGER.info("Group report: %s", written["report"])
