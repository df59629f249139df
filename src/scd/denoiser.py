"""The style-code denoiser of TEx-Face: a FiLM transformer decoder over the 14 W+ tokens of an EG3D code.

Architecture (the official TEx-Face math, our code):

- the 14 W+ tokens go through ``input_projection``; a sinusoidal embedding of the timestep goes through
  ``time_mlp`` (Linear + Mish) and feeds two heads: ``to_time_emb`` (the FiLM input of every sub-block) and
  ``to_time_tokens`` (two extra tokens appended after the 14 code tokens);
- ``depth`` pre-LN decoder layers: self-attention; cross-attention to the text-token features plus a
  separate cross-attention to one expression token, the two outputs summed; a GELU feed-forward. Every
  sub-block output is FiLM-modulated, ``(1 + scale) * h + shift``, before its residual add;
- rotary position encoding the official way: a rotation of the whole token (adjacent channel pairs) *before*
  the attention in-projection, for queries and keys only, with positions restarting at 0 for every sequence
  (0..15 for the self-attention tokens, 0..76 for the text memory, 0 for the expression token);
- ``final_layer`` on the 14 code tokens (the time tokens are dropped). No final LayerNorm.

Module and parameter names follow the official checkpoint (``time_mlp.1``, ``seqTransDecoder.stack.N.film1``,
...) so that ``scd.convert`` maps the released weights one to one. Conditions: ``text`` is the
(B, 77, text_dim) output of the frozen CLIP text tower, all token states; its null is the buffer
``null_text`` = CLIP(""). ``exp`` is a 50-d FLAME expression code projected to one token; its null is the
learned ``null_cond_exp``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROTARY_BASE = 10000.0


def rotary_tables(length: int, width: int, device=None) -> tuple[Tensor, Tensor]:
    """cos and sin tables (length, width) of the official rotary encoding, in float32.

    Channel pair (2i, 2i+1) at position p turns by the angle p * 10000^(-2i/width).
    """
    inv_freq = 1.0 / (ROTARY_BASE ** (torch.arange(0, width, 2, device=device).float() / width))  # (W/2,)
    angles = torch.arange(length, device=device).float()[:, None] * inv_freq                    # (L, W/2)
    angles = angles.repeat_interleave(2, dim=-1)                                                 # (L, W)
    return angles.cos(), angles.sin()


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the adjacent channel pairs of x (..., L, W): (a, b) -> (a cos - b sin, b cos + a sin)."""
    pairs = x.unflatten(-1, (-1, 2))                                  # (..., L, W/2, 2)
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos.to(x.dtype) + turned * sin.to(x.dtype)


class SinusoidalEmbedding(nn.Module):
    """Timestep t -> [sin(t w_i), cos(t w_i)] with w_i = exp(-i ln(1e4) / (half - 1)), i < half = dim / 2."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"sinusoidal embedding size must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:  # (B,) -> (B, dim)
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class FiLM(nn.Module):
    """Modulation by the time embedding: (1 + scale) * h + shift with [scale, shift] = Linear(Mish(t_emb))."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(nn.Mish(), nn.Linear(dim, 2 * dim))

    def forward(self, h: Tensor, t_emb: Tensor) -> Tensor:  # h (B, L, d), t_emb (B, d)
        scale, shift = self.block(t_emb)[:, None].chunk(2, dim=-1)   # (B, 1, d) each
        return (1 + scale) * h + shift


