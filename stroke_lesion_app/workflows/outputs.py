"""Groups of :class:`DerivativesDataSink` nodes that store each workflow's results."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from stroke_lesion_app.interfaces.bids import DerivativesDataSink


def init_ds_anat_wf(
    *,
    output_dir: Path,
    source_entities: dict,
    source_uri: str,
    name: str = "ds_anat_wf",
) -> pe.Workflow:
    """Store the native-space anatomical derivatives of one T1w image.

    Workflow Graph
    --------------
    ``inputnode → ds_t1w_preproc, ds_t1w_mask``

    Parameters
    ----------
    output_dir : Path
        Root of the derivatives dataset.
    source_entities : dict
        BIDS entities of the raw T1w.
    source_uri : str
        BIDS URI of the raw T1w (``bids:raw:sub-01/anat/sub-01_T1w.nii.gz``), recorded in
        sidecars as ``Sources``.
    name : str
        Workflow name.

    Inputs
    ------
    source_t1w
        The raw T1w: both outputs are stored on its exact voxel grid.
    t1w_preproc
        Conformed, bias-corrected T1w (native space).
    t1w_description
        Raw image description (shape, voxel size, orientation, dtype) for the sidecar.
    t1w_mask
        Brain mask (native space).
    skull_strip_method
        Skull-stripping backend used, for the mask's sidecar.

    Outputs
    -------
    t1w_preproc
        Path of the stored ``desc-preproc_T1w``.
    t1w_mask
        Path of the stored ``desc-brain_mask``.
    """
    ds_anat_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["source_t1w", "t1w_preproc", "t1w_description", "t1w_mask",
                "skull_strip_method"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc", "t1w_mask"]),
                         name="outputnode")
    common = {"output_dir": str(output_dir), "source_entities": dict(source_entities),
              "raw_uri": source_uri}
    ds_t1w_preproc = pe.Node(DerivativesDataSink(kind="t1w_preproc", **common),
                             name="ds_t1w_preproc", run_without_submitting=True)
    ds_t1w_mask = pe.Node(DerivativesDataSink(kind="t1w_mask", **common),
                          name="ds_t1w_mask", run_without_submitting=True)
    ds_anat_wf.connect([
        (inputnode, ds_t1w_preproc, [("source_t1w", "native_reference")]),
        (inputnode, ds_t1w_mask, [("source_t1w", "native_reference")]),
        (inputnode, ds_t1w_preproc, [("t1w_preproc", "in_file"),
                                     (("t1w_description", _t1w_meta), "metadata")]),
        (inputnode, ds_t1w_mask, [("t1w_mask", "in_file"),
                                  (("skull_strip_method", _mask_meta), "metadata")]),
        (ds_t1w_preproc, outputnode, [("out_file", "t1w_preproc")]),
        (ds_t1w_mask, outputnode, [("out_file", "t1w_mask")]),
    ])
    return ds_anat_wf


def init_ds_registration_wf(
    *,
    output_dir: Path,
    source_entities: dict,
    source_uri: str,
    registration: str,
    name: str = "ds_registration_wf",
) -> pe.Workflow:
    """Store the transforms to and from MNI152NLin2009aSym and the template-space T1w.

    Workflow Graph
    --------------
    ``inputnode → ds_anat2std_xfm, ds_std2anat_xfm, ds_std_t1w``

    Parameters
    ----------
    output_dir : Path
        Root of the derivatives dataset.
    source_entities : dict
        BIDS entities of the raw T1w.
    source_uri : str
        BIDS URI of the raw T1w, recorded as ``Sources``.
    registration : {"affine", "syn"}
        Registration mode, recorded in the sidecars.
    name : str
        Workflow name.

    Inputs
    ------
    anat2std_xfm
        T1w → template transform (ITK ``.mat`` or ``.h5``).
    std2anat_xfm
        Template → T1w transform.
    std_t1w
        T1w resampled on the template grid.
    template_mask
        Template brain mask (same grid): the stored ``std_t1w`` is brain-masked with it.
    template_source
        ``templateflow`` or ``nilearn``, recorded in the sidecars.

    Outputs
    -------
    anat2std_xfm
        Path of the stored ``from-T1w_to-MNI152NLin2009aSym_mode-image_xfm``.
    std2anat_xfm
        Path of the stored ``from-MNI152NLin2009aSym_to-T1w_mode-image_xfm``.
    std_t1w
        Path of the stored ``space-MNI152NLin2009aSym_desc-preproc_T1w``.
    """
    ds_registration_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["anat2std_xfm", "std2anat_xfm", "std_t1w", "template_mask", "template_source"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(
        fields=["anat2std_xfm", "std2anat_xfm", "std_t1w"]), name="outputnode")
    common = {"output_dir": str(output_dir), "source_entities": dict(source_entities),
              "raw_uri": source_uri}
    ds_anat2std_xfm = pe.Node(DerivativesDataSink(kind="anat2std_xfm", **common),
                              name="ds_anat2std_xfm", run_without_submitting=True)
    ds_std2anat_xfm = pe.Node(DerivativesDataSink(kind="std2anat_xfm", **common),
                              name="ds_std2anat_xfm", run_without_submitting=True)
    ds_std_t1w = pe.Node(DerivativesDataSink(kind="std_t1w", **common),
                         name="ds_std_t1w", run_without_submitting=True)
    meta = pe.Node(niu.Function(function=_registration_meta, output_names=["meta"]),
                   name="meta", run_without_submitting=True)
    meta.inputs.registration = registration
    ds_registration_wf.connect([
        (inputnode, meta, [("template_source", "template_source")]),
        (inputnode, ds_anat2std_xfm, [("anat2std_xfm", "in_file")]),
        (inputnode, ds_std2anat_xfm, [("std2anat_xfm", "in_file")]),
        (inputnode, ds_std_t1w, [("std_t1w", "in_file"), ("template_mask", "brain_mask")]),
        (meta, ds_anat2std_xfm, [("meta", "metadata")]),
        (meta, ds_std2anat_xfm, [("meta", "metadata")]),
        (meta, ds_std_t1w, [("meta", "metadata")]),
        (ds_anat2std_xfm, outputnode, [("out_file", "anat2std_xfm")]),
        (ds_std2anat_xfm, outputnode, [("out_file", "std2anat_xfm")]),
        (ds_std_t1w, outputnode, [("out_file", "std_t1w")]),
    ])
    return ds_registration_wf


def init_ds_segmentation_wf(
    *,
    output_dir: Path,
    source_entities: dict,
    source_uri: str,
    name: str = "ds_segmentation_wf",
) -> pe.Workflow:
    """Store the model's lesion probability and mask, in template and native space.

    Workflow Graph
    --------------
    ``inputnode → ds_std_lesion_probseg, ds_std_lesion_mask, ds_lesion_probseg,
    ds_lesion_mask``

    Parameters
    ----------
    output_dir : Path
        Root of the derivatives dataset.
    source_entities : dict
        BIDS entities of the raw T1w.
    source_uri : str
        BIDS URI of the raw T1w, recorded as ``Sources``.
    name : str
        Workflow name.

    Inputs
    ------
    source_t1w
        The raw T1w: the native-space maps are stored on its exact voxel grid.
    std_lesion_probseg
        Lesion probability, 1 mm MNI152NLin2009aSym grid.
    std_lesion_mask
        Lesion mask, same grid.
    lesion_probseg
        Lesion probability, native T1w grid.
    lesion_mask
        Lesion mask, native T1w grid.
    segmentation_metadata
        Bundle identity, inference settings and versions, copied into every sidecar.

    Outputs
    -------
    lesion_mask
        Path of the stored native ``label-L_mask``.
    std_lesion_mask
        Path of the stored ``space-MNI152NLin2009aSym_label-L_mask``.
    """
    ds_segmentation_wf = pe.Workflow(name=name)
    fields = ["std_lesion_probseg", "std_lesion_mask", "lesion_probseg", "lesion_mask"]
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["source_t1w", *fields, "segmentation_metadata"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["lesion_mask", "std_lesion_mask"]),
                         name="outputnode")
    common = {"output_dir": str(output_dir), "source_entities": dict(source_entities),
              "raw_uri": source_uri}
    ds_std_lesion_probseg = pe.Node(DerivativesDataSink(kind="std_lesion_probseg", **common),
                                    name="ds_std_lesion_probseg", run_without_submitting=True)
    ds_std_lesion_mask = pe.Node(DerivativesDataSink(kind="std_lesion_mask", **common),
                                 name="ds_std_lesion_mask", run_without_submitting=True)
    ds_lesion_probseg = pe.Node(DerivativesDataSink(kind="lesion_probseg", **common),
                                name="ds_lesion_probseg", run_without_submitting=True)
    ds_lesion_mask = pe.Node(DerivativesDataSink(kind="lesion_mask", **common),
                             name="ds_lesion_mask", run_without_submitting=True)
    sinks = {"std_lesion_probseg": ds_std_lesion_probseg,
             "std_lesion_mask": ds_std_lesion_mask,
             "lesion_probseg": ds_lesion_probseg, "lesion_mask": ds_lesion_mask}
    for field, sink in sinks.items():
        ds_segmentation_wf.connect([
            (inputnode, sink, [(field, "in_file"),
                               (("segmentation_metadata", _segmentation_meta, field),
                                "metadata")]),
        ])
    ds_segmentation_wf.connect([
        (inputnode, ds_lesion_probseg, [("source_t1w", "native_reference")]),
        (inputnode, ds_lesion_mask, [("source_t1w", "native_reference")]),
        (ds_lesion_mask, outputnode, [("out_file", "lesion_mask")]),
        (ds_std_lesion_mask, outputnode, [("out_file", "std_lesion_mask")]),
    ])
    return ds_segmentation_wf


def init_ds_lesion_load_wf(
    *,
    output_dir: Path,
    source_entities: dict,
    source_uri: str,
    lesion_source: str,
    manual_lesion_uri: str | None = None,
    name: str = "ds_lesion_load_wf",
) -> pe.Workflow:
    """Store the lesion-load tables and the template-space lesion mask they were measured on.

    Workflow Graph
    --------------
    ``inputnode → ds_lesion_load, ds_lesion_components[, ds_std_lesion_mask (manual)]``

    Parameters
    ----------
    output_dir : Path
        Root of the derivatives dataset.
    source_entities : dict
        BIDS entities of the raw T1w.
    source_uri : str
        BIDS URI of the raw T1w.
    lesion_source : str
        ``manual`` (a mask from the input dataset; its template-space copy is stored here as
        ``desc-manual``), ``edited`` (the user's edited mask, ``desc-edited``) or ``model`` (the model's masks are stored by
        :func:`init_ds_segmentation_wf`).
    manual_lesion_uri : str, optional
        BIDS URI of the manual lesion mask (``lesion_source="manual"``): the ``Sources`` of the
        tables and of its template-space copy.
    name : str
        Workflow name.

    Inputs
    ------
    std_lesion_mask
        Lesion mask on the MNI152NLin2009aSym grid (stored for a manual mask only).
    lesion_load
        One-row summary TSV.
    lesion_components
        Per-component TSV.
    lesion_load_columns
        Column descriptions of the summary TSV (its JSON sidecar).

    Outputs
    -------
    lesion_load
        Path of the stored ``label-L_desc-lesionload_stats.tsv``.
    """
    ds_lesion_load_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["std_lesion_mask", "lesion_load", "lesion_components", "lesion_load_columns"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["lesion_load"]), name="outputnode")
    common = {"output_dir": str(output_dir), "source_entities": dict(source_entities),
              "raw_uri": source_uri}
    if lesion_source != "model":
        common["source_files"] = [manual_lesion_uri or source_uri]
    ds_lesion_load = pe.Node(DerivativesDataSink(kind="lesion_load", **common),
                             name="ds_lesion_load", run_without_submitting=True)
    ds_lesion_components = pe.Node(
        DerivativesDataSink(kind="lesion_components", metadata=_COMPONENT_COLUMNS, **common),
        name="ds_lesion_components", run_without_submitting=True)
    columns_meta = pe.Node(niu.Function(function=_lesion_load_meta, output_names=["meta"]),
                           name="columns_meta", run_without_submitting=True)
    columns_meta.inputs.lesion_source = lesion_source
    ds_lesion_load_wf.connect([
        (inputnode, columns_meta, [("lesion_load_columns", "columns")]),
        (inputnode, ds_lesion_load, [("lesion_load", "in_file")]),
        (columns_meta, ds_lesion_load, [("meta", "metadata")]),
        (inputnode, ds_lesion_components, [("lesion_components", "in_file")]),
        (ds_lesion_load, outputnode, [("out_file", "lesion_load")]),
    ])
    if lesion_source != "model":  # the model's mask is stored by init_ds_segmentation_wf
        ds_std_lesion_mask = pe.Node(
            DerivativesDataSink(kind="std_lesion_mask",
                                metadata={"LesionSource": lesion_source},
                                entity_overrides={"desc": lesion_source}, **common),
            name="ds_std_lesion_mask", run_without_submitting=True)
        ds_lesion_load_wf.connect(inputnode, "std_lesion_mask", ds_std_lesion_mask, "in_file")
    return ds_lesion_load_wf


_COMPONENT_COLUMNS = {
    "component": {"Description": "Component number, by decreasing volume"},
    "voxels": {"Description": "Component size in native voxels", "Units": "voxels"},
    "volume_ml": {"Description": "Component volume in native space", "Units": "mL"},
    "centroid_x_mm": {"Description": "Centre of mass, x, MNI152NLin2009aSym", "Units": "mm"},
    "centroid_y_mm": {"Description": "Centre of mass, y, MNI152NLin2009aSym", "Units": "mm"},
    "centroid_z_mm": {"Description": "Centre of mass, z, MNI152NLin2009aSym", "Units": "mm"},
    "hemisphere": {"Description": "Side of the centre of mass (template x < 0: left)"},
}


def _segmentation_meta(metadata: dict, field: str) -> dict:
    space = ("MNI152NLin2009aSym, 1 mm" if field.startswith("std_")
             else "native T1w (back-projected from MNI152NLin2009aSym)")
    kind = ("Lesion probability (ensemble mean of the members' softmax probabilities)"
            if field.endswith("probseg") else "Binary lesion mask (1 = lesion)")
    return {"Description": f"{kind}; {space}.", "LesionSource": "model", **metadata}


def _lesion_load_meta(columns: dict, lesion_source: str) -> dict:
    return {**columns, "LesionSource": lesion_source}


def _t1w_meta(description: dict) -> dict:
    return {"RawImage": description,
            "Description": "T1w checked, reoriented to RAS+ (no resampling), N4 bias-corrected."}


def _mask_meta(method: str) -> dict:
    return {"Type": "Brain", "SkullStripping": method}


def _registration_meta(registration: str, template_source: str) -> dict:
    import ants

    return {"Registration": registration, "Software": f"antspyx {ants.__version__}",
            "Template": "MNI152NLin2009aSym", "TemplateResolution": "1 mm",
            "TemplateSource": template_source}


def init_ds_group_space_wf(
    *,
    output_dir: Path,
    source_entities: dict,
    source_uri: str,
    lesion_source: str,
    registration: str = "affine",
    lesion_uri: str | None = None,
    fsl_space: bool = False,
    store_transforms: bool = True,
    name: str = "ds_group_space_wf",
) -> pe.Workflow:
    """Store the lesion-aware transforms and the group-space lesion maps of one image.

    Workflow Graph
    --------------
    ``inputnode → ds_anat2group_xfm, ds_group2anat_xfm, ds_std_mask[, ds_std_probseg]``
    ``[, ds_fsl_mask, ds_fsl_probseg]``

    Parameters
    ----------
    output_dir : Path
        Root of the derivatives dataset.
    source_entities : dict
        BIDS entities of the raw T1w.
    source_uri : str
        BIDS URI of the raw T1w.
    lesion_source : {"model", "manual", "edited"}
        Where the lesion comes from (``LesionSource`` of the sidecars); probability maps are
        stored for ``model`` only.
    registration : {"affine", "syn"}
        First-pass registration (the extension of the ``std2anat`` file in the chain).
    lesion_uri : str, optional
        URI or path of a manual or edited mask (the maps' ``Sources``).
    fsl_space : bool
        Maps on the MNI152NLin6Asym grid are stored too.
    store_transforms : bool
        Store the transforms (False when earlier ones are reused).
    name : str
        Workflow name.

    Inputs
    ------
    anat2group_xfm
        Lesion-aware T1w → template transform (``.h5``; unused when reused).
    group2anat_xfm
        Its inverse.
    record
        Normalisation record (sidecar ``Normalisation``).
    std_mask
        MNI152NLin2009aSym lesion mask.
    std_probseg
        MNI152NLin2009aSym lesion probability (model lesions).
    std_chain
        Transform roles of those maps, in the order points travel.
    std_interpolation
        Interpolation of each map.
    fsl_mask
        MNI152NLin6Asym lesion mask (``fsl_space``).
    fsl_probseg
        MNI152NLin6Asym lesion probability (``fsl_space``, model lesions).
    fsl_chain
        Transform roles of the MNI152NLin6Asym maps.
    fsl_interpolation
        Their interpolation.

    Outputs
    -------
    std_mask
        Path of the stored ``space-MNI152NLin2009aSym_label-L_desc-lesionaware_mask``.
    """
    from stroke_lesion_app.core.bids import TEMPLATE_SPACE

    ds_group_space_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(
        fields=["anat2group_xfm", "group2anat_xfm", "record"]
        + [f"{prefix}_{field}" for prefix in ("std", "fsl")
           for field in ("mask", "probseg", "chain", "interpolation")]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["std_mask"]), name="outputnode")
    common = {"output_dir": str(output_dir), "source_entities": dict(source_entities),
              "raw_uri": source_uri}
    if lesion_source != "model":
        common["source_files"] = [lesion_uri or source_uri]
    if store_transforms:
        transforms = {**common, "source_files": []}  # Sources: those of the kind
        ds_anat2group_xfm = pe.Node(DerivativesDataSink(kind="anat2group_xfm", **transforms),
                                    name="ds_anat2group_xfm", run_without_submitting=True)
        ds_group2anat_xfm = pe.Node(DerivativesDataSink(kind="group2anat_xfm", **transforms),
                                    name="ds_group2anat_xfm", run_without_submitting=True)
        ds_group_space_wf.connect([
            (inputnode, ds_anat2group_xfm, [("anat2group_xfm", "in_file"),
                                            (("record", _transform_meta), "metadata")]),
            (inputnode, ds_group2anat_xfm, [("group2anat_xfm", "in_file"),
                                            (("record", _transform_meta), "metadata")]),
        ])

    def meta_node(node_name):
        return pe.Node(niu.Function(function=_group_map_meta, output_names=["meta"]),
                       name=node_name, run_without_submitting=True)

    def map_sink(field, space, node_name):
        return pe.Node(DerivativesDataSink(kind=f"group_lesion_{field}",
                                           entity_overrides={"space": space}, **common),
                       name=node_name, run_without_submitting=True)

    maps = [("std", "mask", TEMPLATE_SPACE, meta_node("meta_std_mask"),
             map_sink("mask", TEMPLATE_SPACE, "ds_std_mask"))]
    if lesion_source == "model":
        maps.append(("std", "probseg", TEMPLATE_SPACE, meta_node("meta_std_probseg"),
                     map_sink("probseg", TEMPLATE_SPACE, "ds_std_probseg")))
    if fsl_space:
        maps.append(("fsl", "mask", "MNI152NLin6Asym", meta_node("meta_fsl_mask"),
                     map_sink("mask", "MNI152NLin6Asym", "ds_fsl_mask")))
        if lesion_source == "model":
            maps.append(("fsl", "probseg", "MNI152NLin6Asym", meta_node("meta_fsl_probseg"),
                         map_sink("probseg", "MNI152NLin6Asym", "ds_fsl_probseg")))
    for prefix, field, space, meta, sink in maps:
        meta.inputs.space = space
        meta.inputs.field = field
        meta.inputs.lesion_source = lesion_source
        meta.inputs.source_entities = dict(source_entities)
        meta.inputs.registration = registration
        ds_group_space_wf.connect([
            (inputnode, meta, [("record", "record"), (f"{prefix}_chain", "chain"),
                               (f"{prefix}_interpolation", "interpolation")]),
            (inputnode, sink, [(f"{prefix}_{field}", "in_file")]),
            (meta, sink, [("meta", "metadata")]),
        ])
    ds_group_space_wf.connect(maps[0][4], "out_file", outputnode, "std_mask")
    return ds_group_space_wf


def _transform_meta(record: dict) -> dict:
    return {"Normalisation": record, "Template": "MNI152NLin2009aSym",
            "Description": "Lesion-aware normalisation (second pass, for group-space maps): "
                           "first-pass affine + SyN, composite ITK transform."}


def _group_map_meta(record: dict, chain: list, interpolation: dict, space: str, field: str,
                    lesion_source: str, source_entities: dict, registration: str) -> dict:
    """Sidecar of a group-space lesion map: reference, normalisation, transform chain."""
    from stroke_lesion_app.core import bids as bids_core

    xfm_extension = bids_core.xfm_extension(registration)
    uris = {"anat2group_xfm": bids_core.derivative_uri(source_entities, "anat2group_xfm"),
            "std2anat_xfm": bids_core.derivative_uri(source_entities, "std2anat_xfm",
                                                     extension=xfm_extension)}
    kind = ("Binary lesion mask (1 = lesion)" if field == "mask"
            else "Lesion probability (0-1)")
    meta = {
        "Description": f"{kind} on the 1 mm {space} grid, after lesion-aware normalisation "
                       f"({record.get('Branch', '?')}).",
        "SpatialReference": bids_core.SPACE_REFERENCE_URLS[space],
        "LesionSource": lesion_source,
        "Normalisation": record,
        "TransformChain": [uris.get(role, f"stroke-lesion-app template cache: {role}")
                           for role in chain],
        "TransformChainOrder": "group-space points go through the transforms in this order "
                               "(antspyx transformlist / antsApplyTransforms -t in this order)",
        "Interpolation": interpolation.get(field, "linear"),
    }
    if field == "mask":
        meta["Type"] = "Lesion"
    return meta
