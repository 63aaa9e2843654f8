"""Re-measure one image from a hand-edited lesion mask, reusing an earlier run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.atlases import Atlas
from stroke_lesion_app.core.bids import TEMPLATE_SPACE, T1wInput, derivative_path, xfm_extension
from stroke_lesion_app.interfaces.group_space import GroupSpaceMaps
from stroke_lesion_app.interfaces.registration import TemplateBrain
from stroke_lesion_app.interfaces.reports import ImageReport
from stroke_lesion_app.workflows.lesion import init_lesion_wf
from stroke_lesion_app.workflows.outputs import init_ds_group_space_wf, init_ds_lesion_load_wf


def earlier_outputs(output_dir: Path, t1w_input: T1wInput, registration: str) -> dict[str, Path]:
    """The files of an earlier participant run that the edited-mask re-run reads, by role.

    Raises
    ------
    FileNotFoundError
        One of the required files (preprocessed T1w, brain mask, template-space T1w, the
        first-pass transforms) is missing: the image was not processed into ``output_dir``.
    """
    xfm = xfm_extension(registration)
    entities = t1w_input.entities
    files = {"t1w_preproc": derivative_path(output_dir, entities, "t1w_preproc"),
             "t1w_mask": derivative_path(output_dir, entities, "t1w_mask"),
             "std_t1w": derivative_path(output_dir, entities, "std_t1w"),
             "anat2std_xfm": derivative_path(output_dir, entities, "anat2std_xfm", extension=xfm),
             "std2anat_xfm": derivative_path(output_dir, entities, "std2anat_xfm", extension=xfm)}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; run the participant level into {output_dir} without "
                "--lesion-masks first (with the same --registration), then re-run with the "
                "edited masks.")
    group_xfm = derivative_path(output_dir, entities, "anat2group_xfm")
    if group_xfm.is_file():
        files["anat2group_xfm"] = group_xfm
    return files


def saved_normalisation(output_dir: Path, t1w_input: T1wInput) -> dict:
    """The ``Normalisation`` record of the earlier lesion-aware pass ({} when absent)."""
    sidecar = derivative_path(output_dir, t1w_input.entities, "anat2group_xfm",
                              extension=".json")
    if not sidecar.is_file():
        return {}
    return json.loads(sidecar.read_text()).get("Normalisation", {})


def init_edited_lesion_wf(
    *,
    t1w_input: T1wInput,
    edited_mask: Path,
    output_dir: Path,
    registration: str = "affine",
    atlases: list[Atlas] | None = None,
    fsl_space: bool = False,
    omp_nthreads: int = 1,
    name: str = "edited_lesion_wf",
) -> pe.Workflow:
    """Lesion load, template-space and group-space maps, and the report of one image, from
    a hand-edited native lesion mask; no segmentation and no registration.

    The earlier run's preprocessed T1w, brain mask and transforms are read from
    ``output_dir`` (:func:`earlier_outputs`). The edited mask is projected to
    MNI152NLin2009aSym with the first-pass transform (stored as ``desc-edited``) and, when
    the earlier run made a lesion-aware transform, onto the group grids through that same
    transform (the record says it was reused and which mask it was computed with).

    Workflow Graph
    --------------
    ``template_brain → lesion_wf (manual) → ds_lesion_load_wf, image_report``
    ``template_brain → maps_std[, maps_fsl] → ds_group_space_wf`` (with a saved transform)

    Parameters
    ----------
    t1w_input : T1wInput
        The image.
    edited_mask : Path
        The edited native mask (already checked to be on the raw T1w's grid).
    output_dir : Path
        The derivatives folder of the earlier run (read and rewritten).
    registration : {"affine", "syn"}
        First-pass registration of the earlier run (names its transform files).
    atlases : list of Atlas, optional
        Label atlases for the regional overlap.
    fsl_space : bool
        Also rewrite the MNI152NLin6Asym group map.
    omp_nthreads : int
        ITK threads.
    name : str
        Workflow name.

    Inputs
    ------
    (none; every input is a file set at construction)

    Outputs
    -------
    lesion_load
        The re-measured lesion-load TSV.
    """
    files = earlier_outputs(output_dir, t1w_input, registration)
    edited_wf = pe.Workflow(name=name)
    edited_wf.__desc__ = (
        f"The lesion mask was edited by hand ({edited_mask.name}) and re-measured with the "
        "transforms of the earlier run (no new segmentation or registration).")
    outputnode = pe.Node(niu.IdentityInterface(fields=["lesion_load"]), name="outputnode")
    template_brain = pe.Node(TemplateBrain(), name="template_brain")
    lesion_wf = init_lesion_wf(lesion_source="manual", atlases=atlases,
                               omp_nthreads=omp_nthreads)
    for role in ("t1w_preproc", "t1w_mask", "anat2std_xfm", "std2anat_xfm"):
        setattr(lesion_wf.inputs.inputnode, role, str(files[role]))
    lesion_wf.inputs.inputnode.lesion_mask = str(edited_mask)
    ds_lesion_load_wf = init_ds_lesion_load_wf(
        output_dir=output_dir, source_entities=t1w_input.entities, source_uri=t1w_input.uri,
        lesion_source="edited", manual_lesion_uri=str(edited_mask))
    edited_wf.connect([
        (template_brain, lesion_wf, [("brain", "inputnode.template")]),
        (lesion_wf, ds_lesion_load_wf, [
            ("outputnode.std_lesion_mask", "inputnode.std_lesion_mask"),
            ("outputnode.lesion_load", "inputnode.lesion_load"),
            ("outputnode.lesion_components", "inputnode.lesion_components"),
            ("outputnode.lesion_load_columns", "inputnode.lesion_load_columns")]),
        (ds_lesion_load_wf, outputnode, [("outputnode.lesion_load", "lesion_load")]),
    ])

    if "anat2group_xfm" in files:
        record = {**saved_normalisation(output_dir, t1w_input),
                  "TransformReused": "from the earlier run (computed with the lesion mask of "
                                     "that run; the edited mask was not re-normalised)"}
        ds_group_space_wf = init_ds_group_space_wf(
            output_dir=output_dir, source_entities=t1w_input.entities,
            source_uri=t1w_input.uri, lesion_source="edited", registration=registration,
            lesion_uri=str(edited_mask), fsl_space=fsl_space, store_transforms=False)
        ds_group_space_wf.inputs.inputnode.record = record
        common = {"lesion_mask": str(edited_mask), "anat2group_xfm": str(files["anat2group_xfm"]),
                  "num_threads": omp_nthreads}
        maps_std = pe.Node(GroupSpaceMaps(space=TEMPLATE_SPACE, **common), name="maps_std",
                           n_procs=omp_nthreads)
        spaces = [("std", maps_std)]
        if fsl_space:
            maps_fsl = pe.Node(GroupSpaceMaps(space="MNI152NLin6Asym", **common),
                               name="maps_fsl", n_procs=omp_nthreads)
            spaces.append(("fsl", maps_fsl))
        for prefix, maps in spaces:
            edited_wf.connect([
                (template_brain, maps, [("brain", "reference")]),
                (maps, ds_group_space_wf, [("mask", f"inputnode.{prefix}_mask"),
                                           ("chain", f"inputnode.{prefix}_chain"),
                                           ("interpolation",
                                            f"inputnode.{prefix}_interpolation")]),
            ])

    image_report = pe.Node(ImageReport(
        output_dir=str(output_dir), source_entities=dict(t1w_input.entities),
        t1w_preproc=str(files["t1w_preproc"]), t1w_mask=str(files["t1w_mask"]),
        std_t1w=str(files["std_t1w"]), lesion_mask=str(edited_mask), registration=registration,
        lesion_source=f"edited by hand ({edited_mask}); transforms of the earlier run",
        methods=[edited_wf.__desc__]), name="image_report", mem_gb=1)
    edited_wf.connect([
        (template_brain, image_report, [("brain_mask", "template_mask"),
                                        ("source", "template_source")]),
        (lesion_wf, image_report, [("outputnode.lesion_load", "lesion_load"),
                                   ("outputnode.lesion_components", "lesion_components")]),
    ])
    return edited_wf


def expected_edited_outputs(output_dir: Path, t1w_input: T1wInput, registration: str,
                            fsl_space: bool = False) -> list[Path]:
    """Derivatives an edited-mask re-run (re)writes for one image."""
    entities = t1w_input.entities
    paths = [derivative_path(output_dir, entities, "lesion_load"),
             derivative_path(output_dir, entities, "lesion_components"),
             derivative_path(output_dir, entities, "std_lesion_mask", desc="edited")]
    if "anat2group_xfm" in earlier_outputs(output_dir, t1w_input, registration):
        spaces = [TEMPLATE_SPACE] + (["MNI152NLin6Asym"] if fsl_space else [])
        paths += [derivative_path(output_dir, entities, "group_lesion_mask", space=space)
                  for space in spaces]
    return paths
