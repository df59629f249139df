#!/usr/bin/env bash
# The learning-probe runs of docs/LEARNING.md ("Text tower width"): two demo-world trainings on one GPU, each stopped
# by a wall-clock limit (T seconds), then scd.evaluate. Needs the wheels of hydra-core/omegaconf/antlr4/ftfy in .whl/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 WANDB_MODE=offline
date -u
run() {  # name, extra overrides...
  name=$1; shift
  start=$(date +%s)
  timeout ${T:-195} python3 -m scd.train experiment=demo trainer=gpu trainer.enable_progress_bar=false \
    model.denoiser.depth=4 model.denoiser.ff_dim=2048 model.denoiser.heads=8 model.denoiser.dropout=0.1 \
    data.train_size=20000 data.batch_size=256 trainer.max_epochs=10000 trainer.max_steps=100000 \
    trainer.check_val_every_n_epoch=5 callbacks.sample_images.every_n_epochs=10000 \
    hydra.run.dir=/tmp/$name logger=csv "$@" > /tmp/$name.log 2>&1
  echo "$name train wall $(( $(date +%s) - start )) s; last ckpt: $(ls /tmp/$name/checkpoints 2>/dev/null | tr '\n' ' ')" | tee -a $OUT/summary.txt
  python3 -m scd.evaluate ckpt=/tmp/$name/export num_samples=1000 device=cuda hydra.run.dir=/tmp/${name}_eval > /tmp/${name}_eval.log 2>&1
  cat /tmp/${name}_eval/results.md | tee -a $OUT/summary.txt; cp /tmp/${name}_eval/results.json $OUT/$name.json
}
run lw_none model.diffusion.loss_weight=none
run lw_none_text64 model.diffusion.loss_weight=none model.text_encoder.config.hidden_size=64 model.text_encoder.config.intermediate_size=256 model.text_encoder.config.num_hidden_layers=2 model.text_encoder.config.num_attention_heads=4
