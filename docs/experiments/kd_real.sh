#!/usr/bin/env bash
# Hu et al.'s comparison on real images (docs/kd_real.md): the FastDepth int8 teacher, and MobileNetV2 + MFF
# students at 192x256 from ImageNet weights, trained on part of a real recording.
#   X    = redkitchen frames 0-149 (RGB + depth, 10 s)
#   U    = redkitchen frames 175-324 (depth never read), the uncalibrated robot bag, the unlabeled folders
#   test = redkitchen frames 350-499 (eval_real.py), plus the shared NYU and TUM frames
# Usage: bash docs/experiments/kd_real.sh [RUNS_DIR]. Environment: SHARED (../shared), RK (the redkitchen bag),
# DEVICE (auto), ARCH (mobilenetv2_mff; mobilenetv2_fast for the real-time student), STEPS (2000), PARALLEL
# (runs at once, 1), ONLY (row names to run; default all), SEED (0), EVAL (1: score the runs at the end),
# KD (.venv/bin/depth-kd), PY (.venv/bin/python).
# On 2 CPU cores a student takes about 2.4 s a step (mobilenetv2_fast: 1.1 s); every run resumes where it stopped
# when started again. With PARALLEL > 1 on a CPU, set OMP_NUM_THREADS=1: torch's spinning OpenMP workers on
# shared cores slow every run several times over.
set -euo pipefail
RUNS=${1:-runs/kd_real}
SHARED=${SHARED:-../shared}
RK=${RK:-$SHARED/data/real/bags/redkitchen_7scenes}
KD=${KD:-.venv/bin/depth-kd}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-2000}
PARALLEL=${PARALLEL:-1}
mkdir -p "$RUNS/data"

X=("$RK#frames=0:150")
U=("$RK#frames=175:325" "$SHARED/data/real/bags/aims_lab_robot"
   "$SHARED"/data/real/unlabeled/{rtabmap_corridor,opencv_box_livingroom,scannet_pairs_superglue,udacity_highway})
# Rendered rooms with exact depth, as extra labeled frames for the default weights (so the demo keeps working).
for s in 1 2; do
  [ -d "$RUNS/data/indoor_s$s" ] || $KD render --family indoor --frames 150 --seed "$s" --size 320x240 \
      --out "$RUNS/data/indoor_s$s" --threads 1 --quiet
done
RENDERED=("$RUNS"/data/indoor_s{1,2})

# Patient and consistent distillation: the teacher labels every augmented view at every step.
COMMON=(--config training/configs/distill_fastdepth.yaml --arch "${ARCH:-mobilenetv2_mff}" --teacher "$SHARED/models/fastdepth/fast_depth_224_int8.tflite" --size 192x256 --batch-size 8 --lr 3e-4
        --num-workers "${NUM_WORKERS:-2}" --steps "$STEPS" --device "${DEVICE:-auto}" --set "run.seed=${SEED:-0}"
        --set "model.encoder_weights=$SHARED/models/imagenet/mobilenet_v2_imagenet.safetensors"
        --set model.freeze_encoder_bn=true --set distill.online_teacher=true --set optim.warmup_steps=200
        --set augment.scale_max=1.5 --set augment.flip=0.5 --set augment.colour=0.2
        --set run.eval_every=0 --set run.checkpoint_every=250)

rows=(
  "supervised --mode supervised --data ${X[*]} --set distill.online_teacher=false"
  "kd_x --mode kd_x --data ${X[*]}"
  "kd_u --mode kd_u --aux ${U[*]}"
  "kd_xu --mode kd_xu --data ${X[*]} --aux ${U[*]}"
  "kd_xu_random_init --mode kd_xu --data ${X[*]} --aux ${U[*]} --set model.encoder_weights=null"
  "kd_xu_cached --mode kd_xu --data ${X[*]} --aux ${U[*]} --set distill.online_teacher=false"
  "kd_xu_bn_train --mode kd_xu --data ${X[*]} --aux ${U[*]} --set model.freeze_encoder_bn=false"
  "kd_xu_rendered --mode kd_xu --data ${X[*]} ${RENDERED[*]} --aux ${U[*]}"
  # The default weights' recipe with fixed teacher targets, and with the encoder's BN statistics trained.
  "kd_xu_rendered_cached --mode kd_xu --data ${X[*]} ${RENDERED[*]} --aux ${U[*]} --set distill.online_teacher=false"
  # The default's recipe, online, with frames mixed (CutMix on U rows: augment.mix).
  "kd_xu_rendered_mix --mode kd_xu --data ${X[*]} ${RENDERED[*]} --aux ${U[*]} --set augment.mix=0.5"
  "kd_xu_rendered_bn_train --mode kd_xu --data ${X[*]} ${RENDERED[*]} --aux ${U[*]} --set model.freeze_encoder_bn=false"
)
source "$(dirname "$0")/rows.sh"
run_rows

[ "${EVAL:-1}" = 0 ] || $PY docs/experiments/eval_real.py --shared "$SHARED" --runs "$RUNS" --json "$RUNS/results.json"
