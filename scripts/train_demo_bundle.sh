#!/usr/bin/env bash
# Train, package and evaluate the synthetic-data demo bundle shipped in
# stroke_lesion_app/data/models/demo (NOT for research or clinical use).
#
#   bash scripts/train_demo_bundle.sh [WORK_DIR]     # about 10 min of training on one GPU
#
# The defaults reproduce the shipped bundle: 35 epochs x 250 iterations, trained on one NVIDIA
# H200 in about 9 min (DEVICE=auto picks the GPU). On 2 CPU cores the same training takes about
# 4 h; a short CPU run (EPOCHS=30 ITERATIONS=25, about 45 min) gives a network that finds no
# lesion yet. Environment variables: DEVICE (auto|cpu|cuda, training only; the held-out
# subjects are predicted on CPU, as the app does by default), NUM_PROCESSES (augmentation
# workers, default: all cores), EPOCHS, ITERATIONS, TRAIN_SUBJECTS, TEST_SUBJECTS, BUNDLE.
#
# Every step uses the `stroke-lesion-model` commands a user would run on real data, and is
# skipped when its output exists, so an interrupted run resumes. The same seeds give the same
# data; training is not bit-reproducible across machines (GPU kernels, thread scheduling), so
# a rerun gives a model of the same quality, not the same bytes.
set -euo pipefail

WORK=${1:-work/demo-bundle}
BUNDLE=${BUNDLE:-stroke_lesion_app/data/models/demo}
TRAIN_SUBJECTS=${TRAIN_SUBJECTS:-40}
TEST_SUBJECTS=${TEST_SUBJECTS:-12}
EPOCHS=${EPOCHS:-35}
ITERATIONS=${ITERATIONS:-250}
DEVICE=${DEVICE:-auto}
NUM_PROCESSES=${NUM_PROCESSES:-$(nproc)}
MODEL=${MODEL:-stroke-lesion-model}
RESULTS=$WORK/nnUNet_results/Dataset901_SyntheticDemo/StrokeTrainerDefaultMSCSA__nnUNetPlans__3d_fullres

mkdir -p "$WORK"
step() { echo "== $(date +%H:%M:%S) $*"; }

step "synthesize training and held-out test subjects (2 mm)"
[ -d "$WORK/train-bids" ] || $MODEL synthesize "$WORK/train-bids" --subjects "$TRAIN_SUBJECTS" --seed 1000 --resolution 2
[ -d "$WORK/test-bids" ] || $MODEL synthesize "$WORK/test-bids" --subjects "$TEST_SUBJECTS" --seed 2000 --resolution 2

step "convert to nnU-Net raw datasets on the 2 mm MNI152NLin2009aSym grid (N4 + known affine)"
[ -d "$WORK/raw/Dataset901_SyntheticDemo" ] || $MODEL convert synthetic "$WORK/train-bids" "$WORK/raw" --dataset-id 901 --name SyntheticDemo --resolution 2
[ -d "$WORK/raw-test/Dataset902_SyntheticDemoTest" ] || $MODEL convert synthetic "$WORK/test-bids" "$WORK/raw-test" --dataset-id 902 --name SyntheticDemoTest --resolution 2

step "size-balanced split (recorded; the demo trains one model on every training case)"
[ -f "$WORK/splits_final.json" ] || $MODEL split "$WORK/raw/Dataset901_SyntheticDemo/labelsTr" "$WORK/splits_final.json" --folds 5 --seed 0

step "train Default+MSCSA, demo plan, fold 'all' ($EPOCHS epochs x $ITERATIONS iterations)"
$MODEL train 901 "$WORK" --raw "$WORK/raw" --scheme default --mscsa --plan-preset demo \
    --fold all --splits "$WORK/splits_final.json" --epochs "$EPOCHS" \
    --iterations-per-epoch "$ITERATIONS" --val-iterations 5 --no-validation --device "$DEVICE" \
    --num-processes "$NUM_PROCESSES"

step "package the bundle into $BUNDLE"
$MODEL bundle "$BUNDLE" --force --name demo --version 0.2.0 --resolution 2 --demo \
    --member "default_mscsa=$RESULTS:all" --threshold 0.5 --min-component-voxels 2 \
    --description "synthetic-data demo, not for research or clinical use: nnU-Net v2 Default + MSCSA, small plan for CPU inference, trained on $TRAIN_SUBJECTS synthetic heads at 2 mm ($EPOCHS epochs x $ITERATIONS iterations)" \
    --licence "Apache-2.0 (weights trained by scripts/train_demo_bundle.sh on generated data)" \
    --training-data "$TRAIN_SUBJECTS synthetic subjects (stroke-lesion-model synthesize --seed 1000 --resolution 2), MNI152NLin2009aSym 2 mm"

step "predict the held-out subjects with the bundle and evaluate"
rm -rf "$WORK/test-predictions"
$MODEL ensemble "$WORK/raw-test/Dataset902_SyntheticDemoTest/imagesTr" "$WORK/test-predictions" --model "$BUNDLE" --device cpu
rm -rf "$WORK/evaluation"
$MODEL evaluate --truth "$WORK/raw-test/Dataset902_SyntheticDemoTest/labelsTr" --out "$WORK/evaluation" --scheme "demo=$WORK/test-predictions"
mkdir -p "$BUNDLE/evaluation"
cp "$WORK"/evaluation/*.tsv "$WORK"/evaluation/*.json "$BUNDLE/evaluation/" 2>/dev/null || true
cp "$RESULTS/fold_all/stroke_lesion_app_training.json" "$BUNDLE/evaluation/training.json"
step "done: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); held-out metrics in $BUNDLE/evaluation/"
