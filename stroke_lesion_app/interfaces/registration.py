"""Nipype interfaces for template lookup, registration and resampling (over core)."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from stroke_lesion_app.core import registration, templates


class _TemplateBrainInputSpec(BaseInterfaceInputSpec):
    pass


class _TemplateBrainOutputSpec(TraitedSpec):
    brain = File(exists=True, desc="template brain, float32 0-1, MNI152NLin2009aSym 1 mm")
    brain_mask = File(exists=True, desc="template brain mask, uint8")
    source = traits.Str(desc="templateflow or nilearn")


class TemplateBrain(SimpleInterface):
    """Write the template brain and mask (:func:`core.templates.template_brain`)."""

    input_spec = _TemplateBrainInputSpec
    output_spec = _TemplateBrainOutputSpec

    def _run_interface(self, runtime):
        files = templates.get_template()
        brain, mask = templates.template_brain(files)
        out_brain = Path(runtime.cwd) / "template_brain.nii.gz"
        out_mask = Path(runtime.cwd) / "template_brain_mask.nii.gz"
        brain.to_filename(out_brain)
        mask.to_filename(out_mask)
        self._results.update(brain=str(out_brain), brain_mask=str(out_mask),
                             source=files.source)
        return runtime


class _RegisterInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="skull-stripped T1w (native space)")
    in_mask = File(exists=True, desc="native brain mask (metric mask)")
    reference = File(exists=True, mandatory=True, desc="template brain")
    reference_mask = File(exists=True, desc="template brain mask (metric mask)")
    lesion_mask = File(exists=True, desc="native lesion mask excluded from the metric")
    moving_full = File(exists=True, desc="image resampled to the template grid (default in_file)")
    mode = traits.Enum(*registration.MODES, usedefault=True, desc="affine or syn")
    seed = traits.Int(1, usedefault=True, desc="ANTs random sampling seed")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _RegisterOutputSpec(TraitedSpec):
    anat2std_xfm = File(exists=True, desc="T1w → template transform (.mat or .h5)")
    std2anat_xfm = File(exists=True, desc="template → T1w transform (.mat or .h5)")
    out_file = File(exists=True, desc="moving_full resampled on the template grid")


class Register(SimpleInterface):
    """antspyx registration to the template (:func:`core.registration.register_to_template`)."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        def optional(name):
            value = getattr(self.inputs, name)
            return value if isdefined(value) else None

        result = registration.register_to_template(
            self.inputs.in_file, self.inputs.reference, runtime.cwd, mode=self.inputs.mode,
            moving_mask=optional("in_mask"), fixed_mask=optional("reference_mask"),
            lesion_mask=optional("lesion_mask"), moving_full=optional("moving_full"),
            num_threads=self.inputs.num_threads, seed=self.inputs.seed)
        self._results.update(anat2std_xfm=str(result.anat2std_xfm),
                             std2anat_xfm=str(result.std2anat_xfm), out_file=str(result.std_t1w))
        return runtime


class _ApplyTransformInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference = File(exists=True, mandatory=True, desc="image defining the output grid")
    transform = File(exists=True, mandatory=True, desc="ITK transform (reference → in_file)")
    interpolation = traits.Enum(*registration.INTERPOLATORS, usedefault=True,
                                desc="linear for maps, genericLabel for masks")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _ApplyTransformOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="resampled image on the reference grid")


class ApplyTransform(SimpleInterface):
    """Resample through one transform file (:func:`core.registration.apply_transform`)."""

    input_spec = _ApplyTransformInputSpec
    output_spec = _ApplyTransformOutputSpec

    def _run_interface(self, runtime):
        registration.set_ants_threads(self.inputs.num_threads)
        out_file = Path(runtime.cwd) / f"resampled_{Path(self.inputs.in_file).name}"
        if not out_file.name.endswith(".nii.gz"):
            out_file = out_file.with_name(out_file.name.split(".")[0] + ".nii.gz")
        registration.apply_transform(self.inputs.in_file, self.inputs.reference,
                                     self.inputs.transform, out_file,
                                     self.inputs.interpolation)
        self._results["out_file"] = str(out_file)
        return runtime
