"""Wall time and peak memory of lesion segmentation on CPU: demo bundle, paper-size model, ensemble.

Run by hand (not by pytest), on an otherwise idle machine, from the repository root::

    .venv/bin/python -m benchmarks.segmentation             # everything, ~16 min on 2 cores
    .venv/bin/python -m benchmarks.segmentation --quick     # smoke run, ~5 min, *_quick.md
    .venv/bin/python -m benchmarks.segmentation --parts b c --work-dir /tmp/segbench

Four parts, each measurement in a fresh subprocess (wall time from the parent; peak resident
set ``VmHWM`` of the worker, and for commands that start processes of their own the largest
resident set of any of them from ``getrusage(RUSAGE_CHILDREN)`` plus the sampled sum over the
process tree):

(a) **demo bundle** (``stroke_lesion_app/data/models/demo``, or ``--bundle``):
    ``core.segmentation.segment_template_t1w`` on one synthetic subject's template-space T1w
    (the generator's head at 1 mm, N4-corrected and resampled onto the 1 mm MNI152NLin2009aSym
    grid with the generator's known affine, i.e. ``stroke-lesion-model convert synthetic
    --resolution 1``), with the default settings (mirroring TTA, step 0.5) and ``--fast``
    (``InferenceSettings.from_options(fast=True)``): network loading (``validate_bundle``,
    ``get_predictor``) and segmentation time, the network passes (forward calls counted with
    hooks on each network), the sliding-window grid, and the Dice of the mask against the
    synthetic truth as a sanity value. Then a whole participant run,
    ``stroke-lesion-app BIDS OUT participant -w WORK --nprocs 2 [--fast]`` on that subject
    (fresh output and work folders; N4, skull-stripping, registration, segmentation,
    back-projection, lesion load, reports; part ``p``, measured last).

(b) **paper-size model, random weights**: a bundle at 1 mm whose one member is
    ``StrokeTrainerDefaultMSCSA`` on the paper's ``3d_fullres`` plan (patch 128³, 6 stages
    32-64-128-256-320-320, strides 1,2,2,2,2,2, 2 convs per stage, InstanceNorm, LeakyReLU;
    plans.json written here in nnU-Net v2's format), segmenting the same 1 mm image with
    ``--fast`` only (no TTA, step 1.0). The default mode (TTA × step 0.5) is *not* run: it is
    estimated as (measured seconds per window pass) × (windows at step 0.5, from nnU-Net's
    ``compute_steps_for_sliding_window`` on the cropped image) × 8 mirrorings.

(c) **in-process ensemble against nnU-Net's CLI**: a 2-member bundle (the demo member and a copy
    whose weights carry 5 % Gaussian noise) predicting ``--n-images`` template-space images on
    the bundle's grid: :class:`EnsemblePredictor` in one process, against
    ``nnUNetv2_predict_from_modelfolder ... --save_probabilities -device cpu -npp 1 -nps 1`` once
    per member (``nnUNet_extTrainer`` from ``ensure_trainer_discovery``) followed by averaging the
    saved probabilities. Both without TTA (``--compare-tta`` to add it), step 0.5. Reports the
    time ratio and the largest absolute difference of the two averaged probabilities.

(w) **windows per network call**: ``EnsemblePredictor.predict_probability`` with 1, 2, 4 ...
    sliding windows per network call (``--window-batch-sizes``) for the demo bundle and the
    paper-plan model (``--window-models``), each in a fresh process.

``--device cuda`` runs the networks on the GPU (parts a, b, c; the participant runs need the
whole app installed and are usually left out there): (b) then also *measures* the default mode
instead of estimating it, and the tables add the peak GPU memory (``max_memory_allocated``).
Network time is taken between ``torch.cuda.synchronize()`` calls on a GPU.

    python -m benchmarks.segmentation --device cuda --parts a b --no-bias-correct

Prepared data (synthetic subjects, converted images, the random paper bundle) are kept in
``--work-dir`` and reused. Results go to
``benchmarks/results/segmentation_{cpu,cuda}[_quick].{md,json}``.

Modules: :mod:`.cli` (options, the run), :mod:`.parts` (each part, parent side),
:mod:`.workers` (the measured functions, run by :mod:`benchmarks.runner`), :mod:`.tables`
(the Markdown page); inputs from :mod:`benchmarks.fixtures`.
"""
