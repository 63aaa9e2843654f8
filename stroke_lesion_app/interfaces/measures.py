"""Nipype interface for lesion-load measures (over :mod:`core.lesionload`)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from stroke_lesion_app.core import lesionload, templates
from stroke_lesion_app.core.atlases import Atlas


class _LesionLoadInputSpec(BaseInterfaceInputSpec):
    lesion_mask = File(exists=True, mandatory=True, desc="lesion mask, native T1w space")
    std_lesion_mask = File(exists=True, mandatory=True,
                           desc="the same lesion on the MNI152NLin2009aSym 1 mm grid")
    std2anat_xfm = File(exists=True, mandatory=True,
                        desc="template → T1w transform (maps native points to template mm)")
    atlases = traits.List(traits.Instance(Atlas), desc="label atlases on the template")
    atlas_files = traits.List(File(exists=True),
                              desc="the atlases' images and label tables, filled in from "
                                   "atlases: hashed like any input file, so an atlas edited "
                                   "in place makes the node run again")
    connectivity = traits.Enum(26, 6, 18, usedefault=True, desc="component neighbourhood")


class _LesionLoadOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="one-row summary TSV")
    out_components = File(exists=True, desc="one row per connected component TSV")
    out_regions = File(exists=True, desc="long table of every tissue/atlas region TSV")
    out_columns = traits.Dict(desc="column descriptions of out_file (JSON sidecar)")


class LesionLoad(SimpleInterface):
    """Lesion volume, components, hemisphere, tissue and atlas overlap of one lesion."""

    input_spec = _LesionLoadInputSpec
    output_spec = _LesionLoadOutputSpec

    def __init__(self, **inputs):
        super().__init__(**inputs)
        self.inputs.on_trait_change(self._list_atlas_files, "atlases")
        self._list_atlas_files()

    def _list_atlas_files(self, *_):
        atlases = self.inputs.atlases if isdefined(self.inputs.atlases) else []
        self.inputs.atlas_files = [str(path) for atlas in atlases
                                   for path in (atlas.image, atlas.labels) if path is not None]

    def _run_interface(self, runtime):
        from stroke_lesion_app.core.registration import transform_points

        def to_template(points):
            return transform_points(points, self.inputs.std2anat_xfm)

        native = lesionload.measure_lesion(nib.load(self.inputs.lesion_mask), "T1w",
                                           to_template, self.inputs.connectivity)
        std_image = nib.load(self.inputs.std_lesion_mask)
        std = lesionload.measure_lesion(std_image, templates.TEMPLATE,
                                        connectivity=self.inputs.connectivity)
        overlaps = {"tissue": lesionload.region_overlap(
            std_image, templates.tissue_maps(templates.get_template()))}
        for atlas in self.inputs.atlases or []:
            regions = lesionload.atlas_regions(nib.load(str(atlas.image)),
                                               lesionload.read_atlas_labels(atlas.labels),
                                               std_image)
            overlaps[f"atlas-{atlas.name}"] = lesionload.region_overlap(std_image, regions)
        row = lesionload.summary_row(native, std, overlaps)
        cwd = Path(runtime.cwd)
        import pandas as pd

        pd.DataFrame([row]).to_csv(cwd / "lesion_load.tsv", sep="\t", index=False,
                                   na_rep="n/a")
        lesionload.components_table(native).to_csv(cwd / "components.tsv", sep="\t",
                                                   index=False)
        pd.concat([table.assign(source=prefix) for prefix, table in overlaps.items()]).to_csv(
            cwd / "regions.tsv", sep="\t", index=False, na_rep="n/a")
        self._results.update(out_file=str(cwd / "lesion_load.tsv"),
                             out_components=str(cwd / "components.tsv"),
                             out_regions=str(cwd / "regions.tsv"),
                             out_columns=lesionload.column_descriptions(row))
        return runtime
