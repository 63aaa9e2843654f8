"""The model-side command line: ``stroke-lesion-model <subcommand>``.

Subcommands so far: ``synthesize`` (synthetic BIDS data for tests, the demo and the demo model),
``convert`` (ATLAS v2.0 or synthetic data → nnU-Net v2 raw dataset), ``split`` (size-balanced
cross-validation folds) and ``evaluate`` (per-case metrics, summaries, Table-1-style comparison,
Dice-vs-volume figure). Each subcommand is self-contained: it parses its options, calls library
functions and turns their ``ValueError`` / ``FileExistsError`` into a one-line error with exit
code 2.
"""

from __future__ import annotations

import logging
import re
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


@cli.command()
@click.argument("kind", type=click.Choice(["atlas", "synthetic"]))
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("out_raw", type=click.Path(path_type=Path))
@click.option("--dataset-id", type=int, default=501, show_default=True,
              help="nnU-Net dataset number (1-999; 500+ for your own).")
@click.option("--name", default="StrokeLesion", show_default=True,
              help="Dataset name: the folder is OUT_RAW/Dataset<NNN>_<NAME>.")
@click.option("--resolution", type=float, default=None, metavar="MM",
              help="Voxel size of the MNI152NLin2009aSym output grid. Default: 2 for synthetic; "
              "for atlas, ATLAS's own 1 mm images are copied unchanged unless MM is given.")
@click.option("--force", is_flag=True,
              help="Replace OUT_RAW/Dataset<NNN>_<NAME> if this command wrote it.")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v: soft masks and summary, -vv: debug).")
