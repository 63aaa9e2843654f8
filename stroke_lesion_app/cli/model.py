"""The model-side command line: ``stroke-lesion-model <subcommand>``.

Subcommands so far: ``synthesize`` (synthetic BIDS data for tests, the demo and the demo model).
Each subcommand is self-contained: it parses its options, calls one library function and turns
its ``ValueError`` / ``FileExistsError`` into a one-line error with exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from stroke_lesion_app import __version__

PROG = "stroke-lesion-model"
EXIT_USAGE = 2


class UsageError(click.ClickException):
    """Bad input or refused overwrite: one line on stderr, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None):
        click.echo(f"{PROG}: error: {self.format_message()}", err=True)


@click.group(name=PROG, context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name=PROG)
def cli():
    """Make data for, train, evaluate and package the stroke lesion models.

    Nothing is downloaded at run time.
    """


@cli.command()
@click.argument("out_bids", type=click.Path(path_type=Path))
@click.option("--subjects", type=click.IntRange(min=1), default=8, show_default=True,
              help="Number of subjects.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed writes the same bytes.")
@click.option("--resolution", type=click.FloatRange(min=1.0, max=8.0), default=None,
              metavar="MM", help="Multiply every voxel size (1, 0.9x0.9x1.2 or 1.2 mm) by MM, "
              "e.g. 3 for tiny test data. Default: native sizes.")
@click.option("--sessions", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sessions per subject (same anatomy and lesions, new scan); >1 adds ses-<n>.")
@click.option("--small-lesion-fraction", type=click.FloatRange(0.0, 1.0), default=0.5,
              show_default=True, help="Probability that a lesion is small (< 1000 mm3).")
@click.option("--max-lesions", type=click.IntRange(min=0), default=4, show_default=True,
              help="Lesions per subject are drawn in 0..N.")
@click.option("--overwrite", is_flag=True,
              help="Replace OUT_BIDS if it holds a dataset made by this command.")
@click.option("-v", "--verbose", count=True, help="More log output (-v: per subject, -vv: debug).")
def synthesize(out_bids, subjects, seed, resolution, sessions, small_lesion_fraction, max_lesions,
               overwrite, verbose):
    """Write a synthetic BIDS dataset of stroke T1w images to OUT_BIDS.

    Heads come from the MNI152NLin2009aSym template shipped with nilearn, with random pose,
    deformation, skull/scalp/neck, bias field, noise, voxel sizes and orientations; lesions
    imitate chronic stroke. Ground truth goes to OUT_BIDS/derivatives/synthetic-truth/.
    NOT real data: for tests, demos and the demo model only.

    \b
    Examples:
      stroke-lesion-model synthesize demo/bids --subjects 8 --seed 0
      stroke-lesion-model synthesize /tmp/tiny --subjects 2 --resolution 3 --overwrite
    """
    _setup_logging(verbose)
    from stroke_lesion_app.synthetic import synthesize_dataset

    try:
        summary = synthesize_dataset(
            out_bids, n_subjects=subjects, seed=seed, sessions=sessions, resolution=resolution,
            small_lesion_fraction=small_lesion_fraction, max_lesions=max_lesions,
            overwrite=overwrite,
        )
    except (FileExistsError, ValueError) as error:
        raise UsageError(str(error)) from None
    lesions = sum(scan["n_lesions"] for scan in summary["scans"])
    click.echo(f"{PROG}: wrote {len(summary['scans'])} T1w image(s) with {lesions} lesion(s) to "
               f"{summary['out_dir']} in {summary['seconds']:.1f} s")


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``stroke-lesion-model``)."""
    cli.main(args=args, prog_name=PROG)


def _setup_logging(verbose: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
