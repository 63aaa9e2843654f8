"""Nipype interfaces of the group-space lesion maps: the lesion-aware normalisation
(:mod:`core.lesion_normalisation`) and the resampling of the lesion maps through it."""

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

from stroke_lesion_app.core import lesion_normalisation, registration


class _LesionAwareNormalisationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="skull-stripped T1w, native space")
    in_mask = File(exists=True, mandatory=True, desc="native brain mask (SyN metric mask)")
    lesion_mask = File(exists=True, mandatory=True, desc="native lesion mask (any grid)")
    anat2std_xfm = File(exists=True, mandatory=True, desc="first-pass T1w → template")
    std2anat_xfm = File(exists=True, mandatory=True, desc="first-pass template → T1w")
    reference = File(exists=True, mandatory=True, desc="template brain, 1 mm")
    reference_mask = File(exists=True, mandatory=True, desc="template brain mask")
    branch = traits.Enum("auto", *lesion_normalisation.BRANCHES, usedefault=True,
                         desc="normalisation branch; auto decides from the lesion")
    seed = traits.Int(1, usedefault=True, desc="ANTs random sampling seed")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _LesionAwareNormalisationOutputSpec(TraitedSpec):
    anat2group_xfm = File(exists=True, desc="T1w → template, composite .h5 (affine + SyN)")
    group2anat_xfm = File(exists=True, desc="template → T1w, composite .h5")
    branch = traits.Str(desc="branch that ran")
    record = traits.Dict(desc="branch, reason, lesion geometry, parameters (for sidecars)")


class LesionAwareNormalisation(SimpleInterface):
    """Second-pass normalisation with the lesion known
    (:func:`core.lesion_normalisation.normalise_with_lesion`)."""

    input_spec = _LesionAwareNormalisationInputSpec
    output_spec = _LesionAwareNormalisationOutputSpec

    def _run_interface(self, runtime):
        result = lesion_normalisation.normalise_with_lesion(
            self.inputs.in_file, self.inputs.in_mask, self.inputs.lesion_mask,
            self.inputs.anat2std_xfm, self.inputs.std2anat_xfm, self.inputs.reference,
            self.inputs.reference_mask, Path(runtime.cwd), branch=self.inputs.branch,
            num_threads=self.inputs.num_threads, seed=self.inputs.seed)
        self._results.update(anat2group_xfm=str(result.anat2group_xfm),
                             group2anat_xfm=str(result.group2anat_xfm), branch=result.branch,
                             record=result.record)
        return runtime


class _GroupSpaceMapsInputSpec(BaseInterfaceInputSpec):
    space = traits.Enum("MNI152NLin2009aSym", "MNI152NLin6Asym", usedefault=True,
                        desc="group space whose grid the maps take")
    lesion_mask = File(exists=True, desc="native lesion mask (manual or edited lesions)")
    std_lesion_mask = File(exists=True, desc="first-pass template-space lesion mask (model)")
    std_lesion_probseg = File(exists=True, desc="first-pass template-space probability (model)")
    std2anat_xfm = File(exists=True, desc="first-pass template → T1w (model maps only)")
    anat2group_xfm = File(exists=True, mandatory=True, desc="lesion-aware T1w → template")
    reference = File(exists=True, mandatory=True,
                     desc="MNI152NLin2009aSym template (1 mm grid); for MNI152NLin6Asym the "
                          "FSL template is looked up, with the template-to-template transform")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _GroupSpaceMapsOutputSpec(TraitedSpec):
    mask = File(exists=True, desc="lesion mask on the group grid (uint8 0/1)")
    probseg = File(desc="lesion probability on the group grid (model lesions only)")
    chain = traits.List(traits.Str, desc="transforms, in ANTs' order, each as its role")
    interpolation = traits.Dict(desc="interpolation of the mask and of the probability")


class GroupSpaceMaps(SimpleInterface):
    """Resample a lesion onto a group grid through the lesion-aware transform, in one
    interpolation.

    Model lesions are resampled from the model's first-pass template maps (chain
    ``[anat2group, std2anat]``: group point → native → first-pass template), manual and edited
    masks from native space (``[anat2group]``); MNI152NLin6Asym puts the template-to-template
    transform first (a group point in NLin6Asym goes to MNI152NLin2009aSym first).
    Masks: label interpolation; probabilities: linear.
    """

    input_spec = _GroupSpaceMapsInputSpec
    output_spec = _GroupSpaceMapsOutputSpec

    def _run_interface(self, runtime):
        registration.set_ants_threads(self.inputs.num_threads)
        reference = self.inputs.reference
        chain, roles = [self.inputs.anat2group_xfm], ["anat2group_xfm"]
        if self.inputs.space == "MNI152NLin6Asym":
            from stroke_lesion_app.core import templates
            from stroke_lesion_app.core.template_transforms import template_to_fsl_transform

            files = templates.fsl_template()
            transform = template_to_fsl_transform(num_threads=self.inputs.num_threads)
            if files is None or transform is None:
                raise RuntimeError("MNI152NLin6Asym template vanished from TEMPLATEFLOW_HOME "
                                   "during the run; re-run the participant level")
            reference = str(_fsl_grid_reference(Path(runtime.cwd)))
            chain.insert(0, str(transform))
            roles.insert(0, "MNI152NLin2009aSym_to_MNI152NLin6Asym_xfm")
        model = isdefined(self.inputs.std_lesion_mask)
        if model:
            chain.append(self.inputs.std2anat_xfm)
            roles.append("std2anat_xfm")
            source_mask = self.inputs.std_lesion_mask
        elif isdefined(self.inputs.lesion_mask):
            source_mask = self.inputs.lesion_mask
        else:
            raise ValueError("GroupSpaceMaps needs lesion_mask or std_lesion_mask")
        out = Path(runtime.cwd)
        self._results["mask"] = str(registration.apply_transform(
            source_mask, reference, chain, out / "group_lesion_mask.nii.gz",
            interpolator="genericLabel"))
        interpolation = {"mask": "genericLabel"}
        if model and isdefined(self.inputs.std_lesion_probseg):
            self._results["probseg"] = str(registration.apply_transform(
                self.inputs.std_lesion_probseg, reference, chain,
                out / "group_lesion_probseg.nii.gz", interpolator="linear"))
            interpolation["probseg"] = "linear"
        self._results.update(chain=roles, interpolation=interpolation)
        return runtime


def _fsl_grid_reference(folder: Path) -> Path:
    """An empty image on FSL's ``MNI152_T1_1mm`` grid (182×218×182, LAS, origin (90, -126,
    -72) mm): the grid NeMo, LQT and the group stacks use (TemplateFlow's copy has the same
    voxel centres in RAS order)."""
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core.group_stacks import GROUP_GRIDS

    grid = GROUP_GRIDS["MNI152NLin6Asym"]
    path = folder / "fsl_grid.nii.gz"
    nib.Nifti1Image(np.zeros(grid.shape, np.uint8), grid.affine).to_filename(path)
    return path
