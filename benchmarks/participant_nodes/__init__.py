"""A whole participant run, node by node: wall time and peak memory of each Nipype node.

Run by hand (not by pytest), from the repository root::

    .venv/bin/python -m benchmarks.participant_nodes [--baseline REV] [--subjects 1]
        [--nprocs 2] [--out benchmarks/results/participant_nodes_cpu.md]

The input is a 1 mm head with skull and a wide field of view, made from Colin27 (Debian's
``mricron-data``) the way a scanner stores one: 256×256×220 voxels at 1 mm (a neck-to-vertex
field of view with empty air around the head), rotated and shifted, LIA axis order, int16, a
smooth multiplicative bias field and Rayleigh-distributed background noise
(:func:`wide_field_head`).

Each *code version* runs the same ``stroke-lesion-app BIDS OUT participant`` command with the
default settings and the demo bundle (and optionally ``--fast``): the working tree as it is
(``current``), and ``--baseline REV`` checked out into a ``git worktree`` and put first on
``PYTHONPATH`` (``baseline``); the versions alternate, so a disturbed machine slows both. Per
run the benchmark records:

* the command's wall time and the peak resident memory of its whole process tree;
* every node's own run time from Nipype's result files (``runtime.duration``: inside the
  MultiProc worker, scheduling excluded);
* every node again, *replayed alone* in a fresh interpreter (its pickled node and inputs from
  the work folder, a new output folder): its time and peak resident memory (``VmHWM``) when
  nothing else runs. A long-lived MultiProc worker cannot give a node's own memory; the replay
  can.

Accuracy between the versions: template-space brain-mask Dice, the distance between the two
versions' ``anat2std`` transforms over the native brain, and the largest difference of the
template-space lesion probabilities.
"""
