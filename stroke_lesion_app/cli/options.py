"""Click options and validators shared by the command-line entry points.

Validators turn bad values into :class:`click.BadParameter` (exit code 2, one line naming the
option and the fix); they never touch the file system beyond reading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from stroke_lesion_app.config import NIPYPE_PLUGINS
from stroke_lesion_app.core.atlases import Atlas

_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def _labels(prefix: str):
    def callback(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
        labels: list[str] = []
        for item in value:
            for label in item.replace(",", " ").split():
                label = label[len(prefix) + 1:] if label.startswith(f"{prefix}-") else label
                if not _LABEL.match(label):
                    raise click.BadParameter(
                        f"{label!r} is not a BIDS label (letters and digits only), e.g. "
                        f"'{prefix}-01' or '01'.")
                labels.append(label)
        return sorted(set(labels))
    return callback


def _memory_gb(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Parse ``16``, ``16G``, ``16GB``, ``500MB``, ``0.5T`` into gigabytes."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)B?\s*", value.upper())
    if not match or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a memory size; write e.g. 16GB or 500MB.")
    scale = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "": 1, "T": 1024}[match.group(2)]
    return float(match.group(1)) * scale


def _plugin_settings(ctx: click.Context, param: click.Parameter,
                     value: Path | None) -> dict[str, Any] | None:
    """Read a Nipype plugin file (JSON or YAML): ``{"plugin": ..., "plugin_args": {...}}``."""
    if value is None:
        return None
    text = Path(value).read_text()
    try:
        if Path(value).suffix.lower() in (".yml", ".yaml"):
            import yaml

            content = yaml.safe_load(text)
        else:
            content = json.loads(text)
    except Exception as error:  # json and yaml raise different types
        raise click.BadParameter(f"{value}: cannot parse ({str(error).splitlines()[0]}); write "
                                 'e.g. {"plugin": "SLURM", "plugin_args": {"sbatch_args": '
                                 '"-p normal"}}.') from None
    if not isinstance(content, dict) or not isinstance(content.get("plugin_args", {}), dict):
        raise click.BadParameter(f"{value}: expected an object with 'plugin' and 'plugin_args'.")
    plugin = content.get("plugin")
    if plugin is not None and plugin not in NIPYPE_PLUGINS:
        raise click.BadParameter(f"{value}: unknown Nipype plugin {plugin!r}; choose one of "
                                 f"{', '.join(NIPYPE_PLUGINS)}.")
    return content


existing_dir = click.Path(exists=False, file_okay=False, path_type=Path)

participant_label = click.option(
    "--participant-label", "--participant_label", "participant_labels", multiple=True,
    callback=_labels("sub"), metavar="LABEL",
    help="Subjects to process, with or without 'sub-' (repeat or separate by spaces/commas). "
         "Default: all subjects.")
session_label = click.option(
    "--session-label", "session_labels", multiple=True, callback=_labels("ses"),
    metavar="LABEL", help="Sessions to process, with or without 'ses-'. Default: all.")
bids_filter_file = click.option(
    "--bids-filter-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON file with a pybids query for the T1w images, e.g. {"t1w": {"acquisition": '
         '"mprage"}}.')
skip_bids_validation = click.option(
    "--skip-bids-validation", is_flag=True,
    help="Do not check dataset_description.json nor ignore files with invalid BIDS names.")
work_dir = click.option(
    "-w", "--work-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Nipype working directory (reused by later runs as a cache). Default: ./work")
nprocs = click.option("--nprocs", "--n-cpus", "nprocs", type=click.IntRange(min=1),
                      help="Processes run at once (MultiProc). Default: all CPUs.")
omp_nthreads = click.option("--omp-nthreads", type=click.IntRange(min=1),
                            help="Threads per process. Default: nprocs, at most 8.")
mem_gb = click.option("--mem-gb", "--mem", "mem_gb", callback=_memory_gb, metavar="SIZE",
                      help="Memory the run may use, e.g. 16GB (MultiProc scheduling).")
plugin = click.option("--plugin", type=click.Choice(NIPYPE_PLUGINS),
                      help="Nipype execution plugin. Default: MultiProc.")
plugin_settings = click.option(
    "--plugin-settings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=_plugin_settings,
    help="JSON/YAML file with 'plugin' and 'plugin_args' for Nipype (e.g. SLURM sbatch args).")
model = click.option("--model", default="demo", show_default=True, metavar="NAME|PATH",
                     help="Model bundle: a name from $STROKE_LESION_APP_MODELS or the "
                          "package, or a bundle folder.")
device = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                      show_default=True,
                      help="Where the network runs; auto takes CUDA when available.")
lesion_source = click.option(
    "--lesion-source", type=click.Choice(["model", "manual"]), default="model",
    show_default=True,
    help="model: segment lesions with --model; manual: skip segmentation and measure the "
         "dataset's own lesion masks (sub-*_label-lesion_roi.nii.gz beside the T1w).")
tta = click.option("--tta/--no-tta", default=True, show_default=True,
                   help="Mirroring test-time augmentation (8 passes per network in 3-D).")
step_size = click.option("--step-size", type=click.FloatRange(0.1, 1.0), default=0.5,
                         show_default=True,
                         help="Sliding-window step as a fraction of the patch (larger: faster, "
                              "slightly less accurate at window borders).")
brain_box = click.option(
    "--brain-box", is_flag=True,
    help="Run the sliding window over the brain's bounding box only (8 instead of 18 windows "
         "per pass for 128³ or 64³ models): faster, but predictions near the box move with the "
         "window placement (measured: Dice change -0.026 to +0.002 with the demo model; "
         "benchmarks/results/brain_box_cpu.md). Part of --fast.")
fast = click.option("--fast", is_flag=True,
                    help="Fast, less accurate segmentation: no TTA, step 1.0, the brain box and "
                         "only the first fold of each ensemble member (about 10-30x fewer "
                         "network passes).")
skull_strip = click.option(
    "--skull-strip", type=click.Choice(["auto", "deepbet", "ants", "none"]), default="auto",
    show_default=True,
    help="Skull-stripping: deepbet (offline network), ants (registration-based fallback), "
         "none (input already skull-stripped); auto takes deepbet when installed.")
registration = click.option(
    "--registration", type=click.Choice(["affine", "syn"]), default="affine",
    show_default=True,
    help="Registration to MNI152NLin2009aSym: affine (as ATLAS v2.0) or affine + SyN; a raw "
         "lesion mask (_label-lesion_roi) is excluded from the metric.")
group_normalisation = click.option(
    "--group-normalisation", type=click.Choice(["auto", "enantiomorphic", "cost-function", "syn",
                                                "affine"]),
    default="auto", show_default=True,
    help="Second, lesion-aware normalisation of the group-space lesion maps (segmentation keeps "
         "the affine registration): auto fills a unilateral lesion with the mirrored healthy "
         "hemisphere (enantiomorphic) and masks a bilateral or very large one out of the metric "
         "(cost-function), then SyN; affine skips it (faster; group maps from the first pass).")
lesion_masks = click.option(
    "--lesion-masks", "lesion_masks_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
    help="Folder of edited lesion masks (sub-X[_ses-Y]_label-L_mask.nii.gz, flat or in "
         "sub-X/[ses-Y/]anat/, on the grid of the mask the app wrote): images with one are "
         "re-measured from it, reusing the saved transforms (no segmentation, no registration); "
         "needs an earlier participant run into OUTPUT_DIR.")


def _atlases(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Atlas]:
    """Parse ``NAME=IMAGE[:LABELS]`` values (a name, an existing image and label table)."""
    try:
        return [Atlas.parse(item) for item in value]
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


atlas = click.option(
    "--atlas", "atlases", multiple=True, callback=_atlases, metavar="NAME=IMAGE[:LABELS]",
    help="Label atlas in MNI152NLin2009aSym space for regional lesion load (repeatable); "
         "LABELS is a TSV with 'index' and 'name' columns or an FSL/MRIcron .txt table.")
config_file = click.option(
    "--config-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Settings of an earlier run (its OUTPUT_DIR/sub-*/log/<run>/stroke_lesion_app.toml) "
         "or a TOML file in that format; options given on the command line win.")
flip_to_left = click.option(
    "--flip-to-left", is_flag=True,
    help="Group level: also write each space's lesion stack with right-sided lesions mirrored "
         "about x = 0 mm, so that every lesion lies in the left hemisphere (column 'flipped' "
         "of its TSV).")
min_overlap = click.option(
    "--min-overlap", type=click.IntRange(min=1), default=5, show_default=True, metavar="N",
    help="Group level: minimum-overlap mask of the voxels lesioned in at least N images (never "
         "more than the number of images), as lesion-symptom mapping usually tests.")
stop_on_first_crash = click.option("--stop-on-first-crash", is_flag=True,
                                   help="Stop the whole run at the first failing node.")
verbose = click.option("-v", "--verbose", count=True,
                       help="More log output (-v: Nipype progress, -vv: debug).")
