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
    """Store the anatomical derivatives of one T1w image.

    Workflow Graph
    --------------
    ``inputnode → ds_t1w_preproc``

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
    t1w_preproc
        Conformed T1w (native space).
    t1w_description
        Raw image description (shape, voxel size, orientation, dtype) for the sidecar.

    Outputs
    -------
    t1w_preproc
        Path of the stored ``desc-preproc_T1w`` derivative.
    """
    ds_anat_wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc", "t1w_description"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["t1w_preproc"]), name="outputnode")
    ds_t1w_preproc = pe.Node(
        DerivativesDataSink(output_dir=str(output_dir), source_entities=dict(source_entities),
                            kind="t1w_preproc", source_files=[source_uri]),
        name="ds_t1w_preproc", run_without_submitting=True,
    )
    ds_anat_wf.connect([
        (inputnode, ds_t1w_preproc, [("t1w_preproc", "in_file"),
                                     (("t1w_description", _raw_image_meta), "metadata")]),
        (ds_t1w_preproc, outputnode, [("out_file", "t1w_preproc")]),
    ])
    return ds_anat_wf


def _raw_image_meta(description: dict) -> dict:
    return {"RawImage": description,
            "Description": "T1w checked and reoriented to RAS+ (no resampling), float32."}
