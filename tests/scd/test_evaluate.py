"""scd.evaluate: the guidance sweep on the world recorded in an export, written as results.json / results.md."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from scd.evaluate import evaluate
from scd.evaluation import evaluation_sets
from scd.pipeline import SCDPipeline
from scd.synthetic import AttributeWorld
from texface.config import compose


def eval_config(run, out, *overrides):
    return compose("evaluate", [f"ckpt={run / 'export'}", "num_samples=16", "steps=2", f"out_dir={out}",
                                "device=cpu", "paths.output_dir=unused", *overrides])


def test_evaluate_reads_the_world_from_the_export_and_writes_the_table(trained, tmp_path):
    run, _ = trained
    results = evaluate(eval_config(run, tmp_path / "eval", "cond_scales=[0,7]"))
    assert [row["cond_scale"] for row in results["sweep"]] == [0.0, 7.0]
    assert results["true_codes"]["attr_acc/mean"] > 0.9  # true codes agree with their own captions
    assert "guidance scale 7" in (tmp_path / "eval" / "results.md").read_text()


def test_exp_scale_guides_the_text_and_keeps_the_expression_at_its_scale(trained, tmp_path):
    """With exp_scale the scales guide the text and the expression keeps its own scale: the same codes as
    sampling with text_scale=3, exp_scale=1 for the held-out captions and expressions."""
    run, _ = trained
    eval_cfg = eval_config(run, tmp_path / "eval_sep", "cond_scales=[3]", "exp_scale=1")
    row = evaluate(eval_cfg)["sweep"][0]
    bundle = SCDPipeline.from_pretrained(run / "export", generator=None, device="cpu")
    world = AttributeWorld(**bundle.config["extra"]["world"])
    held_out, reference = evaluation_sets(world, 16, eval_cfg.sample_seed)
    captions = held_out.first_captions()
    codes = bundle.sample(captions, held_out.expressions, num_samples=16, text_scale=3, exp_scale=1, steps=2, seed=0)
    expected = world.metrics(codes, captions, held_out.expressions, reference)
    assert row["exp_scale"] == 1.0 and all(row[k] == pytest.approx(v) for k, v in expected.items())
    assert "text scale 3, expression scale 1" in (tmp_path / "eval_sep" / "results.md").read_text()
    with pytest.raises(ValueError, match="needs the expressions"):
        evaluate(OmegaConf.merge(eval_cfg, {"use_exp": False}))


def test_render_samples_need_a_world_that_renders(trained, tmp_path):
    run, _ = trained
    with pytest.raises(ValueError, match="render_samples needs a world that renders its codes"):
        evaluate(eval_config(run, tmp_path / "eval_r", "render_samples=4"))
    assert not (tmp_path / "eval_r").exists()
