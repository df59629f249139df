#!/usr/bin/env bash
# The learning sweeps of docs/LEARNING.md: trains variants of experiment=demo in parallel on one GPU (fp32 unless a
# variant says otherwise), then evaluates every export twice with `python -m scd.evaluate` (500 held-out captions,
# scales 0/1/2/3/7): with the held-out expressions (joint guidance) and with text alone (use_exp=false).
#
#   bash bench/learning_sweep.sh NAME='OVERRIDES' [NAME='OVERRIDES' ...]
#   e.g. bash bench/learning_sweep.sh base= lr1e-3='model.optimizer.lr=1e-3' v='model.diffusion.objective=v'
#
# Env: T = wall-clock limit of each training in seconds (default 400; a stopped run is evaluated from the last
# export it wrote), OUT = results folder (default ./learning_sweep). Prints one summary block per variant.
set -u
OUT=${OUT:-learning_sweep}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline OMP_NUM_THREADS=2

run() {  # name, overrides...
  local name=$1; shift
  local dir=$OUT/$name
  timeout "${T:-400}" python3 -m scd.train experiment=demo trainer=gpu trainer.precision=32-true \
    trainer.enable_progress_bar=false '~callbacks.sample_images' logger=csv hydra.run.dir="$dir" "$@" \
    > "$dir.train.log" 2>&1
  for mode in joint text; do
    python3 -m scd.evaluate ckpt="$dir/export" num_samples=500 device=cuda 'cond_scales=[0,1,2,3,7]' \
      use_exp=$([ $mode = joint ] && echo true || echo false) hydra.run.dir="$dir/eval_$mode" \
      > "$dir.eval_$mode.log" 2>&1
  done
}

for spec in "$@"; do
  # shellcheck disable=SC2086  # the overrides are meant to split on spaces
  run "${spec%%=*}" ${spec#*=} &
done
wait
python3 "$(dirname "$0")/learning_summary.py" "$OUT"/*/eval_*/results.json
