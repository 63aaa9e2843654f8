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

from stroke_lesion_app.core.bundle import ModelBundle
from stroke_lesion_app.core.segmentation import (
    BRAIN_MARGIN_MM,
    InferenceSettings,
    segment_template_t1w,
)


class _SegmentLesionInputSpec(BaseInterfaceInputSpec):
    std_t1w = File(exists=True, mandatory=True, desc="T1w on the 1 mm MNI152NLin2009aSym grid")
    bundle = traits.Instance(ModelBundle, mandatory=True,
                             desc="the model bundle, parsed and validated once by the caller")
    inference = traits.Instance(InferenceSettings, mandatory=True,
                                desc="TTA, step, folds and the requested device (auto, cpu, "
                                     "cuda), decided when the node runs")
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
    """Lesion probability and mask of a template-space T1w from a model bundle's ensemble.

    ``--device auto`` is decided here, on the machine that runs the node (a compute node
    under a cluster plugin), and ``--device cuda`` is refused here when no GPU is visible.
    """

    input_spec = _SegmentLesionInputSpec
    output_spec = _SegmentLesionOutputSpec

    def _run_interface(self, runtime):
        settings = self.inputs.inference.resolved(num_threads=int(self.inputs.num_threads))
        probseg = os.path.join(runtime.cwd, "lesion_probseg.nii.gz")
        mask = os.path.join(runtime.cwd, "lesion_mask.nii.gz")
        brain_mask = self.inputs.brain_mask if isdefined(self.inputs.brain_mask) else None
        metadata = segment_template_t1w(self.inputs.std_t1w, self.inputs.bundle, settings,
                                        probseg, mask, brain_mask=brain_mask,
                                        brain_margin_mm=float(self.inputs.brain_margin_mm))
        self._results.update(std_lesion_probseg=probseg, std_lesion_mask=mask,
                             metadata=metadata)
        return runtime
