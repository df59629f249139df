"""Read the released TEx-Face SCD checkpoint (``generation/checkpoints/model.pt``) into our modules, strictly.

``model.pt`` is the official ``{'state_dict': ..., 'ema': ...}`` (``ema`` optional), read with
``torch.load(weights_only=True)`` so that nothing in it can run. Its denoiser tensors keep their names in
our ``StyleCodeDenoiser``; the tensors the official model stores but never uses (``UNUSED``) are dropped, and
any other unexpected or missing tensor is an error. The frozen OpenAI CLIP text tower under ``clip_model.*``
becomes our ``TextEncoder``, and the denoiser's null text is that tower's encoding of "".
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from scd.denoiser import StyleCodeDenoiser
from texface.checkpoint import load_torch_file
from texface.errors import ConvertError, one_line

CLIP_PREFIX = "clip_model."
# Stored by the official model but unused by its forward: the unused null text parameter, the unused
# layer-selection head, and the rotary frequencies (a constant our denoiser computes).
UNUSED = (
    re.compile(r"null_cond_txt"),
    re.compile(r"rotary\.freqs"),
    re.compile(r"seqTransDecoder\.stack\.\d+\.rotary\.freqs"),
    re.compile(r"seqTransDecoder\.stack\.\d+\.layer_selection\.0\.(weight|bias)"),
)
LAYER_KEY = re.compile(r"seqTransDecoder\.stack\.(\d+)\.")
OFFICIAL_N_TOKENS = 14      # the official forward keeps output[:, :14]
OFFICIAL_DIFFUSION = dict(timesteps=1000, schedule="cosine", objective="v", loss_type="l1",
                          loss_weight="alpha_bar")


def load_official(path: str | os.PathLike) -> dict:
    """Read an official checkpoint with ``torch.load(weights_only=True)``; check its top-level layout."""
    path = Path(path)
    ckpt = load_torch_file(path, error=ConvertError)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConvertError(f"{path}: expected the official layout {{'state_dict': ..., 'ema': ...}}, "
                              f"got {keys}")
    for name in ("state_dict", "ema"):
        state = ckpt.get(name)
        if state is not None and not (isinstance(state, Mapping)
                                      and all(isinstance(v, Tensor) for v in state.values())):
            raise ConvertError(f"{path}: '{name}' must map names to tensors")
    return dict(ckpt)


def split_official_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(denoiser tensors, CLIP text-tower tensors without the ``clip_model.`` prefix)."""
    denoiser = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    clip = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    return denoiser, clip


def map_official_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official denoiser tensors -> ours: the ``UNUSED`` ones dropped, all others kept under the same name."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()
            if not any(p.fullmatch(k) for p in UNUSED)}


def infer_denoiser_kwargs(state: Mapping[str, Tensor], *, text_len: int, text_dim: int, heads: int = 8,
                          dropout: float = 0.1) -> dict:
    """StyleCodeDenoiser arguments from the shapes of official denoiser tensors (not heads: pass it)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ConvertError(f"not an official SCD denoiser: {key!r} is missing")
        return tuple(state[key].shape)

    layers = sorted({int(m.group(1)) for k in state if (m := LAYER_KEY.match(k))})
    if not layers or layers != list(range(len(layers))):
        raise ConvertError(f"decoder layers must be numbered 0..N-1, found {layers}")
    dim, code_dim = shape("input_projection.weight")
    return dict(code_dim=code_dim, n_tokens=OFFICIAL_N_TOKENS, dim=dim, depth=len(layers), heads=heads,
                ff_dim=shape("seqTransDecoder.stack.0.linear1.weight")[0], dropout=dropout, text_dim=text_dim,
                text_len=text_len, exp_dim=shape("exp_proj.0.weight")[1])


def denoiser_from_official(state: Mapping[str, Tensor], *, null_text: Tensor, heads: int = 8,
                           dropout: float = 0.1) -> StyleCodeDenoiser:
    """Build our denoiser from official denoiser tensors (no ``clip_model.*``), strictly.

    Args:
        state: the official denoiser state dict.
        null_text: (text_len, text_dim) CLIP("") features; they also fix the text input size.
        heads, dropout: hyper-parameters the tensors do not record (official: 8 and 0.1).
    """
    kwargs = infer_denoiser_kwargs(state, text_len=null_text.shape[0], text_dim=null_text.shape[1],
                                   heads=heads, dropout=dropout)
    try:
        model = StyleCodeDenoiser(**kwargs)
    except ValueError as err:
        raise ConvertError(f"official tensors give invalid denoiser settings {kwargs}: {err}") from None
    ours = map_official_keys(state)
    expected = set(model.state_dict()) - {"null_text"}
    missing, unexpected = sorted(expected - set(ours)), sorted(set(ours) - expected)
    if missing or unexpected:
        raise ConvertError(f"denoiser tensors do not match a depth-{kwargs['depth']} SCD: "
                              f"missing {_names(missing)}; unexpected {_names(unexpected)}")
    try:
        model.load_state_dict({**ours, "null_text": null_text}, strict=True)
    except RuntimeError as err:
        raise ConvertError(f"denoiser tensors have unexpected shapes: {one_line(err)}") from None
    return model


def _names(keys: list[str], limit: int = 8) -> str:
    return "[" + ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "") + "]"
