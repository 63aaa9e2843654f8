"""BIDS input discovery and BIDS-Derivatives output naming and writing.

This module is the **only** place where output file names are built. Every derivative is
described by an entry of :data:`OUTPUTS` (a *kind*: which entities and suffix it carries);
:func:`derivative_path` combines it with the entities of the source T1w image.

Input discovery (:func:`collect_t1w`) uses pybids. Multiple T1w runs of one subject/session are
**processed independently**: each run keeps its ``run-`` entity in every output name, so no
image is silently dropped and nothing is averaged across scans that may differ.

Nothing in this module writes into the input dataset: all writers take an output directory,
and :func:`check_output_dir` refuses an output directory inside the BIDS dataset unless it is
under ``derivatives/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .bundle import BUNDLE_FILENAME
from .fileio import atomic_path, write_json_atomic, write_text_atomic

LOGGER = logging.getLogger("stroke_lesion_app.bids")

#: Template space of every template-space output (the space of ATLAS v2.0).
TEMPLATE_SPACE = "MNI152NLin2009aSym"

#: Entities of the source T1w carried over into derivative names (as in the NiPreps).
SOURCE_ENTITIES = ("subject", "session", "acquisition", "ceagent", "reconstruction", "run")

#: BIDS key of each entity, in the order they appear in a file name.
ENTITY_ORDER = (
    ("subject", "sub"),
    ("session", "ses"),
    ("acquisition", "acq"),
    ("ceagent", "ce"),
    ("reconstruction", "rec"),
    ("run", "run"),
    ("from", "from"),
    ("to", "to"),
    ("mode", "mode"),
    ("space", "space"),
    ("resolution", "res"),
    ("label", "label"),
    ("desc", "desc"),
)
_ENTITY_KEYS = dict(ENTITY_ORDER)

#: Every derivative the app writes, by kind. Entities here are fixed by the kind; the source
#: image provides subject/session/acquisition/ceagent/reconstruction/run.
OUTPUTS: dict[str, dict[str, str]] = {
    "t1w_preproc": {"desc": "preproc", "suffix": "T1w", "extension": ".nii.gz"},
    "t1w_mask": {"desc": "brain", "suffix": "mask", "extension": ".nii.gz"},
    "lesion_mask": {"label": "L", "suffix": "mask", "extension": ".nii.gz"},
    "lesion_probseg": {"label": "L", "suffix": "probseg", "extension": ".nii.gz"},
    "std_t1w": {"space": TEMPLATE_SPACE, "desc": "preproc", "suffix": "T1w",
                "extension": ".nii.gz"},
    "std_lesion_mask": {"space": TEMPLATE_SPACE, "label": "L", "suffix": "mask",
                        "extension": ".nii.gz"},
    "std_lesion_probseg": {"space": TEMPLATE_SPACE, "label": "L", "suffix": "probseg",
                           "extension": ".nii.gz"},
    "anat2std_xfm": {"from": "T1w", "to": TEMPLATE_SPACE, "mode": "image", "suffix": "xfm",
                     "extension": ".mat"},
    "std2anat_xfm": {"from": TEMPLATE_SPACE, "to": "T1w", "mode": "image", "suffix": "xfm",
                     "extension": ".mat"},
    # Group space: the lesion-aware (second-pass) normalisation; ``space`` is overridden for
    # the second group space (MNI152NLin6Asym)
    "group_lesion_mask": {"space": TEMPLATE_SPACE, "label": "L", "desc": "lesionaware",
                          "suffix": "mask", "extension": ".nii.gz"},
    "group_lesion_probseg": {"space": TEMPLATE_SPACE, "label": "L", "desc": "lesionaware",
                             "suffix": "probseg", "extension": ".nii.gz"},
    "anat2group_xfm": {"from": "T1w", "to": TEMPLATE_SPACE, "mode": "image",
                       "desc": "lesionaware", "suffix": "xfm", "extension": ".h5"},
    "group2anat_xfm": {"from": TEMPLATE_SPACE, "to": "T1w", "mode": "image",
                       "desc": "lesionaware", "suffix": "xfm", "extension": ".h5"},
    "lesion_load": {"label": "L", "desc": "lesionload", "suffix": "stats", "extension": ".tsv"},
    "lesion_components": {"label": "L", "desc": "components", "suffix": "stats",
                          "extension": ".tsv"},
}

#: Group-level outputs made once per template space (``OUTPUT_DIR/group/``): name by kind,
#: ``{space}`` filled by :func:`group_path`. A ``.nii.gz`` stack has a ``.tsv`` (volume order)
#: and a ``.json`` (metadata) of the same name beside it (:func:`group_sidecar`).
GROUP_SPACE_OUTPUTS = {
    "mask_stack": "space-{space}_label-L_desc-stack_mask.nii.gz",
    "probseg_stack": "space-{space}_label-L_desc-stack_probseg.nii.gz",
    "flipped_stack": "space-{space}_label-L_desc-stackflipped_mask.nii.gz",
    "count_map": "space-{space}_label-L_desc-count_probseg.nii.gz",
    "frequency_map": "space-{space}_label-L_desc-frequency_probseg.nii.gz",
    "overlap_mask": "space-{space}_label-L_desc-minoverlap_mask.nii.gz",
    # NiiStat reads tab-separated design files only as .tab/.txt (nii_read_design.m)
    "niistat_sheet": "space-{space}_label-L_desc-niistat_design.tab",
    "lesymap_list": "space-{space}_label-L_desc-lesymap_files.txt",
}

#: Group-level outputs (``OUTPUT_DIR/group/``): name by kind.
GROUP_OUTPUTS = {
    "cohort_table": "label-L_desc-lesionload_stats.tsv",
    "regions_table": "label-L_desc-regions_stats.tsv",
    "frequency_map": GROUP_SPACE_OUTPUTS["frequency_map"].format(space=TEMPLATE_SPACE),
    "count_map": GROUP_SPACE_OUTPUTS["count_map"].format(space=TEMPLATE_SPACE),
    "report": "group.html",
}

#: Labels under which raw BIDS datasets store manual lesion masks.
LESION_MASK_QUERIES = (
    {"suffix": "roi", "label": "lesion"},
    {"suffix": "mask", "label": "L"},
    {"suffix": "mask", "label": "lesion"},
)


class BIDSInputError(ValueError):
    """Bad input dataset or query; the message is one line naming the file and the fix."""


@dataclass
class T1wInput:
    """One T1w image to process, with the manual lesion mask a user may already have.

    Attributes
    ----------
    path : Path
        The raw T1w NIfTI file (read only).
    entities : dict
        pybids entities of ``path`` restricted to :data:`SOURCE_ENTITIES`.
    lesion_masks : list of Path
        Raw-BIDS lesion masks (``_label-lesion_roi``, ``_label-L_mask``) that match the image's
        subject/session/run; recorded for later use (e.g. cost-function masking).
    uri : str
        BIDS URI of the image (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``) for ``Sources``.
    """

    path: Path
    entities: dict[str, str]
    lesion_masks: list[Path] = field(default_factory=list)
    uri: str = ""

    @property
    def name(self) -> str:
        """Nipype-safe identifier such as ``sub-01_ses-1_run-2``."""
        return "_".join(
            f"{_ENTITY_KEYS[key]}-{self.entities[key]}" for key in SOURCE_ENTITIES
            if key in self.entities
        )


def strip_prefix(label: str, prefix: str) -> str:
    """Return ``label`` without a leading ``prefix-`` (``"sub-01" -> "01"``).

    >>> strip_prefix("sub-01", "sub"), strip_prefix("01", "sub")
    ('01', '01')
    """
    label = str(label).strip()
    return label[len(prefix) + 1:] if label.startswith(f"{prefix}-") else label


def derivative_name(source_entities: Mapping[str, Any], kind: str, **overrides: str) -> str:
    """Build the BIDS-Derivatives file name of output ``kind`` for one source image.

    Parameters
    ----------
    source_entities : mapping
        pybids entities of the source T1w (only :data:`SOURCE_ENTITIES` are used).
    kind : str
        A key of :data:`OUTPUTS`.
    **overrides : str
        Entities or ``extension`` that replace the kind's defaults (e.g. ``extension=".h5"`` for a
        composite non-linear transform, ``resolution="2"``).

    Examples
    --------
    >>> derivative_name({"subject": "01", "session": "1"}, "lesion_mask")
    'sub-01_ses-1_label-L_mask.nii.gz'
    >>> derivative_name({"subject": "01"}, "std_lesion_probseg")
    'sub-01_space-MNI152NLin2009aSym_label-L_probseg.nii.gz'
    >>> derivative_name({"subject": "01"}, "anat2std_xfm")
    'sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat'
    >>> derivative_name({"subject": "01", "run": 2}, "t1w_mask")
    'sub-01_run-2_desc-brain_mask.nii.gz'
    """
    if kind not in OUTPUTS:
        raise ValueError(f"unknown output kind {kind!r}; known kinds: {', '.join(OUTPUTS)}")
    spec = {**OUTPUTS[kind], **overrides}
    entities = {key: source_entities[key] for key in SOURCE_ENTITIES if key in source_entities}
    if "subject" not in entities:
        raise ValueError(f"source entities {dict(source_entities)!r} have no subject")
    entities.update({key: value for key, value in spec.items() if key in _ENTITY_KEYS})
    parts = [f"{bids_key}-{entities[key]}" for key, bids_key in ENTITY_ORDER if key in entities]
    return "_".join(parts + [spec["suffix"]]) + spec["extension"]


def xfm_extension(registration: str) -> str:
    """Extension of the first-pass transform files: ``.mat`` (affine) or ``.h5`` (SyN
    composite).

    >>> xfm_extension("affine"), xfm_extension("syn")
    ('.mat', '.h5')
    """
    return ".mat" if registration == "affine" else ".h5"


def derivative_path(
    output_dir: Path | str, source_entities: Mapping[str, Any], kind: str, **overrides: str
) -> Path:
    """Full path of output ``kind``: ``OUTPUT_DIR/sub-X[/ses-Y]/anat/<derivative_name>``.

    >>> derivative_path("/out", {"subject": "01", "session": "1"}, "t1w_mask").as_posix()
    '/out/sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz'
    """
    folder = Path(output_dir) / f"sub-{source_entities['subject']}"
    if source_entities.get("session"):
        folder = folder / f"ses-{source_entities['session']}"
    return folder / "anat" / derivative_name(source_entities, kind, **overrides)


def subject_report_path(output_dir: Path | str, subject: str) -> Path:
    """Per-subject HTML report, at the top of the output dir as in fMRIPrep (``sub-01.html``)."""
    return Path(output_dir) / f"sub-{strip_prefix(subject, 'sub')}.html"


def group_path(output_dir: Path | str, kind: str, space: str | None = None) -> Path:
    """Path of a group-level output under ``OUTPUT_DIR/group``: a key of
    :data:`GROUP_OUTPUTS`, or with ``space`` a key of :data:`GROUP_SPACE_OUTPUTS`.

    >>> group_path("/out", "cohort_table").as_posix()
    '/out/group/label-L_desc-lesionload_stats.tsv'
    >>> group_path("/out", "mask_stack", "MNI152NLin6Asym").name
    'space-MNI152NLin6Asym_label-L_desc-stack_mask.nii.gz'
    """
    names = GROUP_OUTPUTS if space is None else GROUP_SPACE_OUTPUTS
    if kind not in names:
        raise ValueError(f"unknown group output {kind!r}; known: {', '.join(names)}")
    return Path(output_dir) / "group" / names[kind].format(space=space)


def group_sidecar(path: Path | str, extension: str) -> Path:
    """The file of the same name as a group image with another extension (``.tsv``, ``.json``).

    >>> group_sidecar("/out/group/space-X_label-L_desc-stack_mask.nii.gz", ".tsv").name
    'space-X_label-L_desc-stack_mask.tsv'
    """
    path = Path(path)
    return path.with_name(path.name.split(".", 1)[0] + extension)


def figures_dir(output_dir: Path | str, source_entities: Mapping[str, Any]) -> Path:
    """``OUTPUT_DIR/sub-<label>/figures``: the report's pictures, as in fMRIPrep."""
    return Path(output_dir) / f"sub-{source_entities['subject']}" / "figures"


