"""What both command lines share: usage errors, logging, ``--device`` and inference options.

``stroke-lesion-app`` (:mod:`stroke_lesion_app.cli.run`) and ``stroke-lesion-model``
(:mod:`stroke_lesion_app.cli.model`) report bad input the same way: one line
``PROG: error: MESSAGE`` on stderr and exit code 2 (:class:`UsageError`, one subclass per
program). Library functions raise ``ValueError`` / ``FileExistsError``; the click layer turns
them into a :class:`UsageError` with :func:`one_line`.
"""

from __future__ import annotations

import logging
import sys

import click

from stroke_lesion_app.cli import options

__all__ = [
    "APP_PROG",
    "EXIT_USAGE",
    "MODEL_PROG",
    "ModelUsageError",
    "UsageError",
    "device_option",
    "ensemble_source_options",
    "inference_options",
    "one_line",
    "resolve_device_option",
    "setup_logging",
    "step_size_option",
    "tta_option",
]

#: Program names, as the console scripts are called (and as errors begin).
APP_PROG = "stroke-lesion-app"
MODEL_PROG = "stroke-lesion-model"
#: Exit code of bad input, bad usage or a refused overwrite (as click's own usage errors).
EXIT_USAGE = 2

#: Shared inference options (defined once, in :mod:`stroke_lesion_app.cli.options`).
device_option = options.device
tta_option = options.tta
step_size_option = options.step_size


class UsageError(click.ClickException):
    """Bad input or refused overwrite: one line ``PROG: error: MESSAGE`` on stderr, exit code 2.

    ``prog`` names the program: ``stroke-lesion-app`` here, ``stroke-lesion-model`` in
    :class:`ModelUsageError`.
    """

    exit_code = EXIT_USAGE
    prog = APP_PROG

    def show(self, file=None):
        click.echo(f"{self.prog}: error: {self.format_message()}", err=True)


class ModelUsageError(UsageError):
    """:class:`UsageError` of ``stroke-lesion-model``."""

    prog = MODEL_PROG


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (runs of white space, newlines included, → one space).

    Examples
    --------
    >>> one_line(ValueError("two\\n  lines"))
    'two lines'
    """
    return " ".join(str(error).split())


def setup_logging(verbose: int, default_level: int = logging.WARNING, *,
                  quiet: tuple[str, ...] = ()) -> None:
    """Log to stderr at ``default_level``; ``-v`` lowers it to INFO, ``-vv`` to DEBUG.

    Parameters
    ----------
    verbose : int
        Count of ``-v`` flags.
    default_level : int
        Level without ``-v``: WARNING for ``stroke-lesion-model``, INFO for
        ``stroke-lesion-app``. A ``-v`` never raises the level.
    quiet : tuple of str
        Loggers kept at WARNING whatever ``verbose`` is (chatty third-party libraries).
    """
    level = min(default_level, {0: default_level, 1: logging.INFO}.get(verbose, logging.DEBUG))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def resolve_device_option(device: str, error: type[UsageError] = UsageError) -> str:
    """``--device`` → ``cpu`` or ``cuda`` on this machine; an absent GPU is a usage error.

    :func:`stroke_lesion_app.core.device.resolve_device`, with its
    :class:`~stroke_lesion_app.core.device.DeviceError` raised as ``error`` (the program's
    :class:`UsageError` subclass).
    """
    from stroke_lesion_app.core.device import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as failure:
        raise error(one_line(failure)) from None


def inference_options(command):
    """Add ``--device``, ``--tta/--no-tta`` and ``--step-size`` (in this order) to ``command``."""
    for option in (step_size_option, tta_option, device_option):
        command = option(command)
    return command


def ensemble_source_options(purpose: str):
    """``--model`` / ``--member`` / ``--threshold``: the ensemble a command predicts with.

    ``purpose`` names what the ensemble does in the help text (e.g. "segments the images").
    """
    def decorate(command):
        options_in_order = (
            click.option("--model", "model", default=None, metavar="NAME|PATH",
                         help=f"The ensemble that {purpose}: a model bundle (folder with "
                         "bundle.json, or a name found in $STROKE_LESION_APP_MODELS or the "
                         "package)."),
            click.option("--member", "members", multiple=True,
                         metavar="NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]",
                         help="Instead of --model: trained-model folders to average "
                         "(repeatable)."),
            click.option("--threshold", type=click.FloatRange(0, 1, min_open=True,
                                                              max_open=True),
                         default=None, help="Mask threshold (default: the bundle's, 0.5 for "
                         "--member)."),
        )
        for option in reversed(options_in_order):
            command = option(command)
        return command
    return decorate
