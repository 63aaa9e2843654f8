"""The measured side of the preprocessing benchmark: one function per step.

``python -m benchmarks.runner preprocessing.step '{"step": NAME, "work": DIR, "threads": N}'``
runs :func:`run_step` in a fresh interpreter: it enters the work folder, imports the app's
preprocessing modules, then times step ``NAME`` (:data:`STEPS`) and reports the process's peak
resident set. Each step reads the files the steps before it wrote into the work folder
(``head.nii.gz`` from :func:`benchmarks.fixtures.scanner_copy` first).
"""

from __future__ import annotations

import os
import time

from benchmarks.measure import status_kb


def conform_n4(threads: int) -> dict:
    from stroke_lesion_app.core import images, intensity

    image = images.conform_t1w(images.load_t1w("head.nii.gz"))
    image.to_filename("conformed.nii.gz")
    intensity.n4_bias_correct("conformed.nii.gz", "t1w_n4.nii.gz", threads)
    return {}


def skull_strip_deepbet(threads: int) -> dict:
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core import brainmask

    t1w = nib.load("t1w_n4.nii.gz")
    mask = brainmask.brain_mask(t1w, "deepbet", num_threads=threads)
    mask.to_filename("mask_deepbet.nii.gz")
    data = t1w.get_fdata() * mask.get_fdata()
    nib.Nifti1Image(data.astype(np.float32), t1w.affine).to_filename("brain.nii.gz")
    return {}


def skull_strip_ants(threads: int) -> dict:
    import nibabel as nib

    from stroke_lesion_app.core import brainmask

    mask = brainmask.brain_mask(nib.load("t1w_n4.nii.gz"), "ants", num_threads=threads)
    mask.to_filename("mask_ants.nii.gz")
    return {}


def template_brain(threads: int) -> dict:
    from stroke_lesion_app.core import templates

    brain, mask = templates.template_brain(templates.get_template())
    brain.to_filename("tpl_brain.nii.gz")
    mask.to_filename("tpl_mask.nii.gz")
    return {"source": templates.get_template().source}


def register(mode: str, threads: int) -> dict:
    from stroke_lesion_app.core import registration

    registration.register_to_template("brain.nii.gz", "tpl_brain.nii.gz", mode, mode=mode,
                                      moving_mask="mask_deepbet.nii.gz",
                                      fixed_mask="tpl_mask.nii.gz",
                                      moving_full="t1w_n4.nii.gz", num_threads=threads)
    return {}


def register_affine(threads: int) -> dict:
    return register("affine", threads)


def register_syn(threads: int) -> dict:
    return register("syn", threads)


def back_project_mask(threads: int) -> dict:
    from stroke_lesion_app.core import registration

    registration.apply_transform("tpl_mask.nii.gz", "t1w_n4.nii.gz", "affine/std2anat_xfm.mat",
                                 "tplmask_native.nii.gz", "genericLabel")
    return {}


#: the steps in the order they run (each needs the files of the ones before it)
STEPS = {
    "conform + N4": conform_n4,
    "skull-strip deepbet": skull_strip_deepbet,
    "skull-strip ants": skull_strip_ants,
    "template brain": template_brain,
    "register affine": register_affine,
    "register syn": register_syn,
    "back-project mask (affine)": back_project_mask,
}


def run_step(cfg: dict) -> dict:
    """Step ``cfg["step"]`` in ``cfg["work"]`` with ``cfg["threads"]`` threads.

    Returns ``seconds`` (the step alone, after the imports), ``peak_mb`` (``VmHWM`` of this
    process, imports included) and what the step reports.
    """
    os.chdir(cfg["work"])
    # every step's modules are imported before the clock starts, the same set for each step
    import nibabel  # noqa: F401
    import numpy  # noqa: F401

    from stroke_lesion_app.core import (  # noqa: F401
        brainmask,
        images,
        intensity,
        registration,
        templates,
    )

    start = time.perf_counter()
    extra = STEPS[cfg["step"]](cfg["threads"])
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "peak_mb": status_kb("VmHWM") / 1024, **extra}


#: ``python -m benchmarks.runner preprocessing.<kind>``
WORKERS = {"step": run_step}
