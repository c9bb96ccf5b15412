#!/usr/bin/env bash
# Data-free distillation from simulated images (Hu et al., arXiv 2208.12464; docs/datafree.md): students that never
# see a real image, distilled from a teacher trained on real frames, scored on real frames.
#   teacher = TEACHER, a MobileNetV2 + MFF node checkpoint trained on the redkitchen recording's labeled part, whose
#             BatchNorm statistics describe real images: kd_real.sh's `kd_xu_bn_train` row (GT on redkitchen
#             frames 0-149, KD from FastDepth on X and U, every BN layer's statistics learned on those real frames)
#             is the best fit; `supervised` and `kd_x` work too, with the encoder's BN statistics frozen at
#             ImageNet's (real images, but not this kitchen's)
#   SIM     = rendered rooms (3 `indoor` + 3 `indoor_large`, 150 frames each at 320x240, seeds 301-306)
#   real    = redkitchen frames 0-149 (the teacher's own labeled part), only for the upper-bound row
#   test    = redkitchen frames 350-499, the shared NYU and TUM frames (eval_real.py)
# Rows: KD on raw simulated images; + object-wise mixing; + transformation network G; + both; both on 1/6 of the
# simulated images (every 6th frame); KD on the real images (the upper bound).
# Usage: TEACHER=runs/kd_real/kd_xu_bn_train/final.safetensors bash docs/experiments/datafree.sh [RUNS_DIR]
# Environment: TEACHER (required), SHARED (../shared), RK (the redkitchen bag), DEVICE (auto), ARCH
# (mobilenetv2_mff), SIZE (96x128: reduced for 2 CPU cores), STEPS (1250), PARALLEL (runs at once, 1), ONLY (row
# names to run; default all), EVAL (1: score the runs at the end), NUM_WORKERS (1), KD (.venv/bin/depth-kd),
# PY (.venv/bin/python).
# Every run resumes where it stopped when the script is started again (its state is saved every 250 steps);
# renders that exist are kept. Time per step is not measured yet: a data-free step runs the teacher twice (G's
# update through it, then its targets) at the teacher's own size. With PARALLEL > 1 on a CPU, set
# OMP_NUM_THREADS=1.
set -euo pipefail
RUNS=${1:-runs/datafree}
: "${TEACHER:?set TEACHER to a real-data MobileNetV2-MFF node checkpoint (see the header)}"
SHARED=${SHARED:-../shared}
RK=${RK:-$SHARED/data/real/bags/redkitchen_7scenes}
KD=${KD:-.venv/bin/depth-kd}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-1250}
PARALLEL=${PARALLEL:-1}
mkdir -p "$RUNS/data"

SIM=()
for s in 301 302 303 304 305 306; do
  family=indoor; [ "$s" -le 303 ] || family=indoor_large
  [ -d "$RUNS/data/${family}_s$s" ] || $KD render --family "$family" --frames 150 --seed "$s" --size 320x240 \
      --out "$RUNS/data/${family}_s$s" --threads 1 --quiet
  SIM+=("$RUNS/data/${family}_s$s")
done
REAL=("$RK#frames=0:150")

# The student's recipe is kd_real.sh's (ImageNet encoder, BN frozen, random views, warm-up, cosine), at SIZE.
COMMON=(--config training/configs/datafree.yaml --arch "${ARCH:-mobilenetv2_mff}" --teacher "$TEACHER"
        --size "${SIZE:-96x128}" --batch-size 8 --lr 3e-4 --num-workers "${NUM_WORKERS:-1}" --steps "$STEPS"
        --device "${DEVICE:-auto}"
        --set "model.encoder_weights=$SHARED/models/imagenet/mobilenet_v2_imagenet.safetensors"
        --set model.freeze_encoder_bn=true --set optim.warmup_steps=200
        --set augment.scale_max=1.5 --set augment.flip=0.5 --set augment.colour=0.2
        --set run.eval_every=0 --set run.checkpoint_every=250)

rows=(
  "df_kd_sim --data ${SIM[*]} --set datafree.mixing=false --set datafree.transform=false"
  "df_mix --data ${SIM[*]} --set datafree.transform=false"
  "df_g --data ${SIM[*]} --set datafree.mixing=false"
  "df_mix_g --data ${SIM[*]}"
  "df_mix_g_sixth --data ${SIM[*]} --set data.stride=6"
  # The upper bound: the same teacher labelling the real images (views labelled online, as above).
  "df_kd_real --mode kd_u --aux ${REAL[*]} --set distill.online_teacher=true"
)
source "$(dirname "$0")/rows.sh"
run_rows

[ "${EVAL:-1}" = 0 ] || $PY docs/experiments/eval_real.py --shared "$SHARED" --runs "$RUNS" \
    --model "teacher_mff=$TEACHER" --json "$RUNS/results.json" | tee "$RUNS/table.md"
