"""Wall time and peak memory of each preprocessing step at 1 mm on this machine.

Run by hand (not by pytest), from the repository root::

    .venv/bin/python -m benchmarks.preprocessing [--head ch2.nii.gz] [--brain ch2bet.nii.gz]
        [--threads 2] [--skip STEP ...] [--out benchmarks/results/preprocessing_cpu.md]

The input head is stored the way a scanner might: rotated (12°, -6°, 4°), shifted, resampled to
1.0×1.0×1.2 mm, LPS axis order, int16. By default it is Colin27 (``ch2.nii.gz``, a real T1w head
with skull, from Debian's ``mricron-data``; its brain ``ch2bet.nii.gz`` gives a reference mask).
Every step runs in a fresh subprocess so its peak resident memory (VmHWM) is its own: the
steps are the functions of :mod:`.workers`, run by :mod:`benchmarks.runner`, each on the files
the previous ones left in one work folder. :mod:`.cli` writes ``preprocessing_cpu.md`` and
``preprocessing_cpu.json`` (the raw numbers) through :mod:`benchmarks.report`.
"""