def convert(kind, source, out_raw, dataset_id, name, resolution, force, verbose):
    """Convert SOURCE into an nnU-Net v2 raw dataset under OUT_RAW (nnUNet_raw).

    \b
    KIND is one of
      atlas      an ATLAS v2.0 tree: every *_space-MNI152NLin2009aSym_T1w.nii.gz (any depth)
                 with the *_label-L_desc-T1lesion_mask.nii.gz beside it goes to imagesTr and
                 labelsTr; images without a mask go to imagesTs. Masks are binarised (soft
                 masks with max < 1-1e-5 at 1e-5, others at 0.5) and written as uint8.
      synthetic  a dataset of `stroke-lesion-model synthesize`: each T1w is resampled into
                 MNI152NLin2009aSym with the generator's known affine, its template-space truth
                 mask onto the same grid (for the demo model; NOT real data).

    Writes Dataset<NNN>_<NAME>/{imagesTr,labelsTr,imagesTs,dataset.json}; case identifiers are
    sub-<label>[_ses-<label>]. The dataset appears only when complete.

    \b
    Examples:
      stroke-lesion-model convert atlas ATLAS_2/Training raw/ --dataset-id 501
      stroke-lesion-model convert synthetic demo/bids raw/ --dataset-id 502 --name Synthetic
    """
    _setup_logging(verbose)
    from stroke_lesion_app.training.convert import convert_atlas, convert_synthetic

    try:
        if kind == "atlas":
            summary = convert_atlas(source, out_raw, dataset_id=dataset_id, name=name,
                                    resolution_mm=resolution, overwrite=force)
        else:
            summary = convert_synthetic(source, out_raw, dataset_id=dataset_id, name=name,
                                        resolution_mm=2.0 if resolution is None else resolution,
                                        overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(_one_line(error)) from None
    grid = ("as is" if summary["resolution_mm"] is None
            else f"{summary['resolution_mm']:g} mm MNI152NLin2009aSym grid")
    soft = f", {len(summary['soft_masks'])} soft mask(s) binarised" if summary["soft_masks"] else ""
    click.echo(f"{PROG}: wrote {summary['dataset_dir']}: {len(summary['training'])} training and "
               f"{len(summary['test'])} test case(s), {grid}{soft}")


@cli.command()
@click.argument("labels_dir", type=click.Path(path_type=Path))
@click.argument("out_json", type=click.Path(path_type=Path))
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Number of cross-validation folds (at most the number of cases).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the fold permutations; the same seed gives the same split.")
@click.option("--force", is_flag=True, help="Replace OUT_JSON (models trained on it depend on it).")
@click.option("-v", "--verbose", count=True, help="More log output.")
def split(labels_dir, out_json, folds, seed, force, verbose):
    """Write size-balanced cross-validation folds of LABELS_DIR's cases to OUT_JSON.

    Cases (the .nii/.nii.gz masks of LABELS_DIR, e.g. a dataset's labelsTr) are sorted by lesion
    volume and dealt to the folds block by block, so every fold gets a similar range of lesion
    sizes. OUT_JSON is nnU-Net v2's splits_final.json format; nnU-Net reads it from
    $nnUNet_preprocessed/Dataset<NNN>_<NAME>/splits_final.json. Prints the lesion volume
    distribution (voxels) of each validation fold.

    \b
    Examples:
      stroke-lesion-model split raw/Dataset501_StrokeLesion/labelsTr \\
          preprocessed/Dataset501_StrokeLesion/splits_final.json --folds 5 --seed 0
    """
    _setup_logging(verbose)
    from stroke_lesion_app.training.splits import (
        fold_balance,
        lesion_volumes,
        size_balanced_folds,
        write_splits,
    )

    if out_json.exists() and not force:
        raise UsageError(f"{out_json} already exists; models trained on it depend on it - choose "
                         "another path or pass --force.")
    try:
        volumes = lesion_volumes(labels_dir)
        splits = size_balanced_folds(volumes, n_folds=folds, seed=seed)
        table, difference = fold_balance(splits, volumes)
        write_splits(splits, out_json, overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(_one_line(error)) from None
    click.echo(f"{PROG}: wrote {folds} folds of {len(volumes)} cases to {out_json}")
    click.echo("Lesion volume (voxels) of the validation cases per fold:")
    click.echo(table.to_string(float_format=lambda value: f"{value:.1f}"))
    click.echo(f"Spread of the fold medians: {difference:.3f} of the overall median")


_SCHEME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


@cli.command()
@click.argument("pred_dirs", nargs=-1, type=click.Path(path_type=Path), metavar="[PRED_DIR]...")
@click.option("--truth", "truth_dir", type=click.Path(path_type=Path), required=True,
              help="Folder of truth masks with the predictions' file names (e.g. labelsTr).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder (created if missing).")
@click.option("--scheme", "schemes", multiple=True, metavar="NAME[=PRED_DIR]",
              help="NAME=PRED_DIR adds PRED_DIR to scheme NAME (repeat a NAME to pool folds); "
              "a bare NAME names the scheme of the PRED_DIR arguments (default: model).")
@click.option("--connectivity", type=click.Choice(["6", "18", "26"]), default="6",
              show_default=True, help="Neighbourhood of lesion components (6: the paper's).")
@click.option("--small-lesion-threshold", type=click.FloatRange(min=0, min_open=True),
              default=1000, show_default=True, metavar="VOXELS",
              help="Subjects with 0 < total truth volume < VOXELS form the small-lesion subset.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def evaluate(pred_dirs, truth_dir, out_dir, schemes, connectivity, small_lesion_threshold, force,
             verbose):
    """Score predicted lesion masks against the truth and write tables and a figure to OUT_DIR.

    Predictions (.nii/.nii.gz, binarised with != 0) are matched to --truth files by name; other
    files (nnU-Net's summary.json) are ignored. Several PRED_DIRs (e.g. the five
    fold_*/validation folders of a cross-validation) are pooled into one scheme.

    \b
    Writes, for each scheme NAME:
      NAME_cases.tsv                  per-case metrics (Dice, lesion-wise F1, ..., volumes)
      NAME_summary.tsv, NAME_summary.md   mean ± std over all cases and the small-lesion subset
    and
      dice_vs_volume.png, .svg        per-case Dice against truth volume, one curve per scheme
      comparison.tsv, comparison.md   Table-1-style rows (only with two or more schemes)

    \b
    Examples:
      stroke-lesion-model evaluate res/fold_*/validation --truth labelsTr --out eval/
      stroke-lesion-model evaluate --truth labelsTr --out eval/ --scheme Default=d/fold_0 \\
          --scheme Default=d/fold_1 --scheme MSCSA=m/fold_0 --scheme MSCSA=m/fold_1
    """
    _setup_logging(verbose)
    from stroke_lesion_app.core.bids import atomic_path
    from stroke_lesion_app.training.evaluate import (
        compare_schemes,
        evaluate_folder,
        plot_dice_vs_volume,
        summarise,
        write_table,
    )

    folders = _parse_schemes(pred_dirs, schemes)
    paths = [out_dir / f"{name}{ending}" for name in folders
             for ending in ("_cases.tsv", "_summary.tsv", "_summary.md")]
    paths += [out_dir / "dice_vs_volume.png", out_dir / "dice_vs_volume.svg"]
    if len(folders) > 1:
        paths += [out_dir / "comparison.tsv", out_dir / "comparison.md"]
    existing = [path for path in paths if path.exists()]
    if existing and not force:
        raise UsageError(f"{existing[0]} already exists ({len(existing)} output file(s) in "
                         f"{out_dir}); choose another --out or pass --force.")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; pass a folder.")
    try:
        frames = {name: evaluate_folder(dirs, truth_dir, connectivity=int(connectivity))
                  for name, dirs in folders.items()}
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            with atomic_path(out_dir / f"{name}_cases.tsv") as tmp:
                frame.to_csv(tmp, sep="\t", index=True, na_rep="n/a")
            write_table(summarise(frame, small_lesion_threshold),
                        out_dir / f"{name}_summary.tsv", overwrite=force)
        plot_dice_vs_volume(frames, out_dir / "dice_vs_volume.png",
                            small_lesion_threshold=small_lesion_threshold, overwrite=force)
        if len(frames) > 1:
            write_table(compare_schemes(frames, small_lesion_threshold=small_lesion_threshold),
                        out_dir / "comparison.tsv", overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(_one_line(error)) from None
    for name, frame in frames.items():
        click.echo(f"{PROG}: {name}: {len(frame)} case(s), Dice {frame['dice'].mean():.3f}, "
                   f"lesion-wise F1 {frame['lesion_f1'].mean():.3f} (means)")
    click.echo(f"{PROG}: wrote {len(paths)} file(s) to {out_dir}")


def _parse_schemes(pred_dirs: tuple[Path, ...], schemes: tuple[str, ...]) -> dict[str, list[Path]]:
    """Scheme name → prediction folders, from the PRED_DIR arguments and --scheme values."""
    folders: dict[str, list[Path]] = {}
    bare = [value for value in schemes if "=" not in value]
    if len(bare) > 1:
        raise UsageError(f"--scheme given without '=PRED_DIR' {len(bare)} times ({bare[0]}, "
                         f"{bare[1]}); a bare NAME only names the PRED_DIR arguments, once.")
    if bare and not pred_dirs:
        raise UsageError(f"--scheme {bare[0]} names the PRED_DIR arguments, but none was given; "
                         "pass PRED_DIRs or use --scheme NAME=PRED_DIR.")
    if pred_dirs:
        folders[bare[0] if bare else "model"] = list(pred_dirs)
    for value in schemes:
        if "=" not in value:
            continue
        name, folder = value.split("=", 1)
        if not folder:
            raise UsageError(f"--scheme {value}: no folder after '='; write NAME=PRED_DIR.")
        folders.setdefault(name, []).append(Path(folder))
    if not folders:
        raise UsageError("no predictions given; pass PRED_DIR arguments or --scheme "
                         "NAME=PRED_DIR options.")
    for name in folders:
        if not _SCHEME_NAME.fullmatch(name):
            raise UsageError(f"scheme name {name!r} is invalid (it names output files); use "
                             "letters, digits, '_', '+' and '-'.")
    return folders


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``stroke-lesion-model``)."""
    cli.main(args=args, prog_name=PROG)


def _setup_logging(verbose: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
