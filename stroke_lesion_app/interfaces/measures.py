"""Nipype interface for lesion-load measures (over :mod:`core.lesionload`)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from stroke_lesion_app.core import lesionload, templates


def parse_atlas_option(value: str) -> tuple[str, Path, Path | None]:
    """Split ``NAME=IMAGE[:LABELS]`` (the ``--atlas`` option) into its parts.

    >>> parse_atlas_option("AAL=/atlases/aal.nii.gz:/atlases/aal.txt")
    ('AAL', PosixPath('/atlases/aal.nii.gz'), PosixPath('/atlases/aal.txt'))
    """
    name, separator, rest = value.partition("=")
    if not separator or not name or not rest:
        raise ValueError(f"--atlas {value!r}: write NAME=IMAGE[:LABELS.tsv]")
    image, _, labels = rest.partition(":")
    return name, Path(image), Path(labels) if labels else None


class _LesionLoadInputSpec(BaseInterfaceInputSpec):
    lesion_mask = File(exists=True, mandatory=True, desc="lesion mask, native T1w space")
    std_lesion_mask = File(exists=True, mandatory=True,
                           desc="the same lesion on the MNI152NLin2009aSym 1 mm grid")
    std2anat_xfm = File(exists=True, mandatory=True,
                        desc="template → T1w transform (maps native points to template mm)")
    atlases = traits.List(traits.Str, desc="NAME=IMAGE[:LABELS] atlases on the template")
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
        for value in self.inputs.atlases or []:
            name, image, labels = parse_atlas_option(value)
            regions = lesionload.atlas_regions(nib.load(str(image)),
                                               lesionload.read_atlas_labels(labels), std_image)
            overlaps[f"atlas-{name}"] = lesionload.region_overlap(std_image, regions)
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
