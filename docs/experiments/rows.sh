# Sourced by kd_real.sh and datafree.sh: trains a table's rows, PARALLEL at a time, each logged to RUNS/NAME.log.
# The caller sets KD, RUNS, COMMON (the arguments every row shares), PARALLEL, ONLY (row names; empty: all) and
# rows ("NAME ARGS..." each), then calls run_rows. Every run resumes where it stopped when started again.

run() {  # NAME ARGS...: one student
  local name=$1; shift
  $KD distill "${COMMON[@]}" --out "$RUNS/$name" "$@" \
      >> "$RUNS/$name.log" 2>&1 && echo "done: $name" || echo "FAILED: $name (see $RUNS/$name.log)"
}

run_rows() {
  local row
  for row in "${rows[@]}"; do
    [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" ${row%% *} "* ]] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 2; done
    # shellcheck disable=SC2086  # the row is a word list on purpose (paths hold no spaces)
    run $row &
  done
  wait
}
