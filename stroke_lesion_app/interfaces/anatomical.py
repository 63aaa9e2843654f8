"""Nipype interfaces for bias correction and skull-stripping (thin wrappers over core)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from stroke_lesion_app.core import brainmask, intensity
from stroke_lesion_app.core.device import resolve_device


class _BiasFieldCorrectionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="conformed T1w (native space)")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _BiasFieldCorrectionOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="N4-corrected T1w, same grid")


class BiasFieldCorrection(SimpleInterface):
    """N4 bias-field correction (:func:`core.intensity.n4_bias_correct`)."""

    input_spec = _BiasFieldCorrectionInputSpec
    output_spec = _BiasFieldCorrectionOutputSpec

    def _run_interface(self, runtime):
        out_file = Path(runtime.cwd) / "t1w_n4.nii.gz"
        intensity.n4_bias_correct(self.inputs.in_file, out_file, self.inputs.num_threads)
        self._results["out_file"] = str(out_file)
        return runtime


class _BrainExtractionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="T1w head (native space)")
    method = traits.Enum(*brainmask.METHODS, usedefault=True, desc="skull-stripping backend")
    device = traits.Enum("cpu", "auto", "cuda", usedefault=True, nohash=True,
                         desc="torch device as requested (auto: decided where the node runs)")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="CPU threads")


class _BrainExtractionOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="skull-stripped T1w (zero outside the brain)")
    out_mask = File(exists=True, desc="brain mask, uint8, native grid")
    method = traits.Str(desc="backend actually used (auto resolved)")


class BrainExtraction(SimpleInterface):
    """Brain mask and skull-stripped T1w (:func:`core.brainmask.brain_mask`)."""

    input_spec = _BrainExtractionInputSpec
    output_spec = _BrainExtractionOutputSpec

    def _run_interface(self, runtime):
        image = nib.load(self.inputs.in_file)
        method = brainmask.resolve_method(self.inputs.method)
        device = resolve_device(self.inputs.device) if method == "deepbet" else "cpu"
        mask = brainmask.brain_mask(image, method, device, self.inputs.num_threads)
        out_mask = Path(runtime.cwd) / "brain_mask.nii.gz"
        out_file = Path(runtime.cwd) / "t1w_brain.nii.gz"
        mask.to_filename(out_mask)
        brain = np.asanyarray(image.dataobj, dtype=np.float32) * (np.asanyarray(mask.dataobj) > 0)
        nib.Nifti1Image(brain, image.affine).to_filename(out_file)
        self._results.update(out_file=str(out_file), out_mask=str(out_mask), method=method)
        return runtime
