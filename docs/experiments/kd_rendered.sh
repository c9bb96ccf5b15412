#!/usr/bin/env bash
# Hu et al.'s claim on rendered data: teacher on labeled target X, then students supervised / KD on X /
# KD on U / KD on X and U, evaluated on held-out frames. Exact commands behind docs/kd_rendered.md.
# CPU, reduced resolution (96x128). Usage: bash docs/experiments/kd_rendered.sh [RUNS_DIR]
set -euo pipefail
RUNS=${1:-runs/kd}
KD=${KD:-.venv/bin/depth-kd}
mkdir -p "$RUNS/data"
render() { [ -d "$RUNS/data/$2" ] || $KD render --family "$1" --frames "$3" --seed "$4" --size 320x240 \
             --out "$RUNS/data/$2" --threads 1 --quiet; }

# X: labeled target domain (indoor rooms); U: auxiliary unlabeled domain of similar scale (larger rooms);
# test: held-out indoor rooms (seeds never used for training).
for s in 1 2 3 4; do render indoor "x_indoor_s$s" 150 "$s"; done
for s in 11 12 13 14 15 16; do render indoor_large "u_indoor_large_s$s" 200 "$s"; done
for s in 101 102; do render indoor "test_indoor_s$s" 100 "$s"; done
X=("$RUNS"/data/x_indoor_s*)
U=("$RUNS"/data/u_indoor_large_s*)
TEST=("$RUNS"/data/test_indoor_s*)

COMMON=(--size 96x128 --batch-size 8 --num-workers 1 --lr 3e-4 --set optim.warmup_steps=200
        --set run.eval_every=1000 --set run.checkpoint_every=500 --eval-data "${TEST[@]}")

$KD train-teacher --config training/configs/teacher.yaml --data "${X[@]}" --steps 2000 \
    --out "$RUNS/teacher" "${COMMON[@]}"
TEACHER="$RUNS/teacher/final.safetensors"

STUDENT_STEPS=${STUDENT_STEPS:-1500}
for mode in supervised kd_x kd_u kd_xu; do
  $KD distill --config training/configs/distill.yaml --teacher "$TEACHER" --mode "$mode" \
      --data "${X[@]}" --aux "${U[@]}" --steps "$STUDENT_STEPS" --out "$RUNS/student_$mode" \
      --cache-dir "$RUNS/teacher_cache" "${COMMON[@]}"
done

for run in teacher student_supervised student_kd_x student_kd_u student_kd_xu; do
  $KD eval --model "$RUNS/$run/final.safetensors" --data "${TEST[@]}" --json > "$RUNS/$run/eval.json"
done
.venv/bin/python docs/experiments/kd_table.py "$RUNS" > docs/kd_rendered_table.md
