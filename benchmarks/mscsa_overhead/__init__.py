"""Wall time and peak memory of the MSCSA U-Net against nnU-Net's plain U-Net.

Run by hand (not by pytest), from the repository root::

    .venv/bin/python -m benchmarks.mscsa_overhead               # paper plan, 128³, CPU (+ GPU)
    .venv/bin/python -m benchmarks.mscsa_overhead --quick       # 64³ smoke run (about 1 min)
    .venv/bin/python -m benchmarks.mscsa_overhead --paired --batches 1 --repeats 4

Network: the paper's 128³ ``3d_fullres`` plan (6 stages 32-64-128-256-320-320, kernel 3,
strides [1,2,2,2,2,2], 2 convs per stage in encoder and decoder, InstanceNorm, LeakyReLU,
deep supervision, 1 input channel, 2 classes) as ``PlainConvUNet`` ("plain") and as
:class:`~stroke_lesion_app.nets.PlainConvUNetMSCSA` with its published 16 heads ("mscsa").

Configurations: {plain, mscsa} × batch {1, 2} × {forward, forward+backward}:

* *forward*: inference as nnU-Net's predictor runs it (``eval()``, deep supervision off,
  ``torch.inference_mode``);
* *forward+backward*: training mode with deep supervision, ``sum(mean(o²))`` over all outputs
  as a stand-in loss, ``backward()``, gradients dropped (no optimiser step).

Each configuration runs in a fresh subprocess (so its peak resident set, ``VmHWM`` from
``/proc/self/status``, is its own), with 1 warm-up pass and ``--repeats`` timed passes. On CPU
the process uses ``--threads`` threads; on CUDA (when ``torch.cuda.is_available()``) passes run
under bf16 autocast and peak memory is ``torch.cuda.max_memory_allocated``. The parent kills a
worker whose resident set passes ``--mem-cap-gb`` or when the machine's available memory falls
under 2 GB (the machine may be shared), and reports it as killed.

When the CPU forward ratio MSCSA/plain is above ``--target`` (1.05 by default: the paper's MAC
overhead is +2.3 %), a last subprocess profiles one MSCSA forward pass with ``torch.profiler``
and attributes the time to the MSCSA sub-modules (stage resizing, CSA layers, FFNs, injections).

``--paired`` measures only the forward ratio, with both networks in one process and their passes
alternated, so that other jobs on a shared machine slow both alike (no memory figures).

Results go to ``benchmarks/results/mscsa_overhead_<device>[_paired][_quick].{md,json}``.

Modules: :mod:`.cli` (options, the runs), :mod:`.workers` (the measured functions, run by
:mod:`benchmarks.runner`), :mod:`.tables` (the Markdown pages); the networks from
:func:`benchmarks.fixtures.paper_network`.
"""
