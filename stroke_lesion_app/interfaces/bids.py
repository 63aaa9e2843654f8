"""Nipype interfaces for input validation and derivatives writing (thin wrappers over core)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core import images
from stroke_lesion_app.core.fileio import write_nifti_atomic

#: NIfTI xform code of template-space outputs (3: Talairach, 4: MNI152).
TEMPLATE_XFORM_CODE = 4
#: A brain-masked T1w output keeps this many voxels around the mask.
BRAIN_MASK_MARGIN_VOXELS = 3


class _ValidateT1wInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="raw T1w NIfTI (any orientation)")


class _ValidateT1wOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="conformed T1w: 3D, RAS+, float32, NaN-free")
    out_description = traits.Dict(desc="shape, voxel size (mm), orientation, dtype of the input")


class ValidateT1w(SimpleInterface):
    """Check a T1w image (:func:`core.images.load_t1w`) and conform it to RAS+ float32."""

    input_spec = _ValidateT1wInputSpec
    output_spec = _ValidateT1wOutputSpec

    def _run_interface(self, runtime):
        image = images.load_t1w(self.inputs.in_file)
        out_file = Path(runtime.cwd) / "t1w_conformed.nii.gz"
        images.conform_t1w(image).to_filename(out_file)
        self._results["out_file"] = str(out_file)
        self._results["out_description"] = images.describe_image(image)
        return runtime


class _DerivativesDataSinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="file to store as a derivative")
    output_dir = traits.Directory(mandatory=True, desc="root of the derivatives dataset")
    source_entities = traits.Dict(mandatory=True,
                                  desc="BIDS entities of the source T1w (subject, session, run…)")
    kind = traits.Enum(*bids_core.OUTPUTS, mandatory=True,
                       desc="output kind (key of core.bids.OUTPUTS), fixes the name")
    entity_overrides = traits.Dict(desc="entities/extension that replace the kind's defaults")
    raw_uri = traits.Str(desc="BIDS URI of the raw T1w (bids:raw:…): SpatialReference of "
                              "native images, and the Sources computed for the kind")
    source_files = traits.List(traits.Str, desc="Sources, when not those of the kind "
                               "(core.bids.derivative_sources), e.g. a manual lesion mask")
    metadata = traits.Dict(desc="extra JSON sidecar fields")
    brain_mask = File(exists=True, desc="a T1w image is stored brain-masked (the mask grown by "
                      "BRAIN_MASK_MARGIN_VOXELS), on the grid of in_file")
    native_reference = File(exists=True,
                            desc="raw input T1w: a native-space image is stored on its exact "
                                 "voxel grid (shape, affine, qform, sform), not the internal "
                                 "RAS+ one")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored derivative")
    out_meta = File(desc="its JSON sidecar")


class DerivativesDataSink(SimpleInterface):
    """Store one derivative under its BIDS name, with a JSON sidecar, atomically.

    The name comes from :func:`core.bids.derivative_path`; the file is copied to a temporary
    name in the destination folder and renamed, so an interrupted run never leaves a partial
    file under a final name. NIfTI outputs are re-saved gzipped when the input is not;
    transforms keep the input's extension (``.mat`` affine, ``.h5`` composite).
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec

    def _run_interface(self, runtime):
        overrides = dict(self.inputs.entity_overrides) if isdefined(
            self.inputs.entity_overrides) else {}
        in_file = Path(self.inputs.in_file)
        if bids_core.OUTPUTS[self.inputs.kind]["suffix"] == "xfm":
            overrides.setdefault("extension", in_file.suffix)  # .mat (affine) or .h5 (SyN)
        out_file = bids_core.derivative_path(self.inputs.output_dir, self.inputs.source_entities,
                                             self.inputs.kind, **overrides)
        masked = False
        if out_file.name.endswith(".nii.gz"):
            image = nib.load(str(in_file))
            suffix = bids_core.OUTPUTS[self.inputs.kind]["suffix"]
            if suffix == "probseg":
                image = images.compact_probability(image)
            elif suffix == "T1w":
                mask = (np.asanyarray(nib.load(self.inputs.brain_mask).dataobj)
                        if isdefined(self.inputs.brain_mask) else None)
                image = images.compact_intensity(image, mask, BRAIN_MASK_MARGIN_VOXELS)
                masked = mask is not None
            if isdefined(self.inputs.native_reference):
                image = images.to_input_grid(image, nib.load(self.inputs.native_reference))
            else:  # template space: MNI152 codes
                image = images.with_header_codes(image, code=TEMPLATE_XFORM_CODE)
            write_nifti_atomic(image, out_file)
        else:
            bids_core.copy_atomic(in_file, out_file)
        meta = {}
        if isdefined(self.inputs.raw_uri):
            meta.update(bids_core.derivative_metadata(self.inputs.kind, self.inputs.raw_uri))
            meta["Sources"] = bids_core.derivative_sources(
                self.inputs.kind, self.inputs.source_entities, self.inputs.raw_uri)
        if isdefined(self.inputs.source_files) and self.inputs.source_files:
            meta["Sources"] = list(self.inputs.source_files)
        if masked:
            meta["SkullStripped"] = True
        if isdefined(self.inputs.metadata):
            meta.update(self.inputs.metadata)
        sidecar = out_file.with_name(out_file.name.split(".")[0] + ".json")
        bids_core.write_json(sidecar, meta)
        self._results["out_file"] = os.fspath(out_file)
        self._results["out_meta"] = os.fspath(sidecar)
        return runtime
