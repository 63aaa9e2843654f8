"""Run-wide settings, filled by the CLI and read by ``workflows/base.py`` only.

Sections, as in fMRIPrep's ``config.py``:

``execution``
    what to process and where (BIDS dir, output dir, work dir, labels, filters, run id).
``nipype``
    how to execute (plugin, plugin arguments, processes, threads, memory, crash behaviour).
``workflow``
    what the pipeline does (model bundle, device, inference options, atlases).

The settings are a plain dataclass (no module-level state), dumped as TOML into every subject's
``log/<run_uuid>/`` folder so a run can be inspected and repeated.
"""

from __future__ import annotations

import logging
import os
import tomllib
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

from stroke_lesion_app import __version__
from stroke_lesion_app.core.atlases import Atlas

#: Named loggers: use these, never ``print``.
LOGGERS = {
    "cli": logging.getLogger("stroke_lesion_app.cli"),
    "workflow": logging.getLogger("stroke_lesion_app.workflow"),
}

NIPYPE_PLUGINS = ("MultiProc", "Linear", "SLURM", "SLURMGraph", "SGE", "SGEGraph", "PBS",
                  "PBSGraph", "LSF", "Condor", "OAR", "IPython")


def _new_run_uuid() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{uuid.uuid4()}"


@dataclass
class ExecutionSettings:
    """What to process and where; paths are absolute."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str = "participant"
    work_dir: Path = field(default_factory=lambda: Path("work").absolute())
    participant_labels: list[str] = field(default_factory=list)
    session_labels: list[str] = field(default_factory=list)
    bids_filters: dict[str, Any] = field(default_factory=dict)
    skip_bids_validation: bool = False
    verbosity: int = 0
    run_uuid: str = field(default_factory=_new_run_uuid)
    version: str = __version__


@dataclass
class NipypeSettings:
    """Execution engine settings (Nipype plugins do the scheduling, locally or on a cluster)."""

    plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    nprocs: int = field(default_factory=lambda: os.cpu_count() or 1)
    omp_nthreads: int = 0  # 0: decided from nprocs by :meth:`Config.resolved_omp_nthreads`
    mem_gb: float | None = None
    stop_on_first_crash: bool = False

    def plugin_settings(self) -> dict[str, Any]:
        """``{"plugin": ..., "plugin_args": ...}`` for ``Workflow.run``."""
        args = dict(self.plugin_args)
        if self.plugin == "MultiProc":
            args.setdefault("n_procs", self.nprocs)
            # Workers start from a clean server process, not forked from this one: a fork
            # inherits torch/OpenMP/CUDA state (this process may have touched torch, e.g. to
            # check --device) and then hangs; seen as a deadlocked MultiProc pool.
            args.setdefault("mp_context", "forkserver")
            if self.mem_gb:
                args.setdefault("memory_gb", self.mem_gb)
            args.setdefault("raise_insufficient", False)
        return {"plugin": self.plugin, "plugin_args": args}


@dataclass
class WorkflowSettings:
    """What the pipeline does."""

    model: str = "demo"
    device: str = "auto"
    skull_strip: str = "auto"
    registration: str = "affine"
    atlases: list[Atlas] = field(default_factory=list)
    #: ``model``: segment with the bundle; ``manual``: measure the dataset's own lesion masks.
    lesion_source: str = "model"
    tta: bool = True
    step_size: float = 0.5
    #: ``--brain-box``: sliding window over the brain's bounding box only.
    brain_box: bool = False
    #: ``--fast``: no TTA, step 1.0, the brain box, one fold per member.
    fast: bool = False
    #: ``--group-normalisation``: lesion-aware second normalisation of the group-space maps
    #: (``auto``, ``enantiomorphic``, ``cost-function``, ``syn``; ``affine``: none).
    group_normalisation: str = "auto"
    #: ``--lesion-masks``: folder of edited lesion masks; the images that have one are
    #: re-measured from it (no segmentation, no registration), the others are left as they are.
    lesion_masks_dir: Path | None = None

    def inference_settings(self):
        """The :class:`~stroke_lesion_app.core.segmentation.InferenceSettings` of these options
        (``--fast`` applied; the device left as given, to be decided where the networks run)."""
        from stroke_lesion_app.core.segmentation import InferenceSettings

        return InferenceSettings.from_options(device=self.device, tta=self.tta,
                                              step_size=self.step_size, fast=self.fast,
                                              brain_box=self.brain_box)


@dataclass
class Config:
    """All settings of one run."""

    execution: ExecutionSettings
    nipype: NipypeSettings = field(default_factory=NipypeSettings)
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)

    def resolved_omp_nthreads(self) -> int:
        """Threads per process: the user's value, else ``nprocs`` capped at 8 (as fMRIPrep)."""
        if self.nipype.omp_nthreads > 0:
            return min(self.nipype.omp_nthreads, self.nipype.nprocs)
        return max(1, min(self.nipype.nprocs, 8))

    def to_dict(self) -> dict[str, Any]:
        """Plain, TOML-ready dictionary (paths as strings, ``None`` left out)."""
        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items() if item is not None}
            if isinstance(value, (list, tuple)):
                return [clean(item) for item in value]
            if isinstance(value, Path):
                return str(value)
            return value

        return clean(asdict(self))

    def to_filename(self, path: Path | str) -> Path:
        """Write the settings as TOML (atomically) and return the path."""
        from stroke_lesion_app.core.fileio import write_text_atomic

        return write_text_atomic(path, tomli_w.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path | str) -> Config:
        """Read settings written by :meth:`to_filename` (or a hand-written file in that format,
        where every key and section may be left out).

        Raises
        ------
        ValueError
            Not TOML, or a section or key that :class:`Config` does not have (one line naming
            the file and the key).
        """
        try:
            content = tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"{path}: not a readable TOML settings file ({error}).") from None
        sections = {}
        types = {"execution": ExecutionSettings, "nipype": NipypeSettings,
                 "workflow": WorkflowSettings}
        unknown = sorted(set(content) - set(types))
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {unknown}; the sections are "
                             f"{sorted(types)}.")
        for name, section_type in types.items():
            values = dict(content.get(name, {}))
            known = {item.name for item in fields(section_type)}
            if set(values) - known:
                raise ValueError(f"{path}: [{name}] has unknown key(s) "
                                 f"{sorted(set(values) - known)}; known: {sorted(known)}.")
            for key in values:
                if key.endswith("_dir"):
                    values[key] = Path(values[key])
            if name == "execution":  # the paths of the run that wrote the file, if any
                values.setdefault("bids_dir", Path())
                values.setdefault("output_dir", Path())
            if name == "workflow" and "atlases" in values:
                values["atlases"] = [
                    Atlas(entry["name"], Path(entry["image"]),
                          Path(entry["labels"]) if entry.get("labels") else None)
                    for entry in values["atlases"]]
            sections[name] = section_type(**values)
        return cls(**sections)
