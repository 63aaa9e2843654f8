"""``stroke-lesion-model`` data subcommands: ``synthesize``, ``convert`` and ``split``.

``synthesize`` writes synthetic BIDS data (tests, the demo and the demo model), ``convert`` turns
ATLAS v2.0 or synthetic data into an nnU-Net v2 raw dataset and ``split`` writes size-balanced
cross-validation folds. The work is done by :mod:`stroke_lesion_app.synthetic`,
:mod:`stroke_lesion_app.training.convert` and
:func:`stroke_lesion_app.training.commands.split_labels`.
"""

from __future__ import annotations

from pathlib import Path

import click

from stroke_lesion_app.cli.common import MODEL_PROG as PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.common import one_line, setup_logging

__all__ = ["convert", "split", "synthesize"]


@click.command()
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
    setup_logging(verbose)
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


@click.command()
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
@click.option("--no-bias-correct", "no_bias_correct", is_flag=True,
              help="synthetic only: skip the N4 bias correction the app applies (faster, for "
              "tests).")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v: soft masks and summary, -vv: debug).")
def convert(kind, source, out_raw, dataset_id, name, resolution, force, no_bias_correct,
            verbose):
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
    setup_logging(verbose)
    from stroke_lesion_app.training.convert import convert_atlas, convert_synthetic

    if no_bias_correct and kind != "synthetic":
        raise UsageError("--no-bias-correct applies to `convert synthetic` only (ATLAS images "
                         "are copied as they are).")
    try:
        if kind == "atlas":
            summary = convert_atlas(source, out_raw, dataset_id=dataset_id, name=name,
                                    resolution_mm=resolution, overwrite=force)
        else:
            summary = convert_synthetic(source, out_raw, dataset_id=dataset_id, name=name,
                                        resolution_mm=2.0 if resolution is None else resolution,
                                        bias_correct=not no_bias_correct, overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    grid = ("as is" if summary["resolution_mm"] is None
            else f"{summary['resolution_mm']:g} mm MNI152NLin2009aSym grid")
    soft = f", {len(summary['soft_masks'])} soft mask(s) binarised" if summary["soft_masks"] else ""
    click.echo(f"{PROG}: wrote {summary['dataset_dir']}: {len(summary['training'])} training and "
               f"{len(summary['test'])} test case(s), {grid}{soft}")


@click.command()
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
    setup_logging(verbose)
    from stroke_lesion_app.training.commands import split_labels

    try:
        result = split_labels(labels_dir, out_json, n_folds=folds, seed=seed, overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    click.echo(f"{PROG}: wrote {folds} folds of {len(result['volumes'])} cases to {out_json}")
    click.echo("Lesion volume (voxels) of the validation cases per fold:")
    click.echo(result["table"].to_string(float_format=lambda value: f"{value:.1f}"))
    click.echo(f"Spread of the fold medians: {result['difference']:.3f} of the overall median")
