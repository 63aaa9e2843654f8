"""Synthetic stroke T1w data: one generator for the tests, the demo dataset and the demo model.

Heads are made from the ICBM 2009a symmetric template shipped with nilearn (MNI152NLin2009aSym,
1 mm, 197x233x189; see :mod:`.template`), with chronic-stroke-like lesions drawn in template
space by vascular territory (:mod:`.lesions`), warped and "scanned" onto varied native grids
(:mod:`.head`), and written as a BIDS raw dataset with ground-truth derivatives (:mod:`.dataset`).

>>> from stroke_lesion_app.synthetic import synthesize_dataset
>>> summary = synthesize_dataset("bids", n_subjects=2, seed=0, resolution=3)  # doctest: +SKIP
"""

from stroke_lesion_app.synthetic.dataset import (
    TRUTH_PIPELINE,
    SyntheticSubject,
    itk_affine_text,
    synthesize_dataset,
    synthesize_subject,
)
from stroke_lesion_app.synthetic.head import (
    ORIENTATIONS,
    VOXEL_SIZES,
    Acquisition,
    Anatomy,
    SyntheticScan,
    build_anatomy,
    draw_acquisition,
    render_scan,
)
from stroke_lesion_app.synthetic.lesions import (
    SMALL_LESION_VOXELS,
    Lesion,
    LesionSet,
    draw_lesions,
)
from stroke_lesion_app.synthetic.template import (
    TEMPLATE_AFFINE,
    TEMPLATE_SHAPE,
    TEMPLATE_SPACE,
    Template,
    load_template,
)

__all__ = [
    "ORIENTATIONS",
    "SMALL_LESION_VOXELS",
    "TEMPLATE_AFFINE",
    "TEMPLATE_SHAPE",
    "TEMPLATE_SPACE",
    "TRUTH_PIPELINE",
    "VOXEL_SIZES",
    "Acquisition",
    "Anatomy",
    "Lesion",
    "LesionSet",
    "SyntheticScan",
    "SyntheticSubject",
    "Template",
    "build_anatomy",
    "draw_acquisition",
    "draw_lesions",
    "itk_affine_text",
    "load_template",
    "render_scan",
    "synthesize_dataset",
    "synthesize_subject",
]