class DecoderLayer(nn.Module):
    """Pre-LN layer: FiLM'd self-attention, FiLM'd (text + expression) cross-attention, FiLM'd GELU MLP."""

    def __init__(self, *, dim: int, heads: int, ff_dim: int, dropout: float, text_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True,
                                                    kdim=text_dim, vdim=text_dim)
        self.multihead_attn_exp = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_dim)
        self.linear2 = nn.Linear(ff_dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.film1 = FiLM(dim)
        self.film2 = FiLM(dim)
        self.film3 = FiLM(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, t_emb: Tensor, text_k: Tensor, text_v: Tensor, exp_token: Tensor,
                cos: Tensor, sin: Tensor) -> Tensor:
        """x (B, L, d); t_emb (B, d); text_k rotated / text_v plain text memory (B, 77, text_dim);
        exp_token (B, 1, d), whose rotation at position 0 is the identity; cos, sin (L, d) for x."""
        h = self.norm1(x)
        qk = rotate(h, cos, sin)
        attn = self.self_attn(qk, qk, h, need_weights=False)[0]
        x = x + self.film1(self.dropout(attn), t_emb)

        h = self.norm2(x)
        q = rotate(h, cos, sin)
        cross = (self.multihead_attn(q, text_k, text_v, need_weights=False)[0]
                 + self.multihead_attn_exp(q, exp_token, exp_token, need_weights=False)[0])
        x = x + self.film2(self.dropout(cross), t_emb)

        h = self.linear2(self.dropout(F.gelu(self.linear1(self.norm3(x)))))
        return x + self.film3(self.dropout(h), t_emb)


class DecoderStack(nn.Module):
    """The list of decoder layers (its own module so that names read ``seqTransDecoder.stack.N``)."""

    def __init__(self, layers: list[DecoderLayer]):
        super().__init__()
        self.stack = nn.ModuleList(layers)


class StyleCodeDenoiser(nn.Module):
    """v-prediction network over W+ codes, conditioned on CLIP text-token features and an expression code.

    Args (keyword-only; defaults are the paper's):
        code_dim: width of a W+ token (512 for EG3D).
        n_tokens: number of W+ tokens (14 for EG3D at 512^2).
        dim: transformer width d.
        depth: number of decoder layers.
        heads: attention heads (must divide ``dim``).
        ff_dim: hidden width of the feed-forward block.
        dropout: dropout of attention weights, sub-block outputs and the feed-forward hidden layer.
        text_dim: width of the text features (512 for CLIP ViT-B/32); may differ from ``dim``.
        text_len: number of text tokens (77 for CLIP).
        exp_dim: size of the expression code (50 FLAME coefficients).
    """

    def __init__(self, *, code_dim: int = 512, n_tokens: int = 14, dim: int = 512, depth: int = 4,
                 heads: int = 8, ff_dim: int = 2048, dropout: float = 0.1, text_dim: int = 512,
                 text_len: int = 77, exp_dim: int = 50):
        super().__init__()
        for name, value in dict(code_dim=code_dim, n_tokens=n_tokens, dim=dim, depth=depth, heads=heads,
                                ff_dim=ff_dim, text_dim=text_dim, text_len=text_len, exp_dim=exp_dim).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if dim % 4:
            raise ValueError(f"dim must be a multiple of 4 (rotary pairs and a {dim}//2 sinusoid), got {dim}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        if text_dim % 2:
            raise ValueError(f"text_dim must be even (rotary channel pairs), got {text_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.config = dict(code_dim=code_dim, n_tokens=n_tokens, dim=dim, depth=depth, heads=heads,
                           ff_dim=ff_dim, dropout=float(dropout), text_dim=text_dim, text_len=text_len,
                           exp_dim=exp_dim)
        self.code_dim, self.n_tokens, self.dim, self.depth = code_dim, n_tokens, dim, depth
        self.text_dim, self.text_len, self.exp_dim = text_dim, text_len, exp_dim

        self.time_mlp = nn.Sequential(SinusoidalEmbedding(dim // 2), nn.Linear(dim // 2, 2 * dim), nn.Mish())
        self.to_time_emb = nn.Sequential(nn.Linear(2 * dim, dim))
        self.to_time_tokens = nn.Sequential(nn.Linear(2 * dim, 2 * dim))   # 2 time tokens of width d
        self.null_cond_exp = nn.Parameter(torch.randn(1, 1, dim))
        self.input_projection = nn.Linear(code_dim, dim)
        self.exp_proj = nn.Sequential(nn.Linear(exp_dim, dim))
        self.seqTransDecoder = DecoderStack([
            DecoderLayer(dim=dim, heads=heads, ff_dim=ff_dim, dropout=dropout, text_dim=text_dim)
            for _ in range(depth)])
        self.final_layer = nn.Linear(dim, code_dim)
        # CLIP("") features; zeros are not a valid null text, so forward refuses to use them until set.
        self.register_buffer("null_text", torch.zeros(text_len, text_dim))
        self._null_text_set = False

    # ------------------------------------------------------------------------------------------ null text
    @property
    def null_text_set(self) -> bool:
        """Whether ``null_text`` holds real CLIP("") features (set explicitly or loaded from a state dict)."""
        return self._null_text_set

    @torch.no_grad()
    def set_null_text(self, features: Tensor) -> None:
        """Set the null text to ``features`` (text_len, text_dim): the text encoder's output for ""."""
        expected = tuple(self.null_text.shape)
        if tuple(features.shape) != expected:
            raise ValueError(f"null text features must have shape {expected}, got {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError("null text features contain NaN or inf")
        self.null_text.copy_(features)
        self._null_text_set = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "null_text" in state_dict:
            self._null_text_set = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _null_text(self, batch: int) -> Tensor:
        if not self._null_text_set:
            raise RuntimeError("the denoiser's null text is not set: call "
                               "set_null_text(text_encoder.null_features()) or load a checkpoint that has it")
        return self.null_text.expand(batch, -1, -1)

    # -------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor, t: Tensor, text: Tensor | None = None, exp: Tensor | None = None, *,
                text_keep: Tensor | None = None, exp_keep: Tensor | None = None) -> Tensor:
        """Predict v for noisy codes.

        Args:
            x: noisy codes (B, n_tokens, code_dim).
            t: integer timesteps (B,).
            text: text-token features (B, text_len, text_dim), or None for the null text (CLIP("")).
            exp: expression codes (B, exp_dim), or None for the learned null token.
            text_keep / exp_keep: optional bool (B,) masks; False replaces that sample's condition by its null
                (classifier-free-guidance dropout during training, and the guidance branches of ``guided``).
        Returns:
            v (B, n_tokens, code_dim).
        """
        batch = self._check_inputs(x, t, text, exp, text_keep, exp_keep)

        h = self.input_projection(x)                                        # (B, N, d)
        # The sinusoid is computed in float32 (as the official code does), then cast to the model's dtype.
        time_emb = self.time_mlp[1:](self.time_mlp[0](t).to(x.dtype))       # (B, 2d)
        t_emb = self.to_time_emb(time_emb)                                  # (B, d)
        time_tokens = self.to_time_tokens(time_emb).unflatten(1, (2, -1))   # (B, 2, d)
        h = torch.cat((h, time_tokens), dim=1)                              # (B, N + 2, d)

        if text is None:
            text = self._null_text(batch)
        elif text_keep is not None:
            text = torch.where(text_keep[:, None, None], text, self._null_text(batch))
        if exp is None:
            exp_token = self.null_cond_exp.expand(batch, -1, -1)
        else:
            exp_token = self.exp_proj(exp)[:, None]                           # (B, 1, d)
            if exp_keep is not None:
                null = self.null_cond_exp.to(exp_token.dtype)
                exp_token = torch.where(exp_keep[:, None, None], exp_token, null)

        # The text memory is the same in every layer, so its keys are rotated once here.
        text_k = rotate(text, *rotary_tables(text.shape[1], text.shape[2], device=text.device))
        cos, sin = rotary_tables(h.shape[1], h.shape[2], device=h.device)
        for layer in self.seqTransDecoder.stack:
            h = layer(h, t_emb, text_k, text, exp_token, cos, sin)
        return self.final_layer(h[:, :self.n_tokens])                         # (B, N, code_dim)

    def _check_inputs(self, x, t, text, exp, text_keep, exp_keep) -> int:
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.n_tokens, self.code_dim):
            raise ValueError(f"x must have shape (B, {self.n_tokens}, {self.code_dim}), got {tuple(x.shape)}")
        batch = x.shape[0]
        if t.shape != (batch,) or t.is_floating_point() or t.is_complex():
            raise ValueError(f"t must be an integer tensor of shape ({batch},), got {t.dtype} "
                             f"{tuple(t.shape)}")
        if text is not None and tuple(text.shape) != (batch, self.text_len, self.text_dim):
            raise ValueError(f"text features must have shape ({batch}, {self.text_len}, {self.text_dim}), "
                             f"got {tuple(text.shape)}")
        if exp is not None and tuple(exp.shape) != (batch, self.exp_dim):
            raise ValueError(f"exp must have shape ({batch}, {self.exp_dim}), got {tuple(exp.shape)}")
        for name, keep in (("text_keep", text_keep), ("exp_keep", exp_keep)):
            if keep is not None and (keep.dtype != torch.bool or keep.shape != (batch,)):
                raise ValueError(f"{name} must be a bool tensor of shape ({batch},), got {keep.dtype} "
                                 f"{tuple(keep.shape)}")
        return batch

    # ------------------------------------------------------------------------------------------- guidance
    def guided(self, x: Tensor, t: Tensor, text: Tensor | None = None, exp: Tensor | None = None, *,
               cond_scale: float = 7.0, text_scale: float | None = None,
               exp_scale: float | None = None) -> Tensor:
        """Classifier-free guided v, all needed branches in one batched forward.

        With only ``cond_scale`` (the official joint guidance): ``u + cond_scale * (c - u)``, where u drops both
        conditions and c keeps the given ones. Scale 0 gives u.

        With separate scales s_t = ``text_scale`` and s_e = ``exp_scale`` (a missing one defaults to
        ``cond_scale``) and both conditions given, m = min(s_t, s_e):
            ``u + m (c - u) + (s_t - m) (v_text - u) + (s_e - m) (v_exp - u)``,
        i.e. joint guidance up to the common scale, plus single-condition guidance for the excess of the
        larger one (v_text keeps only the text, v_exp only the expression). Equal scales give exactly the
        joint guidance; s_e = 0 gives pure text guidance u + s_t (v_text - u), and vice versa. At most 3
        branches. A condition that is None contributes nothing: guidance then acts on the other one with its
        own scale.
        """
        s_text = cond_scale if text_scale is None else text_scale
        s_exp = cond_scale if exp_scale is None else exp_scale
        # (keep text, keep exp) -> weight of (v_branch - u)
        if text is None and exp is None:
            weights = {}
        elif exp is None:
            weights = {(True, False): s_text}
        elif text is None:
            weights = {(False, True): s_exp}
        else:
            common = min(s_text, s_exp)
            weights = {(True, True): common, (True, False): s_text - common, (False, True): s_exp - common}
        branches = [(False, False)] + [keep for keep, w in weights.items() if w != 0]

        n, batch = len(branches), x.shape[0]
        keep_text = torch.tensor([k[0] for k in branches], device=x.device).repeat_interleave(batch)
        keep_exp = torch.tensor([k[1] for k in branches], device=x.device).repeat_interleave(batch)
        v = self(x.repeat(n, 1, 1), t.repeat(n),
                 None if text is None else text.repeat(n, 1, 1),
                 None if exp is None else exp.repeat(n, 1),
                 text_keep=keep_text, exp_keep=keep_exp).unflatten(0, (n, batch))   # (n, B, N, C)
        out = v[0]
        for i, keep in enumerate(branches[1:], start=1):
            out = out + weights[keep] * (v[i] - v[0])
        return out
