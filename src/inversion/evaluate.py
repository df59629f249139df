"""Evaluate a Re-PoI encoder: ``python -m inversion.evaluate ckpt=<run>/export [images=DIR]``.

The official protocol on every image: MSE on [-1, 1] images, LPIPS (AlexNet, when ``lpips`` names the weight
files) and ID = 1 - cos of identity embeddings (ArcFace from a local file, or in the face world its identity
network), for the refined reconstruction; also PSNR and SSIM, the coarse stage's MSE, and the ``w_avg`` baseline
(the generator's average code rendered at each image's camera).

``images`` is an EG3D-format dataset or a folder of png + npy cameras. Without it, the encoder is measured on
held-out face-world heads (a sample seed no training split uses) and three more figures come from the world's
ground truth: the RMS distance of the codes to the true codes (``G.mapping`` of each head latent) beside the same
distance for ``w_avg``, and the PSNR of novel views (the refined codes rendered ``novel_yaw`` radians to either
side of the input camera) against the procedural renders of the same head from those cameras.

Writes ``metrics.json`` (means over the images, with the settings) and sends the means to the configured loggers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from eg3d.camera import rotate_about_pivot
from faceworld.datadir import ensure_dataset
from faceworld.generator_fit import head_codes, psnr
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.data import EG3DImages, open_images
from inversion.module import code_distances, image_metrics
from texface.atomic import write_text
from texface.cli import hydra_command
from texface.config import instantiate
from texface.training import instantiate_all


def evaluation_images(cfg: DictConfig, resolution: int):
    """The images to measure on: ``cfg.images``, or held-out face-world heads (written once into the cache)."""
    if cfg.images is not None:
        return open_images(cfg.images, resolution=resolution), None
    world = instantiate(cfg.world.world)
    root = ensure_dataset(cfg.world.cache_dir, cfg.world.heads, cfg.world.views, cfg.world.render_resolution,
                          cfg.world.seed, world=world, device=cfg.device)
    return EG3DImages(root, resolution=resolution), world


@torch.no_grad()
def evaluate(cfg: DictConfig) -> dict:
    """Measure the encoder described by ``cfg`` (conf/inversion_evaluate.yaml); write and return the means."""
    print(OmegaConf.to_yaml(cfg, resolve=True), flush=True)
    device = torch.device(cfg.device)
    encoder = load_encoder(cfg.ckpt, map_location=device)
    generator = encoder_generator(cfg.ckpt, cfg.generator).to(device)
    lpips = None if cfg.lpips is None else instantiate(cfg.lpips).to(device)
    identity = None if cfg.identity is None else instantiate(cfg.identity).to(device)
    images, world = evaluation_images(cfg, encoder.image_resolution)
    loader = DataLoader(images, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    w_avg = generator.backbone.mapping.w_avg[None, None]
    pivot = generator.rendering_kwargs["avg_camera_pivot"]
    sums: dict[str, float] = {}
    count = 0
    for batch in tqdm(loader, desc="inverting", unit="batch"):
        x, cam = batch["image"].to(device), batch["camera"].to(device)
        out = encoder(x, cam, generator, deterministic=True)
        metrics = {f"refine/{k}": v for k, v in image_metrics(out["refine"], x, lpips=lpips, identity=identity).items()}
        metrics.update({f"coarse/{k}": v for k, v in image_metrics(out["coarse"], x).items()})
        average = encoder.render(generator, w_avg.expand(len(x), 14, -1), cam, deterministic=True)["image"]
        metrics.update({f"w_avg/{k}": v for k, v in image_metrics(average, x, lpips=lpips, identity=identity).items()})
        if world is not None:
            latent = batch["latent"].to(device)
            metrics.update(code_distances(out["codes"], head_codes(generator, latent), w_avg))
            metrics.update(novel_view_psnr(encoder, generator, world, out["codes"], latent, cam, cfg.novel_yaw,
                                           pivot, w_avg))
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
        count += len(x)
    means = {key: value / count for key, value in sorted(sums.items())}
    for stage in ("refine", "coarse", "w_avg"):
        if f"{stage}/id_sim" in means:  # the official figure is the ID loss, 1 - cos
            means[f"{stage}/id"] = 1.0 - means[f"{stage}/id_sim"]
    means["mse_ratio_w_avg_to_refine"] = means["w_avg/mse"] / max(means["refine/mse"], 1e-12)
    results = {"ckpt": str(cfg.ckpt), "images": count, "metrics": means,
               "settings": OmegaConf.to_container(cfg, resolve=True)}
    out_dir = Path(cfg.out_dir)
    write_text(out_dir / "metrics.json", json.dumps(results, indent=2))
    for logger in instantiate_all(cfg.get("logger")):
        logger.log_metrics({f"eval/{k}": v for k, v in means.items()})
        logger.finalize("success")
    for key, value in means.items():
        print(f"{key:32s} {value:.5f}", flush=True)
    print(f"metrics: {out_dir / 'metrics.json'}", flush=True)
    return results


def novel_view_psnr(encoder, generator, world, codes, latent, cam, yaw: float, pivot, w_avg) -> dict:
    """PSNR (B,) of the codes' renders ``yaw`` radians to each side against the world's renders of the true heads
    from those cameras (at the generator's output size), and the same for ``w_avg``."""
    params = world.params(latent)
    scores = {"novel/psnr": 0.0, "novel/psnr_w_avg": 0.0}
    for side in (-yaw, yaw):
        moved = rotate_about_pivot(cam, side, pivot)
        ours = encoder.render(generator, codes, moved, deterministic=True)["render"]
        truth = world.render(params, moved, ours.shape[-1], device=codes.device)["image"]
        baseline = encoder.render(generator, w_avg.expand_as(codes), moved, deterministic=True)["render"]
        scores["novel/psnr"] = scores["novel/psnr"] + psnr(ours, truth) / 2
        scores["novel/psnr_w_avg"] = scores["novel/psnr_w_avg"] + psnr(baseline, truth) / 2
    return scores


main = hydra_command("inversion_evaluate", evaluate)

if __name__ == "__main__":
    main()
