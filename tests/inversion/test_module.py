"""InversionModule: the objective trains, frozen networks stay out of checkpoints, missing networks are config
errors; inversion.train and inversion.evaluate run end to end on a tiny face world (CPU)."""
from __future__ import annotations

import json

import pytest
import torch

from eg3d.checkpoint import build_generator
from faceworld.world import FaceWorld
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.encoder import RePoI
from inversion.losses import build_identity
from inversion.module import InversionModule
from texface.config import compose
from texface.errors import ConfigError

SMALL = dict(image_resolution=64, backbone_units=(1, 1, 1, 1), backbone_channels=(8, 16, 32, 512),
             residual_widths=(8, 8, 16, 16))
TINY_RUN = ["trainer=cpu", "logger=csv", "data.train_heads=4", "data.val_heads=2", "data.views=2",
            "data.render_resolution=32", "data.resolution=64", "data.batch_size=4", "data.num_workers=0",
            "data.device=cpu", "data.progress=false", "model.encoder.image_resolution=64",
            "model.encoder.backbone_units=[1,1,1,1]", "model.encoder.backbone_channels=[8,16,32,512]",
            "model.encoder.residual_widths=[8,8,16,16]", "+generator.neural_rendering_resolution=16",
            "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0"]


@pytest.fixture(scope="module")
def generator():
    return build_generator(preset="world", neural_rendering_resolution=16)


@pytest.fixture(scope="module")
def batch():
    world = FaceWorld()
    latent = world.latents(2, seed=5)
    cam = world.sample_cameras(2, seed=5)
    out = world.render(world.params(latent), cam, 64)
    return {"image": out["image"], "camera": cam, "mask": out["mask"],
            "latent": latent}


def module(generator, **kwargs) -> InversionModule:
    torch.manual_seed(0)
    return InversionModule(encoder=RePoI(**SMALL, dropout=0.0), generator=generator,
                           optimizer=lambda params: torch.optim.Adam(params, lr=3e-4), **kwargs)


def test_a_few_steps_lower_the_loss(generator, batch):
    model = module(generator, weights={"mse": 1.0, "depth": 1.0})
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=3e-5)
    losses = []
    for _ in range(6):
        out = model.encoder(batch["image"], batch["camera"], generator, deterministic=True)
        terms = model.losses(batch, out)
        loss = sum(model.weights[k] * v for k, v in terms.items())
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters() if p.grad is not None)
        torch.nn.utils.clip_grad_norm_(model.encoder.parameters(), 1.0)  # as the trainer configs do
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_query_starts_at_w_avg(generator):
    model = module(generator)
    assert torch.allclose(model.encoder.w_plus_query[0, 3], generator.backbone.mapping.w_avg)


def test_frozen_networks_stay_out_of_checkpoints(generator):
    model = module(generator, weights={"id": 0.1}, identity=build_identity("world"))
    state = model.state_dict()
    assert state and all(k.startswith("encoder.") for k in state)
    fresh = module(generator, weights={"id": 0.1}, identity=build_identity("world"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.encoder.w_plus_query, model.encoder.w_plus_query)
    with pytest.raises(RuntimeError, match="unexpected"):
        fresh.load_state_dict({**state, "encoder.extra": torch.zeros(1)})
    model.train()
    assert not model.generator.training and not model.identity.training and model.encoder.training


@pytest.mark.parametrize(("weights", "message"), [({"lpips": 0.8}, "no LPIPS network"),
                                                  ({"id": 0.1}, "no identity network"),
                                                  ({"novel": 0.1}, "no identity network"),
                                                  ({"pixel": 1.0}, "unknown loss terms")])
def test_a_weighted_term_without_its_network_is_a_config_error(generator, weights, message):
    with pytest.raises(ConfigError, match=message):
        module(generator, weights=weights)


def test_depth_term_needs_masks(generator, batch):
    model = module(generator, weights={"depth": 1.0})
    out = model.encoder(batch["image"], batch["camera"], generator)
    with pytest.raises(ConfigError, match="needs head masks"):
        model.losses({"image": batch["image"], "camera": batch["camera"]}, out)


def test_train_then_evaluate_on_a_tiny_face_world(tmp_path):
    from inversion.evaluate import evaluate
    from inversion.train import train

    cfg = compose("inversion", [f"paths.output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                                *TINY_RUN])
    metrics = train(cfg)
    assert {"train/loss", "val/mse", "val/psnr", "val/ssim", "val/code_dist", "val/id_sim"} <= set(metrics)
    export = tmp_path / "run" / "export"
    assert (tmp_path / "run" / "inversions").is_dir()
    encoder = load_encoder(export)
    assert encoder.image_resolution == 64
    assert encoder_generator(export).neural_rendering_resolution == 16
    results = evaluate(compose("inversion_evaluate", [
        f"ckpt={export}", f"paths.output_dir={tmp_path / 'eval'}", f"world.cache_dir={tmp_path / 'cache'}",
        "world.heads=2", "world.views=1", "world.render_resolution=32", "device=cpu", "batch_size=2"]))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["metrics"] == pytest.approx(results["metrics"])
    for key in ("refine/mse", "coarse/mse", "w_avg/mse", "refine/id", "code_dist", "code_dist_w_avg", "novel/psnr"):
        assert key in written["metrics"]
