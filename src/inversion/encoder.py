"""The Re-PoI encoder of TEx-Face: an image and its camera -> absolute W+ codes of a frozen EG3D generator.

    x (B,3,S,S) in [-1,1], cam (B,25)
    cam --cam_proj--> cam_emb (B,512)
    x --backbone (IR-SE50 + FPN)--> c3 (B,512,S/16²), p2 (S/8²), p1 (S/4²)
    w_plus_query (1,14,512) --pose_mapping over c3, p2, p1 (camera-FiLM rotary decoder layers)--> codes_coarse
    generator.synthesis(codes_coarse, cam) --face_pool--> coarse (B,3,S,S)
    [x, coarse] --residual_encoder--> r16, r32, r64 --pose_mapping_residual (query codes_coarse)--> codes_res
    codes = codes_coarse + codes_res; generator.synthesis(codes, cam) --face_pool--> refine

The residual mapper's output still carries its query through the residual stream, so ``codes`` is
``2 * codes_coarse`` plus the corrections: this is the official model and its released weights rely on it.

Module and parameter names are the official ones (``backbone``, ``pose_mapping.transformerlayer_coarse``, ...), so
a released ``state_dict`` without its ``decoder.*`` entries loads with ``strict=True`` (:mod:`inversion.convert`).
The generator is not part of the encoder: it is frozen, built once from its own checkpoint and passed to
:meth:`RePoI.forward`, so our checkpoints hold only what trains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from texface.irse import IR_CHANNELS, IR_DEPTHS, IRTrunk, IRUnit

W_DIM = 512
NUM_WS = 14
CAMERA_DIM = 25
HEADS = 4
FF_DIM = 1024
ROTARY_BASE = 10000
RESIDUAL_WIDTHS = (32, 64, 128, 256)


def upsample_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to ``like``'s size with align_corners=True (the official FPNs' choice)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class RotaryEmbedding(nn.Module):
    """Rotates adjacent feature pairs (t[2i], t[2i+1]) of token n by angle n * freqs[i] (queries and keys only)."""

    def __init__(self, dim: int = W_DIM):
        super().__init__()
        self.register_buffer("freqs", 1.0 / ROTARY_BASE ** (torch.arange(0, dim, 2).float() / dim))

    def forward(self, t: Tensor) -> Tensor:  # (B, N, dim) -> (B, N, dim)
        angle = torch.arange(t.shape[1], device=t.device, dtype=self.freqs.dtype)[:, None] * self.freqs  # (N, dim/2)
        cos, sin = angle.cos().to(t.dtype), angle.sin().to(t.dtype)
        even, odd = t[..., 0::2], t[..., 1::2]
        return torch.stack((even * cos - odd * sin, odd * cos + even * sin), -1).flatten(-2)


class FiLM(nn.Module):
    """(1 + scale) * h + shift, with [scale | shift] = Linear(Mish(cam_emb)) broadcast over the tokens."""

    def __init__(self, dim: int = W_DIM):
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def forward(self, h: Tensor, cam_emb: Tensor) -> Tensor:  # h (B, N, dim), cam_emb (B, dim)
        scale, shift = self.block(cam_emb)[:, None].chunk(2, dim=-1)
        return (1 + scale) * h + shift


class CameraDecoderLayer(nn.Module):
    """Pre-LN transformer decoder layer whose three branches are FiLM-modulated by the camera embedding:

        x += FiLM1(SelfAttn(q=k=rot(LN1 x), v=LN1 x))
        x += FiLM2(CrossAttn(q=rot(LN2 x), k=rot(mem), v=mem))
        x += FiLM3(FF(LN3 x)),  FF = linear2(GELU(linear1))
    """

    def __init__(self, rotary: RotaryEmbedding, *, dim: int = W_DIM, heads: int = HEADS, ff_dim: int = FF_DIM,
                 dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(dim, ff_dim), nn.Linear(ff_dim, dim)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim, eps=1e-5) for _ in range(3))
        self.film1, self.film2, self.film3 = FiLM(dim), FiLM(dim), FiLM(dim)
        self.dropout = nn.Dropout(dropout)
        self.rotary = rotary

    def forward(self, x: Tensor, memory: Tensor, cam_emb: Tensor) -> Tensor:  # x (B,14,dim), memory (B,HW,dim)
        h = self.norm1(x)
        q = self.rotary(h)
        x = x + self.film1(self.dropout(self.self_attn(q, q, h, need_weights=False)[0]), cam_emb)
        h = self.norm2(x)
        attended = self.multihead_attn(self.rotary(h), self.rotary(memory), memory, need_weights=False)[0]
        x = x + self.film2(self.dropout(attended), cam_emb)
        h = self.linear2(self.dropout(F.gelu(self.linear1(self.norm3(x)))))
        return x + self.film3(self.dropout(h), cam_emb)


class PoseMapping(nn.Module):
    """Three camera decoder layers applied in turn over the coarse, medium and fine feature maps (one shared
    rotary embedding); the query is (B, 14, 512) W+ rows, the output the same shape."""

    def __init__(self, *, dropout: float = 0.1):
        super().__init__()
        rotary = RotaryEmbedding()
        self.transformerlayer_coarse = CameraDecoderLayer(rotary, dropout=dropout)
        self.transformerlayer_medium = CameraDecoderLayer(rotary, dropout=dropout)
        self.transformerlayer_fine = CameraDecoderLayer(rotary, dropout=dropout)

    def forward(self, maps: tuple[Tensor, Tensor, Tensor], query: Tensor, cam_emb: Tensor) -> Tensor:
        layers = (self.transformerlayer_coarse, self.transformerlayer_medium, self.transformerlayer_fine)
        for layer, feature_map in zip(layers, maps):
            query = layer(query, feature_map.flatten(2).transpose(1, 2), cam_emb)  # token h*W + w
        return query


class FeaturePyramid(IRTrunk):
    """The IR-SE trunk with a two-level FPN (pSp's GradualStyleEncoder body without its style heads):
    c3 = last stage, p2 = up(c3) + latlayer1(stage 3), p1 = up(p2) + latlayer2(stage 2); all W_DIM channels."""

    def __init__(self, units: tuple[int, ...] = IR_DEPTHS[50], channels: tuple[int, ...] = IR_CHANNELS):
        if len(units) != 4 or channels[-1] != W_DIM:
            raise ValueError(f"the Re-PoI backbone needs 4 stages ending in {W_DIM} channels, got units "
                             f"{tuple(units)} and channels {tuple(channels)}")
        super().__init__(units, channels)
        self.latlayer1 = nn.Conv2d(channels[2], W_DIM, 1)
        self.latlayer2 = nn.Conv2d(channels[1], W_DIM, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        _, c1, c2, c3 = super().forward(x)
        p2 = upsample_to(c3, c2) + self.latlayer1(c2)
        p1 = upsample_to(p2, c1) + self.latlayer2(c1)
        return c3, p2, p1


class DoubleUnit(nn.Module):
    """Two IR units (no squeeze-excitation): in -> out -> out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.double_conv = nn.Sequential(IRUnit(in_channels, out_channels, squeeze_excite=False),
                                         IRUnit(out_channels, out_channels, squeeze_excite=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max pool, then a :class:`DoubleUnit`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleUnit(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class ResidualEncoder(nn.Module):
    """[image, first render] (B, 6, S, S) -> three W_DIM-channel maps at S/16, S/8 and S/4 (a UNet-style encoder of
    IR units with a top-down FPN), the memories of the residual mapper (coarsest first)."""

    def __init__(self, widths: tuple[int, ...] = RESIDUAL_WIDTHS, in_channels: int = 6):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.inc_1 = IRUnit(in_channels, w0, 2, squeeze_excite=False)
        self.inc_2 = IRUnit(w0, w1, squeeze_excite=False)
        self.down1, self.down2, self.down3 = Down(w1, w2), Down(w2, w3), Down(w3, W_DIM)
        self.outc2 = nn.Conv2d(w3, W_DIM, 1)
        self.outc3 = nn.Conv2d(w2, W_DIM, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x2 = self.down1(self.inc_2(self.inc_1(x)))   # (B, w2, S/4, S/4)
        x3 = self.down2(x2)                           # (B, w3, S/8, S/8)
        r16 = self.down3(x3)                          # (B, 512, S/16, S/16)
        r32 = upsample_to(r16, x3) + self.outc2(x3)
        r64 = upsample_to(r32, x2) + self.outc3(x2)
        return r16, r32, r64


class RePoI(nn.Module):
    """The Re-PoI encoder (see the module docstring).

    Args:
        image_resolution: input size S (256 in the paper; divisible by 16); renders are pooled to it.
        backbone_units, backbone_channels: the IR-SE trunk (IR_DEPTHS[50] and IR_CHANNELS are the paper's
            IR-SE50; smaller values make fast test models).
        residual_widths: channels of the residual encoder's first four levels.
        dropout: dropout of the decoder layers and the camera MLP (0.1 in the paper; off in eval mode).
    """

    def __init__(self, *, image_resolution: int = 256, backbone_units: tuple[int, ...] = IR_DEPTHS[50],
                 backbone_channels: tuple[int, ...] = IR_CHANNELS,
                 residual_widths: tuple[int, ...] = RESIDUAL_WIDTHS, dropout: float = 0.1):
        super().__init__()
        if image_resolution < 16 or image_resolution % 16:
            raise ValueError(f"image_resolution must be a positive multiple of 16, got {image_resolution}")
        if len(residual_widths) != 4:
            raise ValueError(f"residual_widths needs 4 channel counts, got {tuple(residual_widths)}")
        self.config = {"image_resolution": int(image_resolution), "backbone_units": [int(u) for u in backbone_units],
                       "backbone_channels": [int(c) for c in backbone_channels],
                       "residual_widths": [int(w) for w in residual_widths], "dropout": float(dropout)}
        self.image_resolution = int(image_resolution)
        self.backbone = FeaturePyramid(tuple(backbone_units), tuple(backbone_channels))
        self.cam_proj = nn.Sequential(nn.Linear(CAMERA_DIM, W_DIM), nn.ReLU(), nn.Linear(W_DIM, W_DIM), nn.ReLU(),
                                      nn.Linear(W_DIM, W_DIM), nn.Dropout(dropout))
        self.w_plus_query = nn.Parameter(torch.randn(1, NUM_WS, W_DIM))
        self.pose_mapping = PoseMapping(dropout=dropout)
        self.residual_encoder = ResidualEncoder(tuple(residual_widths))
        self.pose_mapping_residual = PoseMapping(dropout=dropout)
        self.face_pool = nn.AdaptiveAvgPool2d(self.image_resolution)

    def encode(self, x: Tensor, cam: Tensor) -> tuple[Tensor, Tensor]:
        """The first stage: (codes_coarse (B, 14, 512), cam_emb (B, 512))."""
        self._check_inputs(x, cam)
        cam_emb = self.cam_proj(cam)
        query = self.w_plus_query.expand(len(x), -1, -1)
        return self.pose_mapping(self.backbone(x), query, cam_emb), cam_emb

    def refine(self, x: Tensor, coarse: Tensor, codes_coarse: Tensor, cam_emb: Tensor) -> Tensor:
        """The second stage: the correction ``codes_res`` (B, 14, 512) from the image and the first render."""
        return self.pose_mapping_residual(self.residual_encoder(torch.cat([x, coarse], 1)), codes_coarse, cam_emb)

    def render(self, generator: nn.Module, codes: Tensor, cam: Tensor, *, deterministic: bool = False
               ) -> dict[str, Tensor]:
        """The generator's render of ``codes`` at ``cam``: ``image`` pooled to the input size, its ``image_raw``
        size ``render`` (the generator's own output), ``depth`` and ``opacity`` (B, 1, R, R)."""
        out = generator.synthesis(codes, cam, noise_mode="const", deterministic=deterministic)
        return {"image": self.face_pool(out["image"]), "render": out["image"], "depth": out["image_depth"],
                "opacity": out["weights_sum"]}

    def invert(self, x: Tensor, cam: Tensor, generator: nn.Module, *, deterministic: bool = False
               ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Both stages without the final render: ({``codes``, ``codes_coarse``}, the coarse render's dict of
        :meth:`render`). What dataset encoding needs; :meth:`forward` adds the refined render."""
        codes_coarse, cam_emb = self.encode(x, cam)
        first = self.render(generator, codes_coarse, cam, deterministic=deterministic)
        codes = codes_coarse + self.refine(x, first["image"], codes_coarse, cam_emb)
        return {"codes": codes, "codes_coarse": codes_coarse}, first

    def forward(self, x: Tensor, cam: Tensor, generator: nn.Module, *, deterministic: bool = False
                ) -> dict[str, Tensor]:
        """Invert images ``x`` (B, 3, S, S) in [-1, 1] seen from cameras ``cam`` (B, 25) into W+ of ``generator``.

        Returns a dict: ``codes`` (B, 14, 512) the refined codes, ``codes_coarse``, the renders ``coarse`` and
        ``refine`` (B, 3, S, S), their ``coarse_depth``/``refine_depth`` and the refined ``refine_opacity`` (B, 1,
        R, R) at the input cameras.
        ``deterministic`` renders without random depth jitter (evaluation); training samples like EG3D.
        """
        codes, first = self.invert(x, cam, generator, deterministic=deterministic)
        second = self.render(generator, codes["codes"], cam, deterministic=deterministic)
        return {**codes, "coarse": first["image"], "refine": second["image"], "coarse_depth": first["depth"],
                "refine_depth": second["depth"], "refine_opacity": second["opacity"]}

    def _check_inputs(self, x: Tensor, cam: Tensor) -> None:
        s = self.image_resolution
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"images must have shape (B, 3, {s}, {s}), got {tuple(x.shape)}")
        if tuple(cam.shape) != (len(x), CAMERA_DIM):
            raise ValueError(f"cameras must have shape ({len(x)}, {CAMERA_DIM}) (EG3D labels), got {tuple(cam.shape)}")


def load_backbone_weights(encoder: RePoI, path) -> None:
    """Start ``encoder``'s IR-SE trunk from a local ArcFace IR-SE50 file (``model_ir_se50.pth``, the pSp /
    TreB1eN layout; the official initialisation): its ``input_layer.*`` and ``body.*`` tensors, strictly; the
    FPN's lateral layers keep their initialisation and ArcFace's ``output_layer.*`` is not used."""
    from texface.checkpoint import load_state_strict, read_state_dict
    from texface.metrics.arcface import WEIGHTS_FILE

    state = read_state_dict(path, what="ArcFace IR-SE50 weights", expected=WEIGHTS_FILE)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    trunk = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
    own = encoder.backbone.state_dict()
    trunk.update({k: v for k, v in own.items() if k.startswith("latlayer")})
    load_state_strict(encoder.backbone, trunk, source=path, kind="Re-PoI backbone (IR-SE trunk)")
