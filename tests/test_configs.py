"""The Hydra configs compose, resolve and name importable targets (training: tests/scd/test_train.py)."""
from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from texface.config import compose

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [(group, p.stem) for group in ("trainer", "logger", "callbacks", "data", "debug", "model")
                 for p in sorted((CONF / group).glob("*.yaml"))]


def compose_train(*overrides: str, hydra_config: bool = False) -> DictConfig:
    return compose("train", ["paths.output_dir=/tmp/texface-test-run", *overrides], return_hydra_config=hydra_config)


def targets(node, key: str = "") -> list[tuple[str, str]]:
    """(config key, _target_) of every node that names a target."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((key, node._target_))
        for k in node:
            found += targets(node._get_node(k), f"{key}.{k}" if key else str(k))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += targets(item, f"{key}[{i}]")
    return found


def test_experiments_exist():
    assert {"text_cond", "text_only", "demo", "faceworld_demo", "world_clip", "world_classifier", "world_identity",
            "repoi"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("root", ["inversion", "inversion_evaluate", "invert", "encode"])
def test_inversion_roots_compose_and_targets_import(root):
    required = {"inversion_evaluate": ["ckpt=/x"], "invert": ["ckpt=/x", "image=/x.png"],
                "encode": ["ckpt=/x", "images=/x", "out=/y"]}.get(root, [])
    cfg = compose(root, ["paths.output_dir=/tmp/texface-test-run", *required])
    OmegaConf.to_container(cfg, resolve=True)
    for key, target in targets(cfg):
        assert hydra.utils.get_object(target) is not None, f"{key}._target_ = {target} does not import"


def test_inversion_defaults_are_the_face_world_and_repoi_the_paper():
    cfg = compose("inversion", ["paths.output_dir=/tmp/texface-test-run"])
    assert cfg.data._target_ == "inversion.data.FaceWorldData" and cfg.generator.preset == "world"
    assert list(cfg.model.encoder.backbone_units) == [3, 4, 14, 3] and cfg.model.lpips is None
    paper = compose("inversion", ["paths.output_dir=/tmp/texface-test-run", "experiment=repoi"])
    assert paper.data._target_ == "inversion.data.EG3DData" and paper.generator.preset == "ffhq512"
    assert paper.model.identity.kind == "arcface" and paper.model.weights.lpips > 0


def test_fit_composes_the_world_generator():
    cfg = compose("fit", ["paths.output_dir=/tmp/texface-test-run"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.model.generator.z_dim == 82 and cfg.data._target_ == "faceworld.views.FaceWorldViews"
    assert cfg.callbacks.model_checkpoint.every_n_train_steps == 500


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_resolves_and_targets_import(experiment):
    # Face-world experiments belong to `python -m faceworld.fit` (conf/fit.yaml), repoi to inversion.train
    # (conf/inversion.yaml), the others to scd.train.
    primary = "fit" if experiment.startswith("world_") else "inversion" if experiment == "repoi" else "train"
    cfg = compose(primary, ["paths.output_dir=/tmp/texface-test-run", f"experiment={experiment}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.task_name == experiment
    for key, target in targets(cfg):
        assert hydra.utils.get_object(target) is not None, f"{key}._target_ = {target} does not import"


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_group_option_composes(group, option):
    cfg = compose_train(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)
    for key, target in targets(cfg):
        assert hydra.utils.get_object(target) is not None, f"{key}._target_ = {target} does not import"


def test_paper_setting():
    cfg = compose_train("experiment=text_cond")
    den = cfg.model.denoiser
    assert (den.dim, den.depth, den.heads, den.ff_dim, den.dropout) == (512, 4, 8, 2048, 0.1)
    assert (den.text_dim, den.text_len, den.exp_dim, den.n_tokens, den.code_dim) == (512, 77, 50, 14, 512)
    assert cfg.model.text_encoder._target_ == "scd.text.TextEncoder.from_pretrained"
    assert "path" in cfg.model.text_encoder
    assert cfg.model.text_drop_prob == 0.5 and cfg.model.exp_drop_prob == 0.5
    diff = cfg.model.diffusion
    assert (diff.timesteps, diff.schedule, diff.objective, diff.loss_type, diff.loss_weight) == (
        1000, "cosine", "v", "l1", "alpha_bar")
    assert cfg.data.data_dir is not None and cfg.data.get("world") is None
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.gradient_clip_val > 0
    assert cfg.model.optimizer._partial_ and cfg.model.scheduler._partial_


def test_text_only_drops_every_expression_and_is_otherwise_text_cond():
    text_cond = OmegaConf.to_container(compose_train("experiment=text_cond"), resolve=True)
    text_only = OmegaConf.to_container(compose_train("experiment=text_only"), resolve=True)
    assert text_only["model"]["exp_drop_prob"] == 1.0
    assert text_only["model"]["text_drop_prob"] == 0.5
    for cfg in (text_cond, text_only):
        del cfg["task_name"], cfg["tags"], cfg["model"]["exp_drop_prob"]
    assert text_only == text_cond


def test_demo_is_small_and_synthetic():
    cfg = compose_train("experiment=demo")
    assert cfg.data.world._target_ == "scd.synthetic.AttributeWorld"
    assert cfg.model.text_encoder._target_ == "scd.text.TextEncoder.from_config"
    assert cfg.model.denoiser.text_dim == cfg.model.text_encoder.config.hidden_size
    assert cfg.model.denoiser.dim == 512 and cfg.model.denoiser.depth <= 2
    assert cfg.model.text_encoder.config.hidden_size <= 64
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.callbacks.export_scd.dtype == "float16" and cfg.callbacks.export_scd.ema_only


def test_ddp_and_gpu_trainers():
    ddp = compose_train("trainer=ddp").trainer
    assert (ddp.strategy, ddp.devices, ddp.accelerator, ddp.precision) == ("ddp", "auto", "gpu", "bf16-mixed")
    gpu = compose_train("experiment=demo", "trainer=gpu").trainer
    assert gpu.precision == "bf16-mixed" and gpu.accelerator == "gpu"


def test_lr_sweep_is_a_basic_sweeper_multirun():
    cfg = compose_train("experiment=demo", "hparams_search=lr", hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params
    assert cfg.optimized_metric == "val/loss"
