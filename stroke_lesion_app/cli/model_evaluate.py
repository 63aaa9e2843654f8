"""``stroke-lesion-model evaluate``: score predicted masks against the truth.

Per-case metrics, summaries, a Table-1-style comparison and the Dice-vs-volume figure; the
work is done by :func:`stroke_lesion_app.training.commands.evaluate_schemes` over
:mod:`stroke_lesion_app.training.evaluate`.
"""

from __future__ import annotations

from pathlib import Path

import click

from stroke_lesion_app.cli.common import MODEL_PROG as PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.common import one_line, setup_logging

__all__ = ["evaluate"]


@click.command()
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
              help="Size bound (voxels) of the small-lesion subset; see --small-lesion-rule.")
@click.option("--small-lesion-rule", type=click.Choice(["components", "total"]),
              default="components", show_default=True,
              help="Which subjects form the small-lesion subset: components = every truth "
              "lesion component (at --connectivity) is under the threshold, the paper's \"only "
              "have lesions with volumes under 1000 voxels\"; total = the total truth lesion "
              "volume is. Subjects without a truth lesion are never in it.")
@click.option("--force", is_flag=True, help="Replace existing output files.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def evaluate(pred_dirs, truth_dir, out_dir, schemes, connectivity, small_lesion_threshold,
             small_lesion_rule, force, verbose):
    """Score predicted lesion masks against the truth and write tables and a figure to OUT_DIR.

    Predictions (.nii/.nii.gz, binarised with != 0) are matched to --truth files by name; other
    files (nnU-Net's summary.json) are ignored. Several PRED_DIRs (e.g. the five
    fold_*/validation folders of a cross-validation) are pooled into one scheme.

    \b
    Writes, for each scheme NAME:
      NAME_cases.tsv                  per-case metrics (Dice, lesion-wise F1, ..., volumes,
                                      largest truth lesion, small_subset membership)
      NAME_summary.tsv, NAME_summary.md   mean ± std over all cases and the small-lesion
                                      subset (its rule in small_rule / below the table)
    and
      dice_vs_volume.png, .svg        per-case Dice against truth volume, one curve per scheme
      comparison.tsv, comparison.md   Table-1-style rows (only with two or more schemes)

    \b
    Examples:
      stroke-lesion-model evaluate res/fold_*/validation --truth labelsTr --out eval/
      stroke-lesion-model evaluate --truth labelsTr --out eval/ --scheme Default=d/fold_0 \\
          --scheme Default=d/fold_1 --scheme MSCSA=m/fold_0 --scheme MSCSA=m/fold_1
    """
    setup_logging(verbose)
    from stroke_lesion_app.training.commands import (
        evaluate_schemes,
        evaluation_outputs,
        parse_schemes,
    )

    try:
        folders = parse_schemes(pred_dirs, schemes)
        paths = evaluation_outputs(out_dir, list(folders), overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(str(error)) from None
    try:
        frames = evaluate_schemes(folders, truth_dir, out_dir, connectivity=int(connectivity),
                                  small_lesion_threshold=small_lesion_threshold,
                                  small_lesion_rule=small_lesion_rule, overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    from stroke_lesion_app.training.evaluate import small_lesion_rule as describe_rule

    click.echo(f"{PROG}: small-lesion subset rule "
               f"{describe_rule(small_lesion_rule, small_lesion_threshold, int(connectivity))}")
    for name, frame in frames.items():
        click.echo(f"{PROG}: {name}: {len(frame)} case(s), Dice {frame['dice'].mean():.3f}, "
                   f"lesion-wise F1 {frame['lesion_f1'].mean():.3f} (means); "
                   f"{int(frame['small_subset'].sum())} in the small-lesion subset")
    click.echo(f"{PROG}: wrote {len(paths)} file(s) to {out_dir}")
