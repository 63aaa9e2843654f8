"""Nipype interface drawing one image's report section (over :mod:`core.reports`)."""

from __future__ import annotations

import html
import os

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
    lesion_probseg = File(exists=True,
                          desc="native lesion probability (0-1) of the model; undefined for "
                               "manual masks")
    lesion_threshold = traits.Range(low=0.0, high=1.0,
                                    desc="probability threshold of the model bundle (marked on "
                                         "the probability figure's colour bar)")
    lesion_load = File(exists=True, desc="lesion-load summary TSV")
    lesion_components = File(exists=True, desc="per-component TSV")
    lesion_source = traits.Str(desc="where the lesion mask comes from (shown in the report)")
    model_warning = traits.Str(desc="warning shown at the top of the section (demo model)")
    methods = traits.List(traits.Str, desc="methods paragraphs with [@citations]")


class _ImageReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="stand-alone HTML page of this image's section")
    out_figures = traits.List(File(exists=True), desc="PNG figures")


class ImageReport(SimpleInterface):
    """QC figures (lesion, lesion probability, brain mask, registration) and the HTML section of
    one image.

    Figures and the section's page go to ``OUTPUT_DIR/sub-<label>/figures/``; the page's links
    are relative to that folder (it opens on its own) and
    :func:`~stroke_lesion_app.core.reports.assemble_subject_report` re-roots them in
    ``sub-<label>.html``. Figures are drawn in the radiological convention with side letters on
    every panel (:data:`~stroke_lesion_app.core.reports.DISPLAY_CONVENTION`).
    """

    input_spec = _ImageReportInputSpec
    output_spec = _ImageReportOutputSpec

    def _run_interface(self, runtime):
        entities = self.inputs.source_entities
        figures = bids_core.figures_dir(self.inputs.output_dir, entities)
        label = bids_core.derivative_name(entities, "t1w_preproc").split("_desc-")[0]
        t1w = nib.load(self.inputs.t1w_preproc)
        out_figures = []

        def draw(desc, function, *args, **kwargs):
            path = function(*args, figures / bids_core.figure_name(entities, desc), **kwargs)
            out_figures.append(str(path))
            return path.name

        sections = [f"<h2>{html.escape(label)}</h2>"]
        if isdefined(self.inputs.model_warning) and self.inputs.model_warning:
            sections.append(f"<p class='warning'>{html.escape(self.inputs.model_warning)}</p>")
        sections.append(self._summary())
        brain_png = draw("brainmask", reports.mosaic, t1w,
                         [(nib.load(self.inputs.t1w_mask), "#ff3030")],
                         title="Brain mask (red outline) over the bias-corrected T1w, native space")
        registration_png = draw(
            "registration", reports.mosaic, nib.load(self.inputs.std_t1w),
            [(nib.load(self.inputs.template_mask), "#30c0ff")],
            title="T1w in MNI152NLin2009aSym with the template brain outline (blue)")
        sections.append(self._lesion_html(t1w, entities, draw))
        sections.append(
            "<h3>Brain mask</h3>" + reports.figure_html(
                brain_png, "brain mask outline over the T1w",
                "Brain mask (red outline) over the bias-corrected T1w: sagittal, coronal and "
                "axial slices, positions in scanner mm.")
            + "<h3>Registration to MNI152NLin2009aSym</h3>" + reports.figure_html(
                registration_png, "registration check",
                "The T1w resampled to the template with the template's brain outline (blue): "
                "the outline should follow the brain's edge. Positions in MNI mm."))
        sections.append("<h3>Methods</h3>" + reports.methods_html(self.inputs.methods or []))
        section = (f"<section class='image-report' id='{html.escape(label)}'>"
                   + "".join(sections) + "</section>")
        out_report = figures / f"{label}{reports.FRAGMENT_SUFFIX}"
        reports.write_text_atomic(
            out_report, reports.image_section_page(entities["subject"], label, section))
        self._results.update(out_report=str(out_report), out_figures=out_figures)
        return runtime

    def _lesion_html(self, t1w, entities, draw) -> str:
        text = "<h3>Lesion</h3>"
        if not isdefined(self.inputs.lesion_mask):
            return text + ("<p class='warning'>No lesion mask for this image: segmentation "
                           "was turned off (<code>--lesion-source manual</code>) and the "
                           "dataset has no manual lesion mask (<code>_label-lesion_roi</code>) "
                           "for it.</p>")
        lesion = nib.load(self.inputs.lesion_mask)
        source = (self.inputs.lesion_source if isdefined(self.inputs.lesion_source)
                  else "not stated")
        text += f"<p>Lesion mask: {html.escape(source)}</p>"
        lesion_png = draw("lesion", reports.lesion_figure, t1w, lesion)
        text += reports.figure_html(
            lesion_png, "lesion outline over the T1w, zoomed and axial overview",
            "Lesion outline (yellow) over the T1w, native space. Top: sagittal, coronal and "
            "axial slices through the centre of the largest component, zoomed, without and "
            "with the outline. Below: axial slices over the lesion. Positions in scanner mm.")
        if isdefined(self.inputs.lesion_probseg):
            threshold = (self.inputs.lesion_threshold if isdefined(self.inputs.lesion_threshold)
                         else None)
            probability_png = draw("probability", reports.probability_figure, t1w,
                                   nib.load(self.inputs.lesion_probseg), lesion=lesion,
                                   threshold=threshold)
            text += reports.figure_html(
                probability_png, "lesion probability heat map over the T1w",
                "Lesion probability of the model (mean of the ensemble, 0 to 1; values under "
                "0.05 not drawn) over the T1w, with the lesion mask outline (cyan)"
                + (f"; the mask keeps voxels at or above {threshold:g} on the template grid, "
                   "then drops components below the bundle's minimum size"
                   if threshold is not None else "")
                + ". Colour outside the outline is sub-threshold probability.")
        links = self._table_links(entities)
        if isdefined(self.inputs.lesion_load):
            summary = pd.read_csv(self.inputs.lesion_load, sep="\t").iloc[0].to_dict()
            text += ("<h4>Lesion load</h4>" + reports.summary_table_html(summary)
                     + links.get("lesion_load", ""))
            regions = reports.regions_table_html(summary)
            if regions:
                text += "<h4>Tissue and region overlap</h4>" + regions
        if isdefined(self.inputs.lesion_components):
            text += ("<h4>Connected components</h4>" + reports.table_html(
                pd.read_csv(self.inputs.lesion_components, sep="\t"))
                + links.get("lesion_components", ""))
        return text

    def _table_links(self, entities) -> dict[str, str]:
        """Notes linking the derivative TSVs (full precision), relative to the figures folder."""
        figures = bids_core.figures_dir(self.inputs.output_dir, entities)
        notes = {}
        for kind in ("lesion_load", "lesion_components"):
            path = bids_core.derivative_path(self.inputs.output_dir, entities, kind)
            href = os.path.relpath(path, figures).replace(os.sep, "/")
            notes[kind] = (f"<p class='note'>Rounded for display; every digit in "
                           f"<a href='{html.escape(href)}'>{html.escape(path.name)}</a>.</p>")
        return notes

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
