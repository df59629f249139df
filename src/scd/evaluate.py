"""Evaluate an SCD checkpoint on the synthetic attribute world: ``python -m scd.evaluate ckpt=<run>/export``.

For each guidance scale, codes are sampled for held-out captions (and expressions) of the world the model was
trained on, and scored with the world's metrics: attribute accuracy (degree: the exact level a caption states;
presence: present vs absent), expression error (RMSE of the recovered expression) and the Frechet distance to
independent true codes. A first row scores the true held-out codes themselves (the ceiling), and the chance
accuracy (codes independent of their captions) is printed with it. Writes ``results.json`` and ``results.md``.
This is the learning proof of docs/LEARNING.md.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from eg3d.checkpoint import CheckpointError
from scd.checkpoint import load_scd
from scd.data import StyleCodeSet
from scd.sampling import SCDParts, sample_codes
from scd.synthetic import AttributeWorld

log = logging.getLogger(__name__)


def world_metrics(world: AttributeWorld, codes: torch.Tensor, captions: Sequence[str], exps: torch.Tensor,
                  reference: torch.Tensor) -> dict[str, float]:
    """Scores of codes (N, 14, 512) sampled for ``captions`` and ``exps`` (N, 50).

    Returns attr_acc/mean (degree), attr_acc/chance, attr_acc/<attribute>, attr_acc_presence/mean,
    exp_error and fd (Frechet distance to the ``reference`` codes).
    """
    metrics = world.attribute_accuracy(codes, captions).as_dict("attr_acc")
    presence = world.attribute_accuracy(codes, captions, mode="presence")
    metrics["attr_acc_presence/mean"] = presence.mean
    metrics["attr_acc_presence/chance"] = presence.chance_mean
    metrics["exp_error"] = world.expression_error(codes, exps)
    metrics["fd"] = world.frechet_distance(codes, reference)
    return metrics


def evaluation_sets(world: AttributeWorld, num_samples: int, sample_seed: int) -> tuple[StyleCodeSet, torch.Tensor]:
    """Held-out codes with their conditions (seed ``sample_seed``) and independent true codes (seed + 1) for the
    Frechet distance."""
    return world.sample(num_samples, seed=sample_seed), world.sample(num_samples, seed=sample_seed + 1).codes


def guidance_sweep(model: SCDParts, world: AttributeWorld, eval_set: StyleCodeSet, reference: torch.Tensor, *,
                   scales: Sequence[float], steps: int = 50, seed: int = 0, use_exp: bool = True,
                   exp_scale: float | None = None, batch_size: int = 256) -> list[dict]:
    """One row of ``world_metrics`` per guidance scale (plus ``scale``), from the same initial noise.

    Args:
        model: denoiser, diffusion and text encoder (``load_scd(path)``).
        world: the world the model was trained on.
        eval_set: held-out codes; their first captions (and expressions when ``use_exp``) are the conditions.
        reference: independent true codes for the Frechet distance.
        scales: joint guidance scales; 0 is the unconditional model, 1 the conditional one without guidance.
            With ``exp_scale`` they are the text scales, and the expression keeps ``exp_scale`` throughout.
        steps, seed: DDIM steps and noise seed.
        batch_size: codes per sampling call.
    """
    captions, exps = eval_set.first_captions(), eval_set.expressions
    fixed = {} if exp_scale is None else {"exp_scale": float(exp_scale)}   # the expression's own scale
    rows = []
    for scale in scales:
        guidance = {"text_scale" if fixed else "cond_scale": float(scale), **fixed}
        codes = []
        for start in range(0, len(captions), batch_size):
            stop = min(start + batch_size, len(captions))
            codes.append(sample_codes(model, captions[start:stop], exps[start:stop] if use_exp else None,
                                      num_samples=stop - start, steps=steps, seed=seed + start,
                                      **guidance).cpu())
        row = {"scale": float(scale), **fixed, **world_metrics(world, torch.cat(codes), captions, exps, reference)}
        log.info("scale %g: attribute accuracy %.3f", scale, row["attr_acc/mean"])
        rows.append(row)
    return rows


def format_table(rows: list[dict], true_row: dict) -> str:
    """Markdown table of the sweep with the true codes and chance as reference lines."""
    head = ("| codes | attribute acc. (degree) | attribute acc. (presence) | expression RMSE "
            "| Frechet dist. |\n|---|---|---|---|---|\n")
    line = "| {} | {:.3f} | {:.3f} | {:.3f} | {:.2f} |\n"
    text = head + line.format("true held-out codes", true_row["attr_acc/mean"],
                              true_row["attr_acc_presence/mean"], true_row["exp_error"], true_row["fd"])
    text += "| chance (codes independent of captions) | {:.3f} | {:.3f} | | |\n".format(
        true_row["attr_acc/chance"], true_row["attr_acc_presence/chance"])
    for row in rows:
        label = (f"sampled, guidance scale {row['scale']:g}" if "exp_scale" not in row else
                 f"sampled, text scale {row['scale']:g}, expression scale {row['exp_scale']:g}")
        text += line.format(label, row["attr_acc/mean"],
                            row["attr_acc_presence/mean"], row["exp_error"], row["fd"])
    return text


def evaluate(cfg: DictConfig) -> dict:
    """Run the sweep described by ``cfg`` (conf/evaluate.yaml); write and return the results."""
    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)
    if cfg.exp_scale is not None and not cfg.use_exp:
        raise ValueError(f"exp_scale={cfg.exp_scale} needs the expressions: drop exp_scale or set use_exp=true")
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    model = load_scd(cfg.ckpt, map_location=device, use_ema=cfg.use_ema)
    world_config = cfg.world if cfg.world is not None else model.config.get("extra", {}).get("world")
    if world_config is None:
        raise ValueError(f"{cfg.ckpt} does not record a synthetic world (it was not trained on one); pass "
                         f"world={{seed: ...}} to name the world to evaluate on")
    world = AttributeWorld(**OmegaConf.to_container(OmegaConf.create(world_config), resolve=True))
    eval_set, reference = evaluation_sets(world, cfg.num_samples, cfg.sample_seed)
    true_row = world_metrics(world, eval_set.codes, eval_set.first_captions(), eval_set.expressions, reference)
    rows = guidance_sweep(model, world, eval_set, reference, scales=list(cfg.scales), steps=cfg.steps,
                          seed=cfg.seed, use_exp=cfg.use_exp, exp_scale=cfg.exp_scale, batch_size=cfg.batch_size)
    results = {"ckpt": str(cfg.ckpt), "true_codes": true_row, "sweep": rows,
               "settings": OmegaConf.to_container(cfg, resolve=True)}
    table = format_table(rows, true_row)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table)
    print(table, flush=True)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}", flush=True)
    return results


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
