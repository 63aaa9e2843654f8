"""``stroke-lesion-model`` training subcommands: ``train`` and ``self-train``.

``train`` plans, preprocesses and trains one scheme of the paper with nnU-Net v2;
``self-train`` pseudo-labels unlabelled images with an ensemble, writes a new dataset and trains
it with ``train``'s options (copied, so both commands stay in step). The work is done by
:mod:`stroke_lesion_app.training.nnunet_pipeline` and
:mod:`stroke_lesion_app.training.commands`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click

from stroke_lesion_app.cli.common import MODEL_PROG as PROG
from stroke_lesion_app.cli.common import ModelUsageError as UsageError
from stroke_lesion_app.cli.common import (
    device_option,
    ensemble_source_options,
    one_line,
    resolve_device_option,
    setup_logging,
    step_size_option,
    tta_option,
)

__all__ = ["self_train", "train"]


@click.command()
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
              default=None, help="splits_final.json from `split`, or the paper's nnU-Net v1 "
              "splits_final.pkl (its ATLAS file stems are mapped onto `convert atlas`'s case "
              "IDs); every case must be in the dataset (checked before planning). Installed in "
              "the preprocessed dataset folder (nnU-Net makes a random 5-fold split otherwise).")
@click.option("--plan-preset", type=click.Choice(["paper", "demo", "tiny"]), default="paper",
              show_default=True, help="paper: nnU-Net's own plan (patch 128^3 on ATLAS); demo: "
              "a small CPU network for the synthetic demo bundle; tiny: patch 32^3, for tests "
              "only.")
@device_option
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
    setup_logging(max(verbose, 1))
    from stroke_lesion_app.training.commands import parse_folds, prepare_training
    from stroke_lesion_app.training.nnunet_pipeline import (
        TrainingSettings,
        nnunet_environment,
        train_fold,
        trainer_name,
    )

    device = resolve_device_option(device, UsageError)
    try:
        fold_list = parse_folds(folds)
    except ValueError as error:
        raise UsageError(str(error)) from None
    trainer = trainer_name(scheme, mscsa)
    settings = TrainingSettings(epochs, iterations_per_epoch, val_iterations, validation)
    with nnunet_environment(work_dir, raw_dir=raw_dir, num_threads=num_processes) as folders:
        try:
            prepare_training(dataset_id, folders, plan_preset=plan_preset,
                             num_processes=num_processes, splits_file=splits_file)
        except (FileExistsError, ValueError) as error:
            raise UsageError(one_line(error)) from None
        if preprocess_only:
            click.echo(f"{PROG}: Dataset{dataset_id:03d} planned and preprocessed in "
                       f"{folders['nnUNet_preprocessed']}")
            return
        for fold in fold_list:
            fold_dir = train_fold(dataset_id, trainer, fold, device=device, settings=settings)
            click.echo(f"{PROG}: {trainer} fold {fold}: {fold_dir}")


_TRAIN_OPTIONS = ("scheme", "mscsa", "folds", "plan_preset", "device", "epochs",
                  "iterations_per_epoch", "val_iterations", "validation", "num_processes")


def _with_train_options(command: click.Command) -> click.Command:
    """Give ``command`` copies of `train`'s training options (same names, help, defaults).

    ``--scheme`` becomes optional (the command checks it when it trains).
    """
    options = [copy.copy(param) for param in train.params if param.name in _TRAIN_OPTIONS]
    for option in options:
        if option.name == "scheme":
            option.required = False
        elif option.name == "folds":
            option.help = "Fold(s) of the new split to train (repeatable). Default: every fold."
    command.params[-1:-1] = options  # before -v/--verbose
    return command


@_with_train_options
@click.command(name="self-train")
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
@ensemble_source_options("makes the pseudo-labels")
@tta_option
@step_size_option
@click.option("--splits", "splits_file", type=click.Path(path_type=Path, exists=True,
                                                         dir_okay=False),
              default=None, help="The source's splits_final.json (or the paper's "
              "splits_final.pkl). Default: WORK_DIR/nnUNet_preprocessed/Dataset<NNN>_<NAME>/"
              "splits_final.json (what `train` used).")
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
    setup_logging(verbose)
    from stroke_lesion_app.core.bundle import BundleError
    from stroke_lesion_app.training.commands import (
        make_pseudo_labelled_dataset,
        selftrain_inputs,
    )
    from stroke_lesion_app.training.selftrain import LEAK_NOTE

    if (model is None) == (not members):
        raise UsageError("pass either --model NAME|PATH or one or more --member options.")
    if do_train and training["scheme"] is None:
        raise UsageError("--scheme is required to train; pass it, or --no-train.")
    device = resolve_device_option(training["device"], UsageError)
    try:
        inputs = selftrain_inputs(dataset_id, work_dir, raw_dir=raw_dir, new_name=new_name,
                                  splits_file=splits_file, unlabelled_dir=unlabelled_dir,
                                  folds=training["folds"])
    except ValueError as error:
        raise UsageError(str(error)) from None
    training["folds"] = inputs.folds
    try:
        result = make_pseudo_labelled_dataset(
            inputs, work_dir, new_dataset_id=new_dataset_id, model=model, members=members,
            threshold=threshold, tta=tta, step_size=step_size, device=device, overwrite=force)
    except (BundleError, FileExistsError, ValueError) as error:
        raise UsageError(one_line(error)) from None
    dataset_dir = result["dataset_dir"]
    click.echo(f"{PROG}: {'reused' if result['reused'] else 'wrote'} {dataset_dir}: "
               f"{len(result['labelled'])} labelled + {len(result['pseudo_labelled'])} "
               f"pseudo-labelled case(s), {len(result['splits'])} folds")
    click.echo(f"{PROG}: note: {LEAK_NOTE}.")
    if not do_train:
        click.echo(f"{PROG}: train it with: {PROG} train {new_dataset_id} {work_dir} --raw "
                   f"{inputs.raw_dir} --splits {dataset_dir / 'splits_final.json'} "
                   "--scheme ...")
        return
    ctx.invoke(train, dataset_id=new_dataset_id, work_dir=work_dir, raw_dir=inputs.raw_dir,
               splits_file=dataset_dir / "splits_final.json", verbose=verbose,
               **{**training, "device": device})
