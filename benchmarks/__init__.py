"""Speed and memory benchmarks of ``stroke_lesion_app``, run by hand (never by pytest).

Entry points, from the repository root (``--help`` lists each one's options)::

    python -m benchmarks.preprocessing        # preprocessing steps at 1 mm
    python -m benchmarks.mscsa_overhead       # MSCSA U-Net against the plain U-Net
    python -m benchmarks.segmentation         # segmentation: demo bundle, paper plan, ensemble
    python -m benchmarks.resize_alternatives  # the MSCSA injection's resize, cheaper forms
    python -m benchmarks.participant_nodes    # a whole participant run, node by node
    python -m benchmarks.brain_box            # sliding window over the brain box: accuracy
    python -m benchmarks.v1_import_atlas      # an imported nnU-Net v1 model against v1 itself
    python -m benchmarks.mapping_ensemble     # a 20-network imported ensemble per subject

Shared modules:

* :mod:`benchmarks.measure`: memory readings, the watched subprocess, the machine description;
* :mod:`benchmarks.runner`: runs a benchmark's worker function in a fresh interpreter
  (``python -m benchmarks.runner NAME CONFIG``) so its peak memory is its own;
* :mod:`benchmarks.fixtures`: the synthetic inputs (scanner-pose head, synthetic subjects on the
  template grid, the paper's network plan, random-weight and two-member bundles);
* :mod:`benchmarks.report`: the one writer of ``benchmarks/results/`` (Markdown + JSON).

This package imports nothing heavy at import time: worker processes import it before they
measure their own memory.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: ``python -m benchmarks.<name>`` entry points
ENTRY_POINTS = ("preprocessing", "mscsa_overhead", "segmentation", "resize_alternatives",
                "participant_nodes", "brain_box", "v1_import_atlas", "lesion_normalisation",
                "mapping_ensemble")
