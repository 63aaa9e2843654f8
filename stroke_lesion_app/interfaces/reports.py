"""Nipype interface drawing one image's report section (over :mod:`core.reports`)."""

from __future__ import annotations

import html

import nibabel as nib
import pandas as pd
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core import reports


class _ImageReportInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Directory(mandatory=True, desc="root of the derivatives dataset")
    source_entities = traits.Dict(mandatory=True, desc="BIDS entities of the raw T1w")
    t1w_preproc = File(exists=True, mandatory=True, desc="native T1w")
    t1w_mask = File(exists=True, mandatory=True, desc="native brain mask")
    std_t1w = File(exists=True, mandatory=True, desc="T1w on the template grid")
    template_mask = File(exists=True, mandatory=True,
                         desc="template brain mask (outline of the registration check)")
    t1w_description = traits.Dict(desc="raw image shape, voxel size, orientation, dtype")
    skull_strip_method = traits.Str(desc="skull-stripping backend used")
    registration = traits.Str(desc="affine or syn")
    template_source = traits.Str(desc="templateflow or nilearn")
    lesion_mask = File(exists=True, desc="native lesion mask (when one is available)")
    lesion_load = File(exists=True, desc="lesion-load summary TSV")
    lesion_components = File(exists=True, desc="per-component TSV")
    lesion_source = traits.Str(desc="where the lesion mask comes from (shown in the report)")
    model_warning = traits.Str(desc="warning shown at the top of the section (demo model)")
    methods = traits.List(traits.Str, desc="methods paragraphs with [@citations]")


class _ImageReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="HTML fragment of this image")
    out_figures = traits.List(File(exists=True), desc="PNG figures")


class ImageReport(SimpleInterface):
    """QC figures (brain mask, registration, lesion) and the HTML section of one image."""

    input_spec = _ImageReportInputSpec
    output_spec = _ImageReportOutputSpec

    def _run_interface(self, runtime):
        entities = self.inputs.source_entities
        figures = bids_core.figures_dir(self.inputs.output_dir, entities)
        t1w = nib.load(self.inputs.t1w_preproc)
        brain_png = reports.mosaic(
            t1w, [(nib.load(self.inputs.t1w_mask), "#ff3030")],
            figures / bids_core.figure_name(entities, "brainmask"),
            title="Brain mask (red) over the bias-corrected T1w")
        registration_png = reports.mosaic(
            nib.load(self.inputs.std_t1w), [(nib.load(self.inputs.template_mask), "#30c0ff")],
            figures / bids_core.figure_name(entities, "registration"),
            title="T1w in MNI152NLin2009aSym with the template brain outline (blue)")
        out_figures = [str(brain_png), str(registration_png)]
        label = bids_core.derivative_name(entities, "t1w_preproc").split("_desc-")[0]
        sections = [f"<h2>{html.escape(label)}</h2>"]
        if isdefined(self.inputs.model_warning) and self.inputs.model_warning:
            sections.append(f"<p class='warning'>{html.escape(self.inputs.model_warning)}</p>")
        sections.append(self._summary())
        lesion_html = "<h3>Lesion</h3>"
        if isdefined(self.inputs.lesion_mask):
            lesion_png = reports.mosaic(
                t1w, [(nib.load(self.inputs.lesion_mask), "#ffd000")],
                figures / bids_core.figure_name(entities, "lesion"),
                title="Lesion outline (yellow) over the T1w, native space")
            out_figures.append(str(lesion_png))
            source = (self.inputs.lesion_source if isdefined(self.inputs.lesion_source)
                      else "not stated")
            lesion_html += (f"<p>Lesion mask: {html.escape(source)}</p>"
                            f"<img src='sub-{entities['subject']}/figures/{lesion_png.name}' "
                            "alt='lesion outline'>")
            if isdefined(self.inputs.lesion_load):
                summary = pd.read_csv(self.inputs.lesion_load, sep="\t").T.reset_index()
                summary.columns = ["measure", "value"]
                lesion_html += "<h4>Lesion load</h4>" + reports.table_html(summary)
            if isdefined(self.inputs.lesion_components):
                lesion_html += ("<h4>Connected components</h4>" + reports.table_html(
                    pd.read_csv(self.inputs.lesion_components, sep="\t")))
        else:
            lesion_html += ("<p class='warning'>No lesion mask for this image: segmentation "
                            "was turned off (<code>--lesion-source manual</code>) and the "
                            "dataset has no manual lesion mask (<code>_label-lesion_roi</code>) "
                            "for it.</p>")
        sections.append(lesion_html)
        subject_dir = f"sub-{entities['subject']}/figures"
        sections.append(
            "<h3>Brain mask</h3>"
            f"<img src='{subject_dir}/{brain_png.name}' alt='brain mask'>"
            "<h3>Registration to MNI152NLin2009aSym</h3>"
            f"<img src='{subject_dir}/{registration_png.name}' alt='registration'>")
        sections.append("<h3>Methods</h3>" + reports.methods_html(self.inputs.methods or []))
        out_report = figures / f"{label}_report.html"
        reports.write_text_atomic(out_report, "<section>" + "".join(sections) + "</section>")
        self._results.update(out_report=str(out_report), out_figures=out_figures)
        return runtime

    def _summary(self) -> str:
        description = (self.inputs.t1w_description
                       if isdefined(self.inputs.t1w_description) else {})
        items = {
            "Input image": ", ".join(f"{key} {value}" for key, value in description.items()),
            "Skull-stripping": self.inputs.skull_strip_method,
            "Registration": self.inputs.registration,
            "Template": "MNI152NLin2009aSym 1 mm" + (
                f" ({self.inputs.template_source})" if isdefined(self.inputs.template_source)
                else ""),
        }
        return "<dl>" + "".join(
            f"<dt>{html.escape(key)}</dt><dd>{html.escape(str(value))}</dd>"
            for key, value in items.items() if isdefined(value) and value) + "</dl>"
