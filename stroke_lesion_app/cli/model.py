"""The model-side command line: the ``stroke-lesion-model`` click group.

Subcommands: ``synthesize`` (synthetic BIDS data for tests, the demo and the demo model),
``convert`` (ATLAS v2.0 or synthetic data → nnU-Net v2 raw dataset), ``split`` (size-balanced
cross-validation folds), ``train`` (a scheme through nnU-Net v2), ``ensemble`` (softmax
averaging of trained models on a folder of images), ``self-train`` (pseudo-label unlabelled
images with an ensemble and retrain on a new dataset), ``bundle`` (package trained models for
the app), ``import`` (published nnU-Net v1/v2 models → a bundle) and ``evaluate`` (per-case
metrics, summaries, Table-1-style comparison, Dice-vs-volume figure).

This module only assembles the group; the subcommands live in one module per concern:

=========================  ======================================
``cli/model_data.py``      ``synthesize``, ``convert``, ``split``
``cli/model_train.py``     ``train``, ``self-train``
``cli/model_predict.py``   ``ensemble``, ``bundle``
``cli/model_evaluate.py``  ``evaluate``
``cli/model_import.py``    ``import``
=========================  ======================================

(A new concern, e.g. importing published models, gets its own ``cli/model_<concern>.py`` and
one line in :data:`SUBCOMMANDS`.) Each subcommand parses its options, calls plain functions
(:mod:`stroke_lesion_app.training.commands` and the library) and turns their ``ValueError`` /
``FileExistsError`` into one line ``stroke-lesion-model: error: ...`` with exit code 2
(:class:`~stroke_lesion_app.cli.common.ModelUsageError`).
"""

from __future__ import annotations

import click

from stroke_lesion_app import __version__
from stroke_lesion_app.cli.common import EXIT_USAGE, MODEL_PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.model_data import convert, split, synthesize
from stroke_lesion_app.cli.model_evaluate import evaluate
from stroke_lesion_app.cli.model_import import import_models
from stroke_lesion_app.cli.model_predict import bundle, ensemble
from stroke_lesion_app.cli.model_train import self_train, train

__all__ = ["EXIT_USAGE", "PROG", "SUBCOMMANDS", "UsageError", "cli", "main"]

PROG = MODEL_PROG

#: Every subcommand of the group, by concern.
SUBCOMMANDS = (
    synthesize, convert, split,  # data
    train, self_train,  # training
    ensemble, bundle,  # inference and packaging
    import_models,  # published models
    evaluate,  # evaluation
)


@click.group(name=PROG, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name=PROG)
def cli():
    """Make data for, train, evaluate and package the stroke lesion models.

    Nothing is downloaded at run time.
    """


for _command in SUBCOMMANDS:
    cli.add_command(_command)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``stroke-lesion-model``)."""
    cli.main(args=args, prog_name=PROG)
