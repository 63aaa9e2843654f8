"""``stroke-lesion-model`` inference subcommands: ``ensemble`` and ``bundle``.

``ensemble`` segments a folder of template-space images with a softmax-averaging ensemble (a
bundle or ``--member`` folders); ``bundle`` packages trained models for the app. The work is
done by :mod:`stroke_lesion_app.training.commands` and
:mod:`stroke_lesion_app.training.package`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from stroke_lesion_app.cli.common import MODEL_PROG as PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.common import (
    ensemble_source_options,
    inference_options,
    one_line,
    resolve_device_option,
    setup_logging,
)

__all__ = ["bundle", "ensemble"]


@click.command()
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--member", "members", multiple=True, required=True,
              metavar="NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]",
              help="A trained-model folder (<trainer>__nnUNetPlans__3d_fullres) and the folds to "
              "use (comma-separated, default: every fold_N with checkpoint_final.pth); "
              "repeatable, one per ensemble member.")
@click.option("--name", required=True, help="Bundle name (what --model NAME selects).")
@click.option("--version", "bundle_version", default="0.1.0", show_default=True)
@click.option("--description", default="", help="One sentence for reports.")
@click.option("--resolution", type=click.FloatRange(min=0.5, max=4.0), default=1.0,
              show_default=True, metavar="MM",
              help="Grid (mm) of MNI152NLin2009aSym the members were trained on.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.5, show_default=True, help="Probability threshold of the lesion mask.")
@click.option("--min-component-voxels", type=click.IntRange(min=0), default=0,
              show_default=True, help="Drop mask components smaller than this (template grid).")
@click.option("--connectivity", type=click.Choice(["6", "18", "26"]), default="26",
              show_default=True, help="Neighbourhood of the components rule.")
@click.option("--licence", default="", help="Licence of the weights.")
@click.option("--training-data", default="", help="What the members were trained on.")
@click.option("--demo", is_flag=True, help="Mark as a demo model (reports warn it is not for "
              "research or clinical use).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it is a bundle.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def bundle(out_dir, members, name, bundle_version, description, resolution, threshold,
           min_component_voxels, connectivity, licence, training_data, demo, force, verbose):
    """Package trained models as a model bundle for `stroke-lesion-app --model OUT_DIR`.

    Copies each member's plans.json, dataset.json and fold checkpoints (weights only, without
    the optimizer state), writes bundle.json with sha256 checksums, and checks the result
    loads. The ensemble averages the members' softmax probabilities (weights normalised).

    \b
    Example:
      stroke-lesion-model bundle bundles/mscsa-atlas --name mscsa-atlas \\
          --member dtk10=work/nnUNet_results/Dataset501_StrokeLesion/StrokeTrainerDTK10MSCSA__nnUNetPlans__3d_fullres \\
          --member resunet=work/nnUNet_results/Dataset501_StrokeLesion/StrokeTrainerResUNetMSCSA__nnUNetPlans__3d_fullres \\
          --licence CC-BY-NC-4.0 --training-data "ATLAS v2.0 training set"
    """
    setup_logging(verbose)
    from stroke_lesion_app.core.bundle import BundleError
    from stroke_lesion_app.training.package import MemberSource, package_bundle

    try:
        sources = [MemberSource.parse(text) for text in members]
        manifest = package_bundle(
            out_dir, sources, name=name, version=bundle_version, description=description,
            resolution_mm=resolution, threshold=threshold,
            min_component_voxels=min_component_voxels, connectivity=int(connectivity),
            licence=licence, training_data=training_data, demo=demo, overwrite=force)
    except (BundleError, FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    size_mb = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 1e6
    click.echo(f"{PROG}: wrote bundle {name} ({len(sources)} member(s), {size_mb:.1f} MB): "
               f"{manifest}")


@click.command()
@click.argument("images_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path))
@ensemble_source_options("segments the images")
@inference_options
@click.option("--split", "split_file", type=click.Path(path_type=Path, exists=True,
                                                      dir_okay=False),
              default=None, help="splits_final.json: with --fold, segment only that fold's "
              "validation cases (cross-validated ensembles for Table 1).")
@click.option("--fold", "split_fold", type=click.IntRange(min=0), default=None,
              help="Fold of --split whose validation cases are segmented.")
@click.option("--force", is_flag=True, help="Write into an existing OUT_DIR.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def ensemble(images_dir, out_dir, model, members, threshold, device, tta, step_size, split_file,
             split_fold, force, verbose):
    """Segment every image of IMAGES_DIR with a softmax-averaging ensemble.

    IMAGES_DIR holds template-space T1w images (an nnU-Net imagesTr/imagesTs folder, names
    <case>_0000.nii.gz, or any *.nii.gz). Every member x fold runs as its own pass and the
    lesion probabilities are averaged (the paper's ensemble; nnU-Net itself averages logits).
    Writes OUT_DIR/<case>.nii.gz (uint8 mask: threshold and the bundle's small-component rule)
    and OUT_DIR/probabilities/<case>.nii.gz (float32), ready for `evaluate`.

    \b
    Examples:
      stroke-lesion-model ensemble raw/Dataset501_StrokeLesion/imagesTs pred/ --model mscsa-atlas
      stroke-lesion-model ensemble imagesTs pred/ \\
          --member dtk10=results/.../StrokeTrainerDTK10MSCSA__nnUNetPlans__3d_fullres \\
          --member resunet=results/.../StrokeTrainerResUNetMSCSA__nnUNetPlans__3d_fullres
    """
    setup_logging(verbose)
    from stroke_lesion_app.core.bundle import BundleError
    from stroke_lesion_app.training.commands import (
        load_ensemble,
        predict_images,
        refuse_non_empty,
        select_images,
    )

    if (model is None) == (not members):
        raise UsageError("pass either --model NAME|PATH or one or more --member options.")
    device = resolve_device_option(device, UsageError)
    if (split_file is None) != (split_fold is None):
        raise UsageError("--split and --fold go together.")
    try:
        images = select_images(images_dir, split_file=split_file, fold=split_fold)
        refuse_non_empty(out_dir, overwrite=force)
    except (FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    with tempfile.TemporaryDirectory(prefix="stroke-lesion-ensemble-") as tmp:
        try:
            predictor = load_ensemble(tmp, model=model, members=members,
                                      reference_image=images[0], threshold=threshold,
                                      device=device, tta=tta, step_size=step_size)
        except (BundleError, FileExistsError, ValueError) as error:
            raise UsageError(one_line(error)) from None
        for case in predict_images(predictor, images, out_dir):
            click.echo(f"{PROG}: {case}")
    click.echo(f"{PROG}: wrote {len(images)} mask(s) and probability map(s) to {out_dir}")
