"""Nipype interface of the ensemble segmentation (over :mod:`core.segmentation`)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from stroke_lesion_app.core.segmentation import (
    BRAIN_MARGIN_MM,
    InferenceSettings,
    segment_template_t1w,
)


class _SegmentLesionInputSpec(BaseInterfaceInputSpec):
    std_t1w = File(exists=True, mandatory=True, desc="T1w on the 1 mm MNI152NLin2009aSym grid")
    bundle = traits.Directory(exists=True, mandatory=True, desc="model bundle folder")
    device = traits.Enum("cpu", "cuda", usedefault=True, nohash=True,
                         desc="where the networks run")
    tta = traits.Bool(True, usedefault=True, desc="mirroring test-time augmentation")
    step_size = traits.Range(low=0.1, high=1.0, value=0.5, usedefault=True,
                             desc="sliding-window step (fraction of the patch)")
    folds_per_member = traits.Int(desc="use only the first N folds of each member")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="torch CPU threads")
    brain_mask = File(exists=True, desc="brain mask on the same grid; lesion probability is "
                      "set to 0 farther than brain_margin_mm outside it")
    brain_margin_mm = traits.Float(BRAIN_MARGIN_MM, usedefault=True,
                                   desc="margin around the brain mask (mm)")


class _SegmentLesionOutputSpec(TraitedSpec):
    std_lesion_probseg = File(exists=True, desc="lesion probability, 1 mm template grid")
    std_lesion_mask = File(exists=True, desc="lesion mask, 1 mm template grid")
    metadata = traits.Dict(desc="bundle identity, settings and versions for the sidecars")


class SegmentLesion(SimpleInterface):
    """Lesion probability and mask of a template-space T1w from a model bundle's ensemble."""

    input_spec = _SegmentLesionInputSpec
    output_spec = _SegmentLesionOutputSpec

    def _run_interface(self, runtime):
        folds = (self.inputs.folds_per_member if isdefined(self.inputs.folds_per_member)
                 else None)
        settings = InferenceSettings(device=self.inputs.device, tta=self.inputs.tta,
                                     step_size=float(self.inputs.step_size),
                                     folds_per_member=folds,
                                     num_threads=int(self.inputs.num_threads))
        probseg = os.path.join(runtime.cwd, "lesion_probseg.nii.gz")
        mask = os.path.join(runtime.cwd, "lesion_mask.nii.gz")
        brain_mask = self.inputs.brain_mask if isdefined(self.inputs.brain_mask) else None
        metadata = segment_template_t1w(self.inputs.std_t1w, self.inputs.bundle, settings,
                                        probseg, mask, brain_mask=brain_mask,
                                        brain_margin_mm=float(self.inputs.brain_margin_mm))
        self._results.update(std_lesion_probseg=probseg, std_lesion_mask=mask,
                             metadata=metadata)
        return runtime
