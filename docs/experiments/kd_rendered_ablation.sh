#!/usr/bin/env bash
# Ablation to kd_rendered.sh: kd_xu with U drawn from the target family (indoor rooms, within the teacher's
# 0.1-10 m range) instead of indoor_large. Reuses kd_rendered.sh's data and teacher.
# Usage: bash docs/experiments/kd_rendered_ablation.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-runs/kd}
KD=${KD:-.venv/bin/depth-kd}
for s in 21 22 23 24 25 26 27 28; do
  [ -d "$RUNS/data/u_indoor_s$s" ] || $KD render --family indoor --frames 150 --seed "$s" --size 320x240 \
      --out "$RUNS/data/u_indoor_s$s" --threads 1 --quiet
done
X=("$RUNS"/data/x_indoor_s*)
U=("$RUNS"/data/u_indoor_s*)
TEST=("$RUNS"/data/test_indoor_s*)
$KD distill --config training/configs/distill.yaml --teacher "$RUNS/teacher/final.safetensors" --mode kd_xu \
    --data "${X[@]}" --aux "${U[@]}" --steps 1500 --out "$RUNS/student_kd_xu_indoor_u" \
    --cache-dir "$RUNS/teacher_cache" --size 96x128 --batch-size 8 --num-workers 1 --lr 3e-4 \
    --set optim.warmup_steps=200 --set run.eval_every=1000 --set run.checkpoint_every=500 --eval-data "${TEST[@]}"
$KD eval --model "$RUNS/student_kd_xu_indoor_u/final.safetensors" --data "${TEST[@]}" --json \
    > "$RUNS/student_kd_xu_indoor_u/eval.json"