def figure_name(source_entities: Mapping[str, Any], desc: str, extension: str = ".png") -> str:
    """Name of one report figure: the image's entities, ``desc``, and the suffix ``figure``.

    The suffix keeps a picture from posing as an image (``_T1w.png`` reads as a T1w to the BIDS
    validator); ``figures/`` is also listed in ``.bidsignore``.

    >>> figure_name({"subject": "01", "session": "1"}, "brainmask")
    'sub-01_ses-1_desc-brainmask_figure.png'
    >>> figure_name({"subject": "02", "run": 3}, "lesion")
    'sub-02_run-3_desc-lesion_figure.png'
    """
    return derivative_name(source_entities, "t1w_preproc", desc=desc, suffix="figure",
                           extension=extension)


# --------------------------------------------------------------------------------------------
# Staged folders and copies (atomic writers: :mod:`.fileio`)
# --------------------------------------------------------------------------------------------
def replace_directory(staged: Path, final: Path) -> Path:
    """Move a fully written ``staged`` folder to ``final``, replacing an older ``final``.

    The old folder is first renamed aside and deleted only once the new one is in place, so
    ``final`` is never missing nor half-written.
    """
    staged, final = Path(staged), Path(final)
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        staged.rename(final)
        shutil.rmtree(old)
    else:
        staged.rename(final)
    return final


