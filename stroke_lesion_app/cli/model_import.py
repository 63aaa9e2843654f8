"""``stroke-lesion-model import``: published nnU-Net v1/v2 models → a model bundle.

The work is done by :mod:`stroke_lesion_app.training.model_import`.
"""

from __future__ import annotations

from pathlib import Path

import click

from stroke_lesion_app.cli.common import MODEL_PROG as PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.common import one_line, setup_logging

__all__ = ["import_models"]


@click.command(name="import")
@click.argument("sources", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Bundle folder to create (what --model then takes).")
@click.option("--name", required=True, help="Bundle name (what --model NAME selects).")
@click.option("--version", "bundle_version", default="1.0.0", show_default=True)
@click.option("--url", default="", help="Where the weights were downloaded from (recorded in "
              "the manifest and every output's sidecar).")
@click.option("--citation", default="", help="What to cite for the weights (recorded).")
@click.option("--licence", default="", help="Licence of the weights (recorded; default: "
              "\"not stated\").")
@click.option("--description", default="", help="One sentence for reports (default: what was "
              "imported).")
@click.option("--training-data", default="", help="What the models were trained on.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.5, show_default=True, help="Probability threshold of the lesion mask.")
@click.option("--min-component-voxels", type=click.IntRange(min=0), default=0,
              show_default=True, help="Drop mask components smaller than this (template grid).")
@click.option("--connectivity", type=click.Choice(["6", "18", "26"]), default="26",
              show_default=True, help="Neighbourhood of the components rule.")
@click.option("--force", is_flag=True, help="Replace OUT if it is a bundle.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def import_models(sources, out_dir, name, bundle_version, url, citation, licence, description,
                  training_data, threshold, min_component_voxels, connectivity, force, verbose):
    """Import trained nnU-Net v1 or v2 models (folders or zips) as one model bundle.

    Every trained-model folder found at or below SOURCES becomes one ensemble member, each of
    its folds one network; all networks count equally in the softmax average.

    \b
    nnU-Net v2: <Trainer>__<Plans>__3d_fullres/ folders (plans.json, dataset.json,
      fold_N/checkpoint_final.pth) or nnUNetv2_export_model_to_zip zips.
    nnU-Net v1: 3d_fullres/Task<NNN>_<Name>/<Trainer>__<Plans>/ folders (plans.pkl,
      fold_N/model_final_checkpoint.model + .model.pkl), converted to v2 folders; their
      mirrorings and sliding windows are averaged as softmax probabilities, as v1 does.
      Networks: Generic_UNet (nnUNetTrainerV2, _DA3, _800epochs_Loss_DiceTopK10),
      FabiansUNet (nnUNetTrainerV2_ResencUNet[_DA3]) and the StrokeLesSeg seed's
      depth-1 MSCSA models (Generic_UNet_MSCSA, FabiansUNet_MSCSA).

    \b
    Example (MAPPING's ATLAS winner, 4 schemes x 5 folds, one 20-network bundle):
      stroke-lesion-model import nnUNet_trained_models/3d_fullres -o bundles/mapping \\
          --name mapping-atlas --url <download link> --citation "Huo et al. 2022, \\
          arXiv:2211.15486" --training-data "ATLAS v2.0 training set (655 T1w)"
    """
    setup_logging(verbose)
    from stroke_lesion_app.core.bundle import BundleError
    from stroke_lesion_app.training.model_import import import_bundle

    try:
        manifest = import_bundle(
            sources, out_dir, name=name, version=bundle_version, description=description,
            url=url, citation=citation, licence=licence, training_data=training_data,
            threshold=threshold, min_component_voxels=min_component_voxels,
            connectivity=int(connectivity), overwrite=force)
    except (BundleError, FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    from stroke_lesion_app.core.bundle import load_bundle

    bundle = load_bundle(manifest.parent)
    networks = sum(len(member.folds) for member in bundle.members)
    size_mb = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 1e6
    click.echo(f"{PROG}: imported {len(bundle.members)} member(s), {networks} network(s) "
               f"({size_mb:.1f} MB) into bundle {name}: {manifest}")
