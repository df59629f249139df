"""The paper's pipeline end to end, tiny, on the CPU, through the real commands' functions and Hydra configs.

world images (faceworld.datadir) -> Re-PoI training (inversion.train) -> encoding the images into a style-code
dataset (inversion.encode) -> SCD training on the inverted codes (scd.train, data=stylecodes) -> sampling from the
SCD export (scd.pipeline) -> rendering the samples with the world generator and reading their attributes with the
world's attribute classifier (faceworld.codes.WorldCodes.render_metrics).

Every stage is shrunk to a few steps, so this proves that the chain runs and that each artefact has the layout and
shape the next stage reads, not that anything learns: the learning figures come from GPU runs in docs/LEARNING.md.
"""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from faceworld.codes import WorldCodes
from faceworld.datadir import read_index, write_dataset
from inversion.checkpoint import load_encoder
from inversion.encode import encode
from inversion.train import train as train_encoder
from scd.pipeline import SCDPipeline
from scd.train import train as train_scd
from texface.captions import ATTRIBUTES
from texface.config import compose
from texface.stylecodes import StyleCodeSet, train_val_split

HEADS, VIEWS = 6, 2
ENCODER_RESOLUTION = 64
VAL_FRACTION = 0.2   # of the 12 inverted codes: 2 for validation, 10 for training
TINY_ENCODER = [
    "trainer=cpu", "logger=csv", "data.train_heads=2", "data.val_heads=1", "data.views=2",
    "data.render_resolution=32", f"data.resolution={ENCODER_RESOLUTION}", "data.batch_size=2", "data.num_workers=0",
    "data.device=cpu", "data.progress=false", f"model.encoder.image_resolution={ENCODER_RESOLUTION}",
    "model.encoder.backbone_units=[1,1,1,1]", "model.encoder.backbone_channels=[8,16,32,512]",
    "model.encoder.residual_widths=[8,8,16,16]", "+generator.neural_rendering_resolution=16",
    "trainer.max_steps=2", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
]
# experiment=faceworld_demo's SCD (world CLIP text tower, x0 objective, no clamp) on the inverted codes, with one
# tiny denoiser layer and batches of 4 (3 optimizer steps on the 10 training codes); the sample-image callback is
# left out (stage 5 renders samples) and the export callback (conf/callbacks/export_scd.yaml) writes <run>/export.
TINY_SCD = [
    "experiment=faceworld_demo", "data=stylecodes", f"data.val_fraction={VAL_FRACTION}", "data.batch_size=4",
    "data.num_workers=0", "data.pin_memory=false", "logger=csv", "~callbacks.sample_images",
    "model.denoiser.dim=32", "model.denoiser.depth=1", "model.denoiser.heads=2", "model.denoiser.ff_dim=64",
    "model.scheduler.warmup_steps=1", "model.val_sampling.num_samples=4", "model.val_sampling.steps=2",
    "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_world_images_to_encoder_to_codes_to_scd_to_rendered_samples(tmp_path):
    """The whole chain on 6 heads x 2 views of 32^2; see the module docstring.

    About 1 minute on 2 idle CPU cores, under 3 when they are shared; most of it is the Re-PoI training and the
    encoding, both rendering through the 128^2 world generator."""
    times = {}
    started = time.perf_counter()

    # 1. world images: an EG3D-format dataset with the heads' captions and expressions.
    world_dir = tmp_path / "world"
    summary = write_dataset(world_dir, heads=HEADS, views=VIEWS, resolution=32, seed=0, device="cpu",
                            progress=False)
    n = HEADS * VIEWS
    assert summary["images"] == n
    index = read_index(world_dir)
    assert len(index.names) == n and tuple(index.cameras.shape) == (n, 25)
    assert tuple(index.expressions.shape) == (n, 50) and len(index.captions) == n
    assert all((world_dir / name).is_file() for name in index.names)
    times["world"] = time.perf_counter() - started

    # 2. Re-PoI training on face-world renders of its own (written into its cache: 2 + 1 heads x 2 views), 2 steps
    #    of 2 images and one validation batch; its export is the encoder checkpoint.
    run = tmp_path / "inversion"
    metrics = train_encoder(compose("inversion", [f"paths.output_dir={run}", f"data.cache_dir={tmp_path / 'cache'}",
                                                  *TINY_ENCODER]))
    assert metrics and all(math.isfinite(float(v)) for v in metrics.values()), metrics
    ckpt = run / "export"
    assert (ckpt / "config.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    encoder = load_encoder(ckpt)
    assert encoder.image_resolution == ENCODER_RESOLUTION
    times["encoder"] = time.perf_counter() - started

    # 3. encoding the world images: one code per image, the dataset's own captions and expressions joined by name.
    codes_dir = tmp_path / "codes"
    result = encode(compose("encode", [f"ckpt={ckpt}", f"images={world_dir}", f"out={codes_dir}", "device=cpu",
                                       "progress=false", "batch_size=4", "+generator.neural_rendering_resolution=16",
                                       f"paths.output_dir={tmp_path / 'encode_run'}"]))
    assert (result["out"], result["images"], result["with_expression"], result["encoded"]) == (codes_dir, n, n, n)
    data = StyleCodeSet.load(codes_dir)
    assert len(data) == n and tuple(data.codes.shape) == (n, 14, 512) and bool(torch.isfinite(data.codes).all())
    assert data.ids == index.names and data.captions == index.captions
    assert torch.equal(data.expressions, index.expressions) and bool(data.has_exp.all())
    assert torch.equal(data.cameras, index.cameras)
    assert data.meta["source"] == "inversion.encode" and data.meta["encoder_ckpt"] == str(ckpt.resolve())
    times["encode"] = time.perf_counter() - started

    # 4. SCD training on the inverted codes (data=stylecodes), 3 steps; its export is the SCD checkpoint.
    scd_run = tmp_path / "scd"
    scd_metrics = train_scd(compose("train", [*TINY_SCD, f"data.data_dir={codes_dir}",
                                              f"paths.output_dir={scd_run}"]))
    for name in ("train/loss", "val/loss"):
        assert name in scd_metrics and math.isfinite(scd_metrics[name]), (name, scd_metrics)
    export = scd_run / "export"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    train_rows, val_rows = train_val_split(data.ids, val_fraction=VAL_FRACTION, seed=0)   # seed: data.split_seed
    assert len(train_rows) + len(val_rows) == n and val_rows
    config = json.loads((export / "config.json").read_text())
    assert config["extra"]["global_step"] == math.ceil(len(train_rows) / 4), config["extra"]
    times["scd"] = time.perf_counter() - started

    # 5. sampling from the export, then rendering with the world generator and reading the attributes back.
    #    The captions are the first ones of two captioned world heads (render_metrics parses their attributes).
    prompts = list(dict.fromkeys(c[0] for c in data.captions if c))[:2]
    assert len(prompts) == 2, data.captions
    pipeline = SCDPipeline.from_pretrained(export, generator=None, device="cpu")
    codes = pipeline.sample(prompts, None, num_samples=len(prompts), steps=5)
    assert tuple(codes.shape) == (len(prompts), 14, 512) and bool(torch.isfinite(codes).all())
    world = WorldCodes(seed=0, probe_heads=1024)
    scores = world.render_metrics(codes, prompts)
    for key in ("render_attr_acc/mean", "render_attr_acc/chance", "render_attr_acc_presence/mean",
                "render_attr_acc_presence/chance"):
        assert key in scores, (key, sorted(scores))
    for key, value in scores.items():
        assert key.startswith("render_attr_acc"), key
        assert 0.0 <= value <= 1.0, (key, value)   # also fails for NaN
    assert any(f"render_attr_acc/{a}" in scores for a in ATTRIBUTES), sorted(scores)
    times["sample+render"] = time.perf_counter() - started
    print({stage: round(t, 1) for stage, t in times.items()})
