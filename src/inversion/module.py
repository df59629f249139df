"""Training the Re-PoI encoder against a frozen generator: :class:`InversionModule` (LightningModule).

Per batch of images ``x`` with cameras ``cam`` the encoder gives coarse and refined codes and their renders at
``cam`` (:meth:`inversion.encoder.RePoI.forward`). The loss is a weighted sum of

- ``mse``, ``lpips``, ``id``: pixel L2, LPIPS and identity (1 - cos) between each render and ``x``, the coarse
  render weighted by ``coarse_weight`` so that both stages learn (the refined one is then measured against it);
- ``w_norm``: the distance of the codes from the generator's ``w_avg`` (not squared; the coarse codes weighted by
  ``coarse_weight``): it keeps the codes in the generator's W, where renders stay sharp from every camera;
- ``depth``: the rendered depth of background pixels pulled to a constant (the batch's ``mask`` says where the
  head is);
- ``mirror``: the refined codes rendered from the mirrored camera against the mirrored image (faces are nearly
  symmetric);
- ``novel``: the identity of the refined codes rendered ``novel_yaw`` radians to either side against ``x``.

A term with weight 0 is not computed; a term with a positive weight whose network is missing (``lpips``,
``identity``) is a ConfigError at construction, never a silent zero. The generator, LPIPS and identity networks
are frozen and are not saved in Lightning checkpoints (they come from their own files); ``export`` writes an
encoder checkpoint (:mod:`inversion.checkpoint`) that records how to rebuild the generator.

Validation logs ``val/mse``, ``val/psnr``, ``val/ssim`` (refined, on [-1, 1] images), ``val/coarse_mse``,
``val/lpips`` and ``val/id_sim`` when those networks are present, and in the face world (batches with ``latent``)
``val/code_dist`` (RMS distance of the refined codes to the true codes) with ``val/code_dist_w_avg`` (the same for
``w_avg``, the baseline); a grid input | coarse | refined | novel views (yaw -+ ``novel_yaw``) goes to the run
folder and the image loggers.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eg3d.camera import mirror_labels, rotate_about_pivot
from eg3d.generator import TriPlaneGenerator
from faceworld.generator_fit import head_codes, psnr
from inversion.checkpoint import save_encoder
from inversion.encoder import RePoI, load_backbone_weights
from inversion.losses import background_depth, identity_loss, pixel_mse, w_norm
from texface.errors import ConfigError
from texface.media import tile, to_uint8
from texface.training import log_image, optimizer_config

LOSS_TERMS = ("mse", "lpips", "id", "w_norm", "depth", "mirror", "novel")
FROZEN = ("generator", "lpips", "identity")  # sub-modules that come from their own files, never trained here


class InversionModule(L.LightningModule):
    """Trains ``encoder`` to invert images into ``generator``'s W+ (see the module docstring).

    Args:
        encoder: the Re-PoI encoder to train.
        generator: the frozen generator (built with :func:`eg3d.checkpoint.build_generator`, whose
            ``build_config`` the export records).
        optimizer: a factory ``optimizer(params) -> Optimizer`` (a ``_partial_`` config).
        scheduler: a factory ``scheduler(optimizer, total_steps=...)`` stepped every step, or None.
        weights: loss weight per term of LOSS_TERMS (missing terms: 0).
        coarse_weight: weight of the coarse render's image terms relative to the refined one's.
        lpips: an LPIPS network (``texface.metrics.lpips.LPIPS``) or None.
        identity: an identity network (ArcFace, or the face world's identity encoder) or None.
        depth_target: the depth background pixels are pulled to (2.7729 in TEx-Face: inside the ray range).
        min_opacity: background rays with less opacity than this are left out of the depth term.
        novel_yaw: yaw offset (radians) of the novel views of the ``novel`` term and of the validation grid.
        tf32: TF32 matrix products and convolutions on CUDA while training.
        val_grid: images shown in the validation grid.
        backbone_weights: a local ArcFace IR-SE50 file the encoder's trunk starts from, or None.
        query_init: the learnable W+ query starts at the generator's ``w_avg`` (``w_avg``) or keeps the official
            standard-normal draw (``random``); a resumed run loads its own.
    """

    def __init__(self, *, encoder: RePoI, generator: TriPlaneGenerator, optimizer: Callable,
                 scheduler: Callable | None = None, weights: dict[str, float] | None = None,
                 coarse_weight: float = 1.0, lpips: nn.Module | None = None, identity: nn.Module | None = None,
                 depth_target: float = 2.7729, min_opacity: float = 0.01, novel_yaw: float = 0.4, tf32: bool = True, val_grid: int = 6,
                 backbone_weights: str | os.PathLike | None = None, query_init: str = "w_avg"):
        super().__init__()
        if backbone_weights is not None:
            load_backbone_weights(encoder, backbone_weights)
        if query_init not in ("w_avg", "random"):
            raise ConfigError(f"query_init must be 'w_avg' or 'random', got {query_init!r}")
        if query_init == "w_avg":  # the first render starts at the average head instead of far outside W
            with torch.no_grad():
                encoder.w_plus_query.copy_(generator.backbone.mapping.w_avg.expand_as(encoder.w_plus_query))
        weights = {k: float(v) for k, v in dict(weights or {}).items()}
        unknown = set(weights) - set(LOSS_TERMS)
        if unknown:
            raise ConfigError(f"unknown loss terms {sorted(unknown)}; choose from {', '.join(LOSS_TERMS)}")
        self.weights = {term: weights.get(term, 0.0) for term in LOSS_TERMS}
        if self.weights["lpips"] > 0 and lpips is None:
            raise ConfigError("the lpips loss has a positive weight but no LPIPS network: set model.lpips "
                              "(local AlexNet/VGG and LPIPS head files) or model.weights.lpips=0")
        for term in ("id", "novel"):
            if self.weights[term] > 0 and identity is None:
                raise ConfigError(f"the {term} loss has a positive weight but no identity network: set "
                                  f"model.identity (ArcFace IR-SE50 file, or the face world's) or "
                                  f"model.weights.{term}=0")
        if not isinstance(getattr(generator, "build_config", None), dict):
            raise ConfigError("the generator must come from eg3d.checkpoint.build_generator (its build_config is "
                              "recorded in the encoder checkpoint)")
        self.encoder, self.generator, self.lpips, self.identity = encoder, generator, lpips, identity
        for frozen in (generator, lpips, identity):
            if frozen is not None:
                frozen.eval().requires_grad_(False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.coarse_weight, self.depth_target = float(coarse_weight), float(depth_target)
        self.min_opacity = float(min_opacity)
        self.novel_yaw, self.tf32, self.val_grid = float(novel_yaw), bool(tf32), int(val_grid)
        self._saved_tf32 = None

    # ---- frozen parts stay out of checkpoints and out of training mode -------------------------------------
    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        frozen = tuple(f"{prefix}{name}." for name in FROZEN)
        return type(state)((k, v) for k, v in state.items() if not k.startswith(frozen))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(tuple(f"{n}." for n in FROZEN))]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"inversion checkpoint does not fit: missing {missing[:8]}, unexpected "
                               f"{result.unexpected_keys[:8]}")
        return result

    def train(self, mode: bool = True):
        super().train(mode)
        for name in FROZEN:
            if getattr(self, name) is not None:
                getattr(self, name).eval()
        return self

    def on_fit_start(self) -> None:
        if self.tf32 and self.device.type == "cuda":
            self._saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def on_fit_end(self) -> None:
        if self._saved_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved_tf32

    # ---- the objective ---------------------------------------------------------------------------------------
    def novel_view(self, cam: Tensor, yaw: float) -> Tensor:
        """Cameras ``cam`` moved by ``yaw`` about the generator's pivot."""
        return rotate_about_pivot(cam, yaw, self.generator.rendering_kwargs["avg_camera_pivot"])

    @property
    def w_avg(self) -> Tensor:  # (1, 1, 512): broadcasts over the 14 rows
        return self.generator.backbone.mapping.w_avg[None, None]

    def image_terms(self, render: Tensor, x: Tensor) -> dict[str, Tensor]:
        terms = {"mse": pixel_mse(render, x)}
        if self.weights["lpips"] > 0:
            terms["lpips"] = self.lpips(render, x).mean()
        if self.weights["id"] > 0:
            terms["id"] = identity_loss(self.identity, render, x)
        return terms

    def losses(self, batch: dict, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every weighted term of the batch (unweighted values), refined and coarse image terms combined."""
        x, cam = batch["image"], batch["camera"]
        refined, coarse = self.image_terms(out["refine"], x), self.image_terms(out["coarse"], x)
        terms = {k: refined[k] + self.coarse_weight * coarse[k] for k in refined}
        if self.weights["w_norm"] > 0:  # both stages, as TEx-Face's criteria compute it for both
            terms["w_norm"] = (w_norm(out["codes"], self.w_avg)
                               + self.coarse_weight * w_norm(out["codes_coarse"], self.w_avg))
        if self.weights["depth"] > 0:
            if "mask" not in batch:
                raise ConfigError("the depth loss needs head masks in the batches (face-world data has them); set "
                                  "model.weights.depth=0 for data without masks")
            # Rays that hold (almost) nothing have no floating geometry to move, and their depth's gradient is
            # ill-conditioned (depth = sum(w d) / sum(w)): they count as foreground here.
            depth = out["refine_depth"]
            head = F.interpolate(batch["mask"].float(), size=depth.shape[-2:], mode="nearest")
            keep_out = torch.maximum(head, (out["refine_opacity"] < self.min_opacity).float())
            terms["depth"] = background_depth(depth, keep_out, target=self.depth_target)
        if self.weights["mirror"] > 0:
            mirrored = self.encoder.render(self.generator, out["codes"], mirror_labels(cam))["image"]
            terms["mirror"] = pixel_mse(mirrored, x.flip(-1))
        if self.weights["novel"] > 0:
            side = 1.0 if self.global_step % 2 == 0 else -1.0  # alternate sides: one extra render per step
            novel = self.encoder.render(self.generator, out["codes"], self.novel_view(cam, side * self.novel_yaw))
            terms["novel"] = identity_loss(self.identity, novel["image"], x)
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        out = self.encoder(batch["image"], batch["camera"], self.generator)
        terms = self.losses(batch, out)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        n = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=n)
        return loss

    def configure_optimizers(self) -> dict:
        return optimizer_config(self.encoder.parameters(), self.optimizer_factory, self.scheduler_factory,
                                self.trainer)

    # ---- validation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x, cam = batch["image"], batch["camera"]
        out = self.encoder(x, cam, self.generator, deterministic=True)
        metrics = image_metrics(out["refine"], x, lpips=self.lpips, identity=self.identity)
        metrics["coarse_mse"] = mse_per_image(out["coarse"], x)
        if "latent" in batch:
            metrics.update(code_distances(out["codes"], head_codes(self.generator, batch["latent"]), self.w_avg))
        self.log_dict({f"val/{k}": v.mean() for k, v in metrics.items()}, batch_size=len(x), sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero:
            self.log_grid(x, cam, out)

    def log_grid(self, x: Tensor, cam: Tensor, out: dict[str, Tensor]) -> None:
        """Rows: input | coarse | refined | refined from yaw - novel_yaw | from yaw + novel_yaw."""
        k = min(self.val_grid, len(x))
        views = [self.encoder.render(self.generator, out["codes"][:k], self.novel_view(cam[:k], yaw),
                                     deterministic=True)["image"] for yaw in (-self.novel_yaw, self.novel_yaw)]
        rows = torch.cat([x[:k], out["coarse"][:k], out["refine"][:k], *views])
        grid = tile(to_uint8(rows.float()), ncols=k)
        log_image(self.trainer, "val/inversions", grid,
                  Path(self.trainer.default_root_dir) / "inversions" / f"step_{self.global_step:07d}.png",
                  caption="input | coarse | refined | novel views")

    def export(self, path: str | os.PathLike, *, dtype: str = "float32", extra: dict | None = None) -> Path:
        """Write the encoder checkpoint (float32 or float16 tensors) with the generator's build call."""
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}")
        return save_encoder(self.encoder, path, generator=self.generator.build_config, extra=extra,
                            dtype=getattr(torch, dtype))


def mse_per_image(render: Tensor, x: Tensor) -> Tensor:
    """Mean squared error (B,) of each render against its image, in float32."""
    return (render.float() - x.float()).square().flatten(1).mean(1)


def image_metrics(render: Tensor, x: Tensor, *, lpips: nn.Module | None = None,
                  identity: nn.Module | None = None) -> dict[str, Tensor]:
    """Per-image reconstruction metrics (B,) of renders against images in [-1, 1]: ``mse``, ``psnr``, ``ssim``
    (torchmetrics, data range 2), ``lpips`` and ``id_sim`` (cosine of identity embeddings) when the networks are
    given. The official protocol's figures are ``mse``, ``lpips`` (AlexNet) and 1 - ``id_sim``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from inversion.losses import embedding

    render, x = render.float(), x.float()
    metrics = {"mse": mse_per_image(render, x), "psnr": psnr(render, x),
               "ssim": structural_similarity_index_measure(render, x, data_range=2.0, reduction="none")}
    if lpips is not None:
        metrics["lpips"] = lpips(render, x)
    if identity is not None:
        metrics["id_sim"] = (embedding(identity, render) * embedding(identity, x)).sum(-1)
    return metrics


def code_distances(codes: Tensor, truth: Tensor, w_avg: Tensor) -> dict[str, Tensor]:
    """RMS distance per sample (B,) of codes (B, 14, 512) to the true codes, and of w_avg to them (the baseline)."""
    rms = lambda a: a.float().square().flatten(1).mean(1).sqrt()  # noqa: E731
    return {"code_dist": rms(codes - truth), "code_dist_w_avg": rms(w_avg.expand_as(truth) - truth)}
