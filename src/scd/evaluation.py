"""Learning proof of an SCD on the synthetic attribute world: guidance sweeps scored by the world's metrics.

For each guidance scale, codes are sampled for held-out captions (and expressions) of the world the model was
trained on and scored with :meth:`scd.synthetic.AttributeWorld.metrics`: attribute accuracy (degree: the exact
level a caption states; presence: present vs absent), expression error (RMSE of the recovered expression) and the
Frechet distance to independent true codes. ``python -m scd.evaluate`` runs it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from scd.pipeline import SCDPipeline
from scd.synthetic import AttributeWorld
from texface.stylecodes import StyleCodeSet

log = logging.getLogger(__name__)


def evaluation_sets(world: AttributeWorld, num_samples: int, sample_seed: int) -> tuple[StyleCodeSet, torch.Tensor]:
    """Held-out codes with their conditions (seed ``sample_seed``) and independent true codes (seed + 1) for the
    Frechet distance."""
    return world.sample(num_samples, seed=sample_seed), world.sample(num_samples, seed=sample_seed + 1).codes


def guidance_sweep(pipeline: SCDPipeline, world: AttributeWorld, eval_set: StyleCodeSet, reference: torch.Tensor,
                   *, cond_scales: Sequence[float], steps: int = 50, seed: int = 0, use_exp: bool = True,
                   exp_scale: float | None = None, batch_size: int = 256, render_samples: int = 0) -> list[dict]:
    """One row of world metrics per guidance scale (plus ``cond_scale``), from the same initial noise.

    Args:
        pipeline: the SCD (denoiser, diffusion and text encoder).
        world: the world the model was trained on.
        eval_set: held-out codes; their first captions (and expressions when ``use_exp``) are the conditions.
        reference: independent true codes for the Frechet distance.
        cond_scales: joint guidance scales; 0 is the unconditional model, 1 the conditional one without guidance.
            With ``exp_scale`` they are the text scales, and the expression keeps ``exp_scale`` throughout.
        steps, seed: DDIM steps and noise seed.
        batch_size: codes per sampling call.
        render_samples: also score the renders of the first ``render_samples`` codes of every row (worlds with a
            ``render_metrics`` method: the face world's attribute classifier on the generator's renders).
    """
    captions, exp = eval_set.first_captions(), eval_set.expressions
    fixed = {} if exp_scale is None else {"exp_scale": float(exp_scale)}   # the expression's own scale
    rows = []
    for scale in cond_scales:
        guidance = {"text_scale" if fixed else "cond_scale": float(scale), **fixed}
        codes = []
        for start in range(0, len(captions), batch_size):
            stop = min(start + batch_size, len(captions))
            codes.append(pipeline.sample(captions[start:stop], exp[start:stop] if use_exp else None,
                                         num_samples=stop - start, steps=steps, seed=seed + start,
                                         **guidance).cpu())
        codes = torch.cat(codes)
        row = {"cond_scale": float(scale), **fixed, **world.metrics(codes, captions, exp, reference)}
        if render_samples:
            row.update(world.render_metrics(codes[:render_samples], captions[:render_samples]))
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
        label = (f"sampled, guidance scale {row['cond_scale']:g}" if "exp_scale" not in row else
                 f"sampled, text scale {row['cond_scale']:g}, expression scale {row['exp_scale']:g}")
        text += line.format(label, row["attr_acc/mean"],
                            row["attr_acc_presence/mean"], row["exp_error"], row["fd"])
    if "render_attr_acc/mean" in true_row:
        text += ("\nRenders of the codes, levels read by the attribute classifier:\n\n| codes | attribute acc. "
                 "(degree) | attribute acc. (presence) |\n|---|---|---|\n")
        render_line = "| {} | {:.3f} | {:.3f} |\n"
        text += render_line.format("true held-out codes", true_row["render_attr_acc/mean"],
                                   true_row["render_attr_acc_presence/mean"])
        for row in rows:
            text += render_line.format(f"sampled, scale {row['cond_scale']:g}", row["render_attr_acc/mean"],
                                       row["render_attr_acc_presence/mean"])
    return text
