"""Evaluate an SCD checkpoint on the synthetic attribute world: ``python -m scd.evaluate ckpt=<run>/export``.

A thin command over :mod:`scd.evaluation`: a guidance sweep over held-out captions (and expressions) of the world
the model was trained on. A first row scores the true held-out codes themselves (the ceiling), and the chance
accuracy (codes independent of their captions) is printed with it. Writes ``results.json`` and ``results.md``.
This is the learning proof of docs/LEARNING.md.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from scd.evaluation import evaluation_sets, format_table, guidance_sweep
from scd.pipeline import SCDPipeline
from scd.synthetic import AttributeWorld
from texface.atomic import write_text
from texface.cli import hydra_command
from texface.config import instantiate
from texface.errors import ConfigError
from texface.options import check_int


def evaluate(cfg: DictConfig) -> dict:
    """Run the sweep described by ``cfg`` (conf/evaluate.yaml); write and return the results."""
    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)
    if cfg.exp_scale is not None and not cfg.use_exp:
        raise ConfigError(f"exp_scale={cfg.exp_scale} needs the expressions: drop exp_scale or set use_exp=true")
    pipeline = SCDPipeline.from_pretrained(cfg.ckpt, generator=None, device=cfg.device, use_ema=cfg.use_ema)
    world_config = cfg.world if cfg.world is not None else pipeline.config.get("extra", {}).get("world")
    if world_config is None:
        raise ConfigError(f"{cfg.ckpt} does not record a synthetic world (it was not trained on one); pass "
                          f"world={{seed: ...}} to name the world to evaluate on")
    world_config = OmegaConf.to_container(OmegaConf.create(world_config), resolve=True)
    # A world records how to rebuild it: a _target_ (the face world's codes), or AttributeWorld's arguments.
    world = instantiate(world_config) if "_target_" in world_config else AttributeWorld(**world_config)
    eval_set, reference = evaluation_sets(world, cfg.num_samples, cfg.sample_seed)
    render_samples = check_int("render_samples", cfg.render_samples, 0)
    if render_samples and not hasattr(world, "render_metrics"):
        raise ConfigError("render_samples needs a world that renders its codes (the face world); this checkpoint "
                          "was trained on the synthetic attribute world: set render_samples=0")
    true_row = world.metrics(eval_set.codes, eval_set.first_captions(), eval_set.expressions, reference)
    if render_samples:
        true_row.update(world.render_metrics(eval_set.codes[:render_samples],
                                             eval_set.first_captions()[:render_samples]))
    rows = guidance_sweep(pipeline, world, eval_set, reference, cond_scales=list(cfg.cond_scales), steps=cfg.steps,
                          seed=cfg.seed, use_exp=cfg.use_exp, exp_scale=cfg.exp_scale, batch_size=cfg.batch_size,
                          render_samples=render_samples)
    results = {"ckpt": str(cfg.ckpt), "true_codes": true_row, "sweep": rows,
               "settings": OmegaConf.to_container(cfg, resolve=True)}
    table = format_table(rows, true_row)
    out = Path(cfg.out_dir)
    write_text(out / "results.json", json.dumps(results, indent=2))
    write_text(out / "results.md", table)
    print(table, flush=True)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return results


main = hydra_command("evaluate", evaluate)

if __name__ == "__main__":
    main()
