"""The model-side command line: ``stroke-lesion-model <subcommand>``.

Subcommands: ``synthesize`` (synthetic BIDS data for tests, the demo and the demo model),
``convert`` (ATLAS v2.0 or synthetic data → nnU-Net v2 raw dataset), ``split`` (size-balanced
cross-validation folds), ``train`` (a scheme through nnU-Net v2), ``ensemble`` (softmax
averaging of trained models on a folder of images), ``self-train`` (pseudo-label unlabelled
images with an ensemble and retrain on a new dataset), ``bundle`` (package trained models for
the app) and ``evaluate`` (per-case metrics, summaries, Table-1-style comparison,
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
    _setup_logging(verbose)
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


@cli.command()
@click.argument("dataset_id", type=click.IntRange(1, 999))
@click.argument("work_dir", type=click.Path(path_type=Path))
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="nnUNet_raw folder holding Dataset<NNN>_<NAME> (the OUT_RAW of "
              "`convert`). Default: WORK_DIR/nnUNet_raw.")
@click.option("--scheme", type=click.Choice(["default", "dtk10", "resunet"]), required=True,
              help="Training scheme of the paper (Table 1).")
@click.option("--mscsa/--no-mscsa", default=True, show_default=True,
              help="With or without the MSCSA attention module.")
@click.option("--fold", "folds", multiple=True, metavar="N|all",
              help="Fold(s) of splits_final.json to train (repeatable). Default: 0-4.")
@click.option("--splits", "splits_file", type=click.Path(path_type=Path, exists=True,
                                                         dir_okay=False),
              default=None, help="splits_final.json from `split`; copied into the preprocessed "
              "dataset folder before training (nnU-Net makes a random 5-fold split otherwise).")
@click.option("--plan-preset", type=click.Choice(["paper", "demo", "tiny"]), default="paper",
              show_default=True, help="paper: nnU-Net's own plan (patch 128^3 on ATLAS); demo: "
              "a small CPU network for the synthetic demo bundle; tiny: patch 32^3, for tests "
              "only.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto: cuda when a GPU is visible, else cpu.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs (default: the scheme's, 1000 or 800 for DTK10).")
@click.option("--iterations-per-epoch", type=click.IntRange(min=1), default=None,
              help="Training iterations per epoch (default 250).")
@click.option("--val-iterations", type=click.IntRange(min=1), default=None,
              help="Validation iterations per epoch (default 50).")
@click.option("--validation/--no-validation", default=True, show_default=True,
              help="Predict each fold's validation cases after training, as nnUNetv2_train "
              "does (slow on CPU).")
@click.option("--num-processes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes for preprocessing and data augmentation.")
@click.option("--preprocess-only", is_flag=True,
              help="Plan, preprocess and install the split, then stop (run once before "
              "submitting one training job per fold, so the jobs do not race).")
@click.option("-v", "--verbose", count=True, help="More log output.")
def train(dataset_id, work_dir, raw_dir, scheme, mscsa, folds, splits_file, plan_preset, device,
          epochs, iterations_per_epoch, val_iterations, validation, num_processes,
          preprocess_only, verbose):
    """Train one scheme of the paper on dataset DATASET_ID, with nnU-Net v2.

    Plans and preprocesses once (nnUNetv2_plan_and_preprocess, 3d_fullres), then trains every
    requested fold (nnUNetv2_train) with our trainer of the scheme. WORK_DIR receives
    nnUNet_preprocessed/ and nnUNet_results/. Re-running the same command resumes: finished
    folds are skipped, an interrupted fold continues from checkpoint_latest.pth.

    \b
    Examples:
      stroke-lesion-model train 501 work/ --raw raw/ --scheme dtk10 --mscsa \\
          --splits splits_final.json --fold 0 --device cuda
      stroke-lesion-model train 901 work/ --raw raw/ --scheme default --plan-preset demo \\
          --fold all --epochs 40 --iterations-per-epoch 50 --device cpu
    """
    _setup_logging(max(verbose, 1))
    import shutil

    from stroke_lesion_app.training.nnunet_pipeline import (
        TrainingSettings,
        nnunet_environment,
        plan_and_preprocess,
        train_fold,
        trainer_name,
    )

    device = _resolve_device(device)
    try:
        fold_list = [fold if fold == "all" else int(fold) for fold in (folds or range(5))]
    except ValueError:
        raise UsageError(f"--fold takes an integer or 'all', got {folds}") from None
    trainer = trainer_name(scheme, mscsa)
    settings = TrainingSettings(epochs, iterations_per_epoch, val_iterations, validation)
    with nnunet_environment(work_dir, raw_dir=raw_dir, num_threads=num_processes) as folders:
        matches = sorted(folders["nnUNet_raw"].glob(f"Dataset{dataset_id:03d}_*"))
        if not matches:
            raise UsageError(f"no Dataset{dataset_id:03d}_* under {folders['nnUNet_raw']}; make "
                             "one with `stroke-lesion-model convert` or pass --raw.")
        try:
            plan_and_preprocess(dataset_id, plan_preset=plan_preset,
                                num_processes=num_processes)
        except ValueError as error:
            raise UsageError(_one_line(error)) from None
        if splits_file is not None:
            target = folders["nnUNet_preprocessed"] / matches[0].name / "splits_final.json"
            if target.is_file() and target.read_bytes() != splits_file.read_bytes():
                if any((folders["nnUNet_results"] / matches[0].name).glob("*/fold_*")):
                    raise UsageError(f"{target} differs from {splits_file} and models were "
                                     "already trained on it; use a new WORK_DIR.")
            if not (target.is_file() and target.samefile(splits_file)):
                shutil.copyfile(splits_file, target)
        if preprocess_only:
            click.echo(f"{PROG}: Dataset{dataset_id:03d} planned and preprocessed in "
                       f"{folders['nnUNet_preprocessed']}")
            return
        for fold in fold_list:
            fold_dir = train_fold(dataset_id, trainer, fold, device=device, settings=settings)
            click.echo(f"{PROG}: {trainer} fold {fold}: {fold_dir}")


@cli.command()
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
    _setup_logging(verbose)
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
        raise UsageError(_one_line(error)) from None
    size_mb = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 1e6
    click.echo(f"{PROG}: wrote bundle {name} ({len(sources)} member(s), {size_mb:.1f} MB): "
               f"{manifest}")


@cli.command()
@click.argument("images_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--model", "model", default=None, metavar="NAME|PATH",
              help="A model bundle (folder with bundle.json, or a name found in "
              "$STROKE_LESION_APP_MODELS or the package).")
@click.option("--member", "members", multiple=True, metavar="NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]",
              help="Instead of --model: trained-model folders to average (repeatable).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Mask threshold (default: the bundle's, 0.5 for --member).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Mirroring test-time augmentation.")
@click.option("--step-size", type=click.FloatRange(0.1, 1.0), default=0.5, show_default=True,
              help="Sliding-window step, fraction of the patch.")
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
    _setup_logging(verbose)
    import tempfile

    from stroke_lesion_app.core.bundle import BundleError
    from stroke_lesion_app.core.ensemble import EnsemblePredictor
    from stroke_lesion_app.training.package import MemberSource, package_bundle

    if (model is None) == (not members):
        raise UsageError("pass either --model NAME|PATH or one or more --member options.")
    device = _resolve_device(device)
    images = sorted(images_dir.glob("*.nii.gz")) + sorted(images_dir.glob("*.nii"))
    if (split_file is None) != (split_fold is None):
        raise UsageError("--split and --fold go together.")
    if split_file is not None:
        import json

        splits = json.loads(split_file.read_text())
        if split_fold >= len(splits):
            raise UsageError(f"{split_file} has {len(splits)} folds; --fold {split_fold} is "
                             "out of range.")
        wanted = set(splits[split_fold]["val"])
        images = [image for image in images if _case_name(image) in wanted]
    if not images:
        raise UsageError(f"no .nii/.nii.gz images to segment in {images_dir}.")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise UsageError(f"{out_dir} is not empty; choose another folder or pass --force.")
    with tempfile.TemporaryDirectory(prefix="stroke-lesion-ensemble-") as tmp:
        try:
            if members:
                model = package_bundle(
                    Path(tmp) / "bundle", [MemberSource.parse(text) for text in members],
                    name="ensemble", version="0", threshold=threshold or 0.5,
                    resolution_mm=float(_zooms(images[0])[0])).parent
            predictor = EnsemblePredictor(model, device=device, tta=tta, step_size=step_size)
        except (BundleError, FileExistsError, ValueError) as error:
            raise UsageError(_one_line(error)) from None
        if threshold is not None and not members:
            predictor.threshold = threshold
        (out_dir / "probabilities").mkdir(parents=True, exist_ok=True)
        for image in images:
            case = _case_name(image)
            predictor.predict_file(image, out_dir / "probabilities" / f"{case}.nii.gz",
                                   out_dir / f"{case}.nii.gz")
            click.echo(f"{PROG}: {case}")
    click.echo(f"{PROG}: wrote {len(images)} mask(s) and probability map(s) to {out_dir}")


def _case_name(image: Path) -> str:
    """nnU-Net case identifier of an image file: its name without ``_0000`` and extension."""
    return re.sub(r"(_0000)?\.nii(\.gz)?$", "", image.name)


def _zooms(path: Path) -> tuple:
    import nibabel as nib

    return nib.load(str(path)).header.get_zooms()[:3]


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


_TRAIN_OPTIONS = ("scheme", "mscsa", "folds", "plan_preset", "device", "epochs",
                  "iterations_per_epoch", "val_iterations", "validation", "num_processes")


def _with_train_options(command: click.Command) -> click.Command:
    """Give ``command`` copies of `train`'s training options (same names, help, defaults).

    ``--scheme`` becomes optional (the command checks it when it trains).
    """
    import copy

    options = [copy.copy(param) for param in train.params if param.name in _TRAIN_OPTIONS]
    for option in options:
        if option.name == "scheme":
            option.required = False
        elif option.name == "folds":
            option.help = "Fold(s) of the new split to train (repeatable). Default: every fold."
    command.params[-1:-1] = options  # before -v/--verbose
    return command


@_with_train_options
@cli.command(name="self-train")
@click.argument("dataset_id", type=click.IntRange(1, 999))
@click.argument("work_dir", type=click.Path(path_type=Path))
@click.option("--new-dataset-id", type=click.IntRange(1, 999), required=True,
              help="nnU-Net number of the self-training dataset to write (not DATASET_ID).")
@click.option("--new-name", default=None,
              help="Name of the new dataset. Default: the source's name + 'SelfTrain'.")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, help="nnUNet_raw folder holding Dataset<NNN>_<NAME>; the new dataset "
              "is written beside it. Default: WORK_DIR/nnUNet_raw.")
@click.option("--unlabelled", "unlabelled_dir",
              type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Folder of unlabelled template-space images to pseudo-label. Default: the "
              "source dataset's imagesTs.")
@click.option("--model", "model", default=None, metavar="NAME|PATH",
              help="The ensemble that makes the pseudo-labels: a model bundle (folder with "
              "bundle.json, or a name found in $STROKE_LESION_APP_MODELS or the package).")
@click.option("--member", "members", multiple=True, metavar="NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]",
              help="Instead of --model: trained-model folders to average (repeatable).")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Pseudo-label threshold (default: the bundle's, 0.5 for "
              "--member).")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Mirroring test-time augmentation when pseudo-labelling.")
@click.option("--step-size", type=click.FloatRange(0.1, 1.0), default=0.5, show_default=True,
              help="Sliding-window step when pseudo-labelling, fraction of the patch.")
@click.option("--splits", "splits_file", type=click.Path(path_type=Path, exists=True,
                                                         dir_okay=False),
              default=None, help="The source's splits_final.json. Default: WORK_DIR/"
              "nnUNet_preprocessed/Dataset<NNN>_<NAME>/splits_final.json (what `train` used).")
@click.option("--train/--no-train", "do_train", default=True, show_default=True,
              help="Plan, preprocess and train the new dataset after writing it.")
@click.option("--force", is_flag=True,
              help="Replace the new dataset if it exists with other pseudo-labels.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.pass_context
def self_train(ctx, dataset_id, work_dir, new_dataset_id, new_name, raw_dir, unlabelled_dir,
               model, members, threshold, tta, step_size, splits_file, do_train, force,
               verbose, **training):
    """Self-training: pseudo-label unlabelled images with an ensemble, then retrain.

    The ensemble (--model or --member; softmax probabilities averaged, as `ensemble` does)
    segments every image of --unlabelled (default: imagesTs of dataset DATASET_ID). A new raw
    dataset Dataset<NEW>_<NAME> is written beside the source: the source's labelled cases plus
    the pseudo-labelled ones (case ids prefixed 'pseudo_'), with the model's identity and the
    pseudo-labelled cases recorded in dataset.json ("stroke_lesion_app" -> "self_training").
    Its splits_final.json keeps the source's validation folds exactly and adds every
    pseudo-labelled case to every fold's training list. Unless --no-train, the new dataset is
    then planned, preprocessed and trained exactly as `train` does (same options, e.g. the same
    --plan-preset as the source). Re-running the same command resumes: the dataset is reused
    when model, images and split are unchanged, and finished folds are skipped.

    Caveat: the published protocol leaks mildly. The pseudo-labels come from an ensemble
    trained on all folds, so each fold's validation cases influenced the pseudo-labels that
    fold then trains on; cross-validation scores after self-training are slightly optimistic.

    \b
    Examples:
      stroke-lesion-model self-train 501 work/ --raw raw/ --new-dataset-id 511 \\
          --model mscsa-atlas --scheme dtk10 --mscsa --fold 0 --device cuda
      stroke-lesion-model self-train 501 work/ --raw raw/ --new-dataset-id 511 --no-train \\
          --member dtk10=work/nnUNet_results/Dataset501_StrokeLesion/StrokeTrainerDTK10MSCSA__nnUNetPlans__3d_fullres
    """
    _setup_logging(verbose)
    import json
    import tempfile

    from stroke_lesion_app.core.bundle import BundleError, load_bundle
    from stroke_lesion_app.core.ensemble import EnsemblePredictor
    from stroke_lesion_app.training.package import MemberSource, package_bundle
    from stroke_lesion_app.training.selftrain import (
        LEAK_NOTE,
        find_unlabelled_images,
        make_selftrain_dataset,
    )

    if (model is None) == (not members):
        raise UsageError("pass either --model NAME|PATH or one or more --member options.")
    if do_train and training["scheme"] is None:
        raise UsageError("--scheme is required to train; pass it, or --no-train.")
    device = _resolve_device(training["device"])
    raw_dir = raw_dir if raw_dir is not None else work_dir / "nnUNet_raw"
    sources = sorted(raw_dir.glob(f"Dataset{dataset_id:03d}_*")) if raw_dir.is_dir() else []
    if not sources:
        raise UsageError(f"no Dataset{dataset_id:03d}_* under {raw_dir}; make one with "
                         "`stroke-lesion-model convert` or pass --raw.")
    source = sources[0]
    name = new_name or f"{source.name.split('_', 1)[1]}SelfTrain"
    splits_file = splits_file or work_dir / "nnUNet_preprocessed" / source.name / \
        "splits_final.json"
    if not splits_file.is_file():
        raise UsageError(f"{splits_file} does not exist; pass the source's split with --splits "
                         "(the validation folds must stay those of the first round).")
    unlabelled_dir = unlabelled_dir or source / "imagesTs"
    try:
        splits = json.loads(splits_file.read_text())
        folds = [fold if fold == "all" else int(fold) for fold in training["folds"]]
    except ValueError as error:
        raise UsageError(f"{splits_file} or --fold is malformed ({_one_line(error)}).") from None
    if not isinstance(splits, list) or not splits:
        raise UsageError(f"{splits_file} is not a list of folds; pass nnU-Net's "
                         "splits_final.json.")
    bad = [fold for fold in folds if fold != "all" and not 0 <= fold < len(splits)]
    if bad:
        raise UsageError(f"--fold {bad[0]}: {splits_file} has folds 0-{len(splits) - 1}.")
    training["folds"] = tuple(str(fold) for fold in (folds or range(len(splits))))

    with tempfile.TemporaryDirectory(prefix="stroke-lesion-selftrain-") as tmp:
        try:
            if members:
                parsed = [MemberSource.parse(text) for text in members]
                images = find_unlabelled_images(unlabelled_dir)
                model = package_bundle(
                    Path(tmp) / "bundle", parsed, name="ensemble", version="0",
                    threshold=threshold or 0.5,
                    resolution_mm=float(_zooms(next(iter(images.values())))[0])).parent
                identity = {"members": [{"name": m.name, "folder": str(m.folder.absolute()),
                                         "folds": list(m.resolved_folds()), "weight": m.weight}
                                        for m in parsed]}
                identity["threshold"] = threshold or 0.5
            else:
                loaded = load_bundle(model)
                identity = {**loaded.identity(), "threshold": threshold or loaded.threshold}
                model = loaded.root
            identity.update(tta=tta, step_size=step_size)

            def load_predictor():
                predictor = EnsemblePredictor(model, device=device, tta=tta,
                                              step_size=step_size)
                predictor.threshold = identity["threshold"]
                return predictor

            result = make_selftrain_dataset(
                source, raw_dir, dataset_id=new_dataset_id, name=name,
                unlabelled_dir=unlabelled_dir, splits=splits, model=identity,
                load_predictor=load_predictor, overwrite=force,
                derived=[work_dir / sub / f"Dataset{new_dataset_id:03d}_{name}"
                         for sub in ("nnUNet_preprocessed", "nnUNet_results")])
        except (BundleError, FileExistsError, ValueError) as error:
            raise UsageError(_one_line(error)) from None
    dataset_dir = result["dataset_dir"]
    click.echo(f"{PROG}: {'reused' if result['reused'] else 'wrote'} {dataset_dir}: "
               f"{len(result['labelled'])} labelled + {len(result['pseudo_labelled'])} "
               f"pseudo-labelled case(s), {len(result['splits'])} folds")
    click.echo(f"{PROG}: note: {LEAK_NOTE}.")
    if not do_train:
        click.echo(f"{PROG}: train it with: {PROG} train {new_dataset_id} {work_dir} --raw "
                   f"{raw_dir} --splits {dataset_dir / 'splits_final.json'} --scheme ...")
        return
    ctx.invoke(train, dataset_id=new_dataset_id, work_dir=work_dir, raw_dir=raw_dir,
               splits_file=dataset_dir / "splits_final.json", verbose=verbose,
               **{**training, "device": device})


def _resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; refuse an absent ``cuda``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is visible; use --device "
                         "cpu or auto.")
    return device


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def main(args: list[str] | None = None) -> None:
    """Console-script entry point (``stroke-lesion-model``)."""
    cli.main(args=args, prog_name=PROG)


def _setup_logging(verbose: int) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