def write_json(path: Path | str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically; returns the final path."""
    return write_json_atomic(path, data, default=str)


def copy_atomic(src: Path | str, dst: Path | str) -> Path:
    """Copy ``src`` to ``dst`` through a temporary file and a rename."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


# --------------------------------------------------------------------------------------------
# dataset_description.json
# --------------------------------------------------------------------------------------------
CODE_URL = "https://github.com/stroke-lesion-app/stroke-lesion-app"


def container_info() -> dict[str, str] | None:
    """Describe the container we run in (``None`` outside one).

    Docker images set ``STROKE_LESION_APP_CONTAINER=docker``; Apptainer/Singularity export
    ``APPTAINER_CONTAINER`` / ``SINGULARITY_CONTAINER`` with the image path.
    """
    for variable, kind in (("APPTAINER_CONTAINER", "apptainer"),
                           ("SINGULARITY_CONTAINER", "singularity")):
        if os.environ.get(variable):
            return {"Type": kind, "Tag": os.environ[variable]}
    if os.environ.get("STROKE_LESION_APP_CONTAINER"):
        return {"Type": os.environ["STROKE_LESION_APP_CONTAINER"],
                "Tag": os.environ.get("STROKE_LESION_APP_IMAGE", "unknown")}
    return None


def _relative_uri(target: Path, output_dir: Path | None) -> str:
    """``target`` relative to ``output_dir`` (the derivatives stay valid when both move
    together), or a ``file://`` URI when no output folder is given."""
    if output_dir is None:
        return target.as_uri()
    return Path(os.path.relpath(target, Path(output_dir).absolute())).as_posix()


def derivatives_description(bids_dir: Path | str, version: str,
                            output_dir: Path | str | None = None,
                            model_dir: Path | str | None = None) -> dict[str, Any]:
    """Contents of the output ``dataset_description.json`` (BIDS-Derivatives 1.9).

    ``SourceDatasets`` names the input dataset by its ``DatasetDOI`` when it has one, else by
    its location, relative to ``output_dir``. ``DatasetLinks`` resolves the BIDS URIs the
    sidecars use: ``bids:raw:`` (the input dataset) and ``bids:model:`` (the model bundle
    folder, when one segmented the lesions).
    """
    bids_dir = Path(bids_dir).absolute()
    generated_by: dict[str, Any] = {"Name": "stroke-lesion-app", "Version": version,
                                    "CodeURL": CODE_URL}
    container = container_info()
    if container:
        generated_by["Container"] = container
    source: dict[str, str] = {"URL": _relative_uri(bids_dir, output_dir)}
    with contextlib.suppress(OSError, ValueError):
        raw = json.loads((bids_dir / "dataset_description.json").read_text())
        if raw.get("DatasetDOI"):
            source = {"DOI": raw["DatasetDOI"]}
        if raw.get("Name"):
            source["Name"] = raw["Name"]
    links = {"raw": _relative_uri(bids_dir, output_dir)}
    if model_dir is not None:
        links["model"] = _relative_uri(Path(model_dir).absolute(), output_dir)
    return {
        "Name": "stroke-lesion-app outputs",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [source],
        "DatasetLinks": links,
        "HowToAcknowledge": "Cite the MSCSA paper (arXiv:2501.15423), nnU-Net, ANTs and "
                            "TemplateFlow (references in the README).",
    }


#: ``.bidsignore`` of the outputs: only what BIDS has no place for yet (reports and their
#: figures, logs, group-level summaries, transforms (BEP014) and statistics tables).
BIDSIGNORE = ("*.html", "figures", "log", "group", "*_xfm.*", "*_stats.tsv", "*_stats.json")


def write_dataset_description(output_dir: Path | str, bids_dir: Path | str, version: str,
                              model_dir: Path | str | None = None) -> Path:
    """Write ``OUTPUT_DIR/dataset_description.json`` (atomically, replacing an older one) and
    make sure ``OUTPUT_DIR/.bidsignore`` lists :data:`BIDSIGNORE` (a user's lines are kept)."""
    output_dir = Path(output_dir)
    ignore = output_dir / ".bidsignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    missing = [pattern for pattern in BIDSIGNORE if pattern not in lines]
    if missing:
        write_text_atomic(ignore, "\n".join(lines + missing) + "\n")
    return write_json(output_dir / "dataset_description.json",
                      derivatives_description(bids_dir, version, output_dir, model_dir))


#: TemplateFlow's address of the template T1w: the SpatialReference of template-space images.
TEMPLATE_REFERENCE_URL = ("https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009aSym/"
                          f"tpl-{TEMPLATE_SPACE}_res-1_T1w.nii.gz")
#: ``SpatialReference`` of each template space the app writes maps in.
SPACE_REFERENCE_URLS = {
    TEMPLATE_SPACE: TEMPLATE_REFERENCE_URL,
    "MNI152NLin6Asym": ("https://templateflow.s3.amazonaws.com/tpl-MNI152NLin6Asym/"
                        "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"),
}


def derivative_uri(source_entities: Mapping[str, Any], kind: str, **overrides: str) -> str:
    """``bids::`` URI of a derivative of this dataset (a ``Sources`` entry).

    >>> derivative_uri({"subject": "01"}, "lesion_mask")
    'bids::sub-01/anat/sub-01_label-L_mask.nii.gz'
    """
    return "bids::" + derivative_path(Path(), source_entities, kind, **overrides).as_posix()


def derivative_sources(kind: str, source_entities: Mapping[str, Any], raw_uri: str) -> list[str]:
    """``Sources`` of a derivative written from the model's segmentation or the preprocessing:
    the files it was computed from, as BIDS URIs (``bids:raw:`` input, ``bids::`` outputs,
    ``bids:model:`` bundle).

    >>> derivative_sources("std_lesion_mask", {"subject": "01"}, "bids:raw:sub-01/anat/x.nii")
    ['bids::sub-01/anat/sub-01_space-MNI152NLin2009aSym_label-L_probseg.nii.gz']
    """
    made_from = {
        "t1w_preproc": [],
        "t1w_mask": ["t1w_preproc"],
        "std_t1w": ["t1w_preproc"],
        "anat2std_xfm": ["t1w_preproc"],
        "std2anat_xfm": ["t1w_preproc"],
        "std_lesion_probseg": ["std_t1w"],
        "std_lesion_mask": ["std_lesion_probseg"],
        "lesion_probseg": ["std_lesion_probseg"],
        "lesion_mask": ["std_lesion_mask"],
        "lesion_load": ["lesion_mask", "std_lesion_mask"],
        "lesion_components": ["lesion_mask"],
        "anat2group_xfm": ["t1w_preproc", "lesion_mask", "anat2std_xfm"],
        "group2anat_xfm": ["t1w_preproc", "lesion_mask", "anat2std_xfm"],
        "group_lesion_mask": ["std_lesion_mask", "std2anat_xfm", "anat2group_xfm"],
        "group_lesion_probseg": ["std_lesion_probseg", "std2anat_xfm", "anat2group_xfm"],
    }[kind]
    sources = [raw_uri] if kind == "t1w_preproc" else []
    sources += [derivative_uri(source_entities, name) for name in made_from]
    if kind == "std_lesion_probseg":
        sources.append(f"bids:model:{BUNDLE_FILENAME}")
    return sources


#: Default ``Description`` of a derivative kind (a workflow's own text replaces it).
DESCRIPTIONS = {
    "t1w_preproc": "T1w head, N4 bias-corrected, on the raw T1w's voxel grid.",
    "t1w_mask": "Brain mask (1 = brain) on the raw T1w's voxel grid.",
    "std_t1w": (f"Bias-corrected T1w resampled onto the 1 mm {TEMPLATE_SPACE} grid, masked "
                "with the template's brain mask grown by 3 mm."),
}

def derivative_metadata(kind: str, raw_uri: str) -> dict[str, Any]:
    """The BIDS keys every derivative of ``kind`` carries: ``SpatialReference`` of images (the
    raw T1w for native space, the template for template space), ``SkullStripped`` of T1w
    images (heads, not brains) and ``Type`` of masks."""
    spec = OUTPUTS[kind]
    meta: dict[str, Any] = {"Description": DESCRIPTIONS[kind]} if kind in DESCRIPTIONS else {}
    if spec["extension"] == ".nii.gz":
        meta["SpatialReference"] = (TEMPLATE_REFERENCE_URL if spec.get("space") else raw_uri)
    if spec["suffix"] == "T1w":
        meta["SkullStripped"] = False
    if spec["suffix"] == "mask":
        meta["Type"] = "Lesion" if spec.get("label") == "L" else "Brain"
    return meta


# --------------------------------------------------------------------------------------------
# Input checks and discovery
# --------------------------------------------------------------------------------------------
def check_bids_dir(bids_dir: Path | str, validate: bool = True) -> Path:
    """Check that ``bids_dir`` looks like a BIDS dataset; return it as an absolute path.

    Raises
    ------
    BIDSInputError
        Missing or empty folder; with ``validate``, a missing/invalid ``dataset_description.json``
        (needs ``Name`` and ``BIDSVersion``) or no ``sub-*`` folder.
    """
    bids_dir = Path(bids_dir).absolute()
    if not bids_dir.is_dir():
        raise BIDSInputError(f"{bids_dir}: BIDS folder not found; give the path of your dataset.")
    if not any(bids_dir.iterdir()):
        raise BIDSInputError(f"{bids_dir}: the BIDS folder is empty; give the path of your "
                             "dataset (the folder that holds dataset_description.json).")
    if not validate:
        return bids_dir
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise BIDSInputError(
            f"{description}: missing; every BIDS dataset needs it (add one with 'Name' and "
            "'BIDSVersion', or use --skip-bids-validation)."
        )
    try:
        content = json.loads(description.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BIDSInputError(f"{description}: not valid JSON ({error}); fix the file or use "
                             "--skip-bids-validation.") from None
    missing = [key for key in ("Name", "BIDSVersion") if not isinstance(content, dict)
               or key not in content]
    if missing:
        raise BIDSInputError(f"{description}: lacks {', '.join(missing)}; add them or use "
                             "--skip-bids-validation.")
    if not any(path.is_dir() for path in bids_dir.glob("sub-*")):
        raise BIDSInputError(f"{bids_dir}: no sub-* folders; is this the dataset's root folder?")
    return bids_dir


def check_output_dir(output_dir: Path | str, bids_dir: Path | str) -> Path:
    """Refuse an output directory inside the BIDS dataset (unless under ``derivatives/``).

    Also checks that the output folder can be created and written. Returns the absolute path.
    """
    output_dir = Path(output_dir).absolute()
    bids_dir = Path(bids_dir).absolute()
    resolved_out, resolved_bids = output_dir.resolve(), bids_dir.resolve()
    if resolved_out == resolved_bids or (
        resolved_out.is_relative_to(resolved_bids)
        and not resolved_out.is_relative_to(resolved_bids / "derivatives")
    ):
        raise BIDSInputError(
            f"{output_dir}: output folder lies inside the input dataset {bids_dir}; choose a "
            f"folder outside it, or under {bids_dir / 'derivatives'}."
        )
    if resolved_out == resolved_bids / "derivatives":
        raise BIDSInputError(f"{output_dir}: give a named folder under derivatives/, e.g. "
                             f"{bids_dir / 'derivatives' / 'stroke-lesion-app'}.")
    check_writable_dir(output_dir, "output")
    return output_dir


def check_writable_dir(folder: Path, role: str) -> None:
    """Create ``folder`` if needed and check that files can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise BIDSInputError(f"{folder}: {role} folder is not writable ({error.strerror}); "
                             "choose a folder you can write to.") from None


def load_filters(path: Path | str | None) -> dict[str, Any]:
    """Read a ``--bids-filter-file``: JSON with a ``t1w`` pybids query (other keys ignored).

    >>> load_filters(None)
    {}
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise BIDSInputError(f"{path}: filter file not found; check the path.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BIDSInputError(f"{path}: not valid JSON ({error}); write it as "
                             '{"t1w": {"session": "1", "acquisition": "mprage"}}.') from None
    if not isinstance(content, dict) or not isinstance(content.get("t1w", {}), dict):
        raise BIDSInputError(f"{path}: expected an object with a 't1w' query, e.g. "
                             '{"t1w": {"session": "1"}}.')
    query = dict(content.get("t1w", {}))
    reserved = {"datatype", "suffix", "extension"} & set(query)
    if reserved:
        raise BIDSInputError(f"{path}: the t1w query may not set {', '.join(sorted(reserved))}; "
                             "these are fixed to anat/T1w/.nii[.gz].")
    return query


def index_dataset(bids_dir: Path, validate: bool = True):
    """Index ``bids_dir`` with pybids (in memory; nothing is written into the dataset).

    ``validate=True`` ignores files whose names are not valid BIDS (pybids' path validation).
    """
    from bids import BIDSLayout  # pybids import is slow; keep it out of CLI start-up

    try:
        return BIDSLayout(str(bids_dir), validate=validate, derivatives=False)
    except Exception as error:  # pybids raises several types for unreadable datasets
        raise BIDSInputError(f"{bids_dir}: pybids could not index the dataset "
                             f"({str(error).splitlines()[0]}); fix the dataset or use "
                             "--skip-bids-validation.") from None


@dataclass
class Discovery:
    """Result of :func:`collect_t1w`: images to process and per-subject problems.

    Attributes
    ----------
    inputs : list of T1wInput
        One entry per T1w image (subject × session × run) that matched the query.
    errors : dict
        ``{participant label: one-line message}`` for requested participants without a T1w.
    """

    inputs: list[T1wInput]
    errors: dict[str, str]


def collect_t1w(
    layout,
    participant_labels: list[str] | None = None,
    session_labels: list[str] | None = None,
    filters: Mapping[str, Any] | None = None,
) -> Discovery:
    """Find the T1w images to process.

    Parameters
    ----------
    layout : bids.BIDSLayout
        The indexed input dataset.
    participant_labels : list of str, optional
        Labels with or without ``sub-``; all subjects when empty.
    session_labels : list of str, optional
        Labels with or without ``ses-``; all sessions when empty.
    filters : mapping, optional
        Extra pybids entities for the T1w query (the ``t1w`` object of a filter file).

    Raises
    ------
    BIDSInputError
        A requested participant label does not exist in the dataset, or the dataset holds no
        T1w image that matches at all.
    """
    bids_dir = Path(layout.root)
    all_subjects = sorted(layout.get_subjects())
    if participant_labels:
        wanted = sorted({strip_prefix(label, "sub") for label in participant_labels})
        unknown = [label for label in wanted if label not in all_subjects]
        if unknown:
            raise BIDSInputError(
                f"{bids_dir}: participant(s) {', '.join('sub-' + u for u in unknown)} not found "
                f"(the dataset has: {', '.join(all_subjects) or 'none'}); check "
                "--participant-label."
            )
    else:
        wanted = all_subjects
    query: dict[str, Any] = dict(filters or {})
    if session_labels:
        query["session"] = sorted({strip_prefix(label, "ses") for label in session_labels})
    inputs: list[T1wInput] = []
    errors: dict[str, str] = {}
    for subject in wanted:
        files = layout.get(subject=subject, datatype="anat", suffix="T1w",
                           extension=[".nii", ".nii.gz"], **query)
        if not files:
            where = bids_dir / f"sub-{subject}"
            errors[subject] = (f"{where}: no T1w image matches the query "
                               f"({_describe_query(query)}); add anat/sub-{subject}_T1w.nii.gz "
                               "or relax --session-label/--bids-filter-file.")
            continue
        for bids_file in sorted(files, key=lambda item: item.path):
            entities = {key: str(value) for key, value in bids_file.get_entities().items()
                        if key in SOURCE_ENTITIES}
            path = Path(bids_file.path)
            inputs.append(T1wInput(path, entities, find_lesion_masks(path, entities),
                                   uri=f"bids:raw:{path.relative_to(bids_dir).as_posix()}"))
    if not inputs and not errors:
        raise BIDSInputError(f"{bids_dir}: no T1w images found; expected "
                             "sub-<label>/[ses-<label>/]anat/sub-<label>_T1w.nii.gz.")
    return Discovery(inputs, errors)


def find_lesion_masks(t1w_path: Path, entities: Mapping[str, str]) -> list[Path]:
    """Raw-BIDS lesion masks (``_label-lesion_roi``, ``_label-L_mask``) beside one T1w image.

    Such names are not valid raw BIDS, so pybids' validating index skips them; they are found in
    the T1w's ``anat`` folder instead. A mask matches when subject and session agree and its run
    is the image's run or absent.
    """
    from bids.layout import parse_file_entities

    found: list[Path] = []
    for candidate in sorted(Path(t1w_path).parent.glob(f"sub-{entities['subject']}_*.nii*")):
        mask_entities = parse_file_entities(candidate.name)
        if not any(all(str(mask_entities.get(key)) == value for key, value in query.items())
                   for query in LESION_MASK_QUERIES):
            continue
        if str(mask_entities.get("session", "")) != str(entities.get("session", "")):
            continue
        if "run" in mask_entities and int(mask_entities["run"]) != int(
                entities.get("run", mask_entities["run"])):
            continue
        found.append(candidate)
    return found


def _describe_query(query: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in query.items()) or "any T1w"


# --------------------------------------------------------------------------------------------
# Edited lesion masks (--lesion-masks DIR)
# --------------------------------------------------------------------------------------------
def find_edited_mask(folder: Path | str, source_entities: Mapping[str, Any]) -> Path | None:
    """The user's edited copy of an image's lesion mask in ``folder``, or None.

    The file carries the name of the mask the app wrote (``sub-01[_ses-1]_label-L_mask.nii.gz``,
    or ``.nii``), directly in ``folder`` or in its ``sub-X/[ses-Y/]anat/`` folder (a
    derivatives-shaped copy).
    """
    folder = Path(folder)
    name = derivative_name(source_entities, "lesion_mask")
    nested = derivative_path(folder, source_entities, "lesion_mask")
    for candidate in (folder / name, nested):
        for path in (candidate, candidate.with_name(name[: -len(".gz")])):
            if path.is_file():
                return path
    return None


def check_edited_mask(mask: Path, raw_t1w: Path, source_entities: Mapping[str, Any]) -> None:
    """Refuse an edited mask that is not on the grid of the raw T1w (where the app's own
    native mask lies) or that is not a 3-D mask.

    Raises
    ------
    BIDSInputError
        One line naming the file and the fix.
    """
    import nibabel as nib
    import numpy as np

    written = derivative_name(source_entities, "lesion_mask")
    try:
        image = nib.load(str(mask))
        reference = nib.load(str(raw_t1w))
    except Exception as error:  # noqa: BLE001 - nibabel raises many types
        raise BIDSInputError(f"{mask}: not a readable NIfTI image ({error}); save the edited "
                             f"mask as NIfTI with the name {written}.") from None
    shape, expected = image.shape[:3], reference.shape[:3]
    if len(image.shape) > 3 and any(size > 1 for size in image.shape[3:]):
        raise BIDSInputError(f"{mask}: has {image.shape} voxels (4-D); save one 3-D mask.")
    if shape != expected or not np.allclose(image.affine, reference.affine, atol=1e-3):
        zooms = "×".join(f"{z:g}" for z in image.header.get_zooms()[:3])
        raise BIDSInputError(
            f"{mask}: edited mask is on a {'×'.join(map(str, shape))} grid ({zooms} mm) that "
            f"differs from the T1w {raw_t1w.name} ({'×'.join(map(str, expected))}); save it on "
            f"the grid of the app's {written} (edit that file, do not reslice it).")
