"""The text condition of the SCD: OpenAI's CLIP tokenizer and the frozen CLIP text tower.

TEx-Face conditions the denoiser on ALL 77 token states of CLIP ViT-B/32's text transformer after its final
LayerNorm (no EOT pooling, no text projection, no normalisation, no padding mask: only the causal mask),
computed from `clip.tokenize(caption, truncate=True)` ids: start token, BPE tokens, end token, zero padding.
The null text is the encoding of the empty string.

- `texface.tokenizer.ClipTokenizer` reproduces those ids offline from the BPE vocabulary shipped in
  `texface/assets/`.
- `TextEncoder` is the frozen text tower (a transformers `CLIPTextModel`); it loads from a local Hugging Face
  folder, from OpenAI-layout weights (the `clip_model.*` part of the released TEx-Face checkpoint, prefix
  removed) or is built with seeded random weights for tests and the demo; `encode` caches features per
  caption.
"""
from __future__ import annotations

import json
import re as _re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel
from transformers.utils import logging as hf_logging

from texface.tokenizer import CONTEXT_LENGTH, EOT_TOKEN, SOT_TOKEN, ClipTokenizer, caption_list, default_tokenizer

# CLIP ViT-B/32's text tower; `TextEncoder.config` holds exactly these keys.
VIT_B32_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
# OpenAI resblock suffix -> transformers CLIPEncoderLayer suffix (the stacked in_proj is split apart)
_OPENAI_LAYER_KEYS = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
}
_OPENAI_IN_PROJ = ("attn.in_proj_weight", "attn.in_proj_bias")
_OPENAI_TOP_KEYS = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias")
_OPENAI_OPTIONAL = ("text_projection",)  # belongs to the image-text head, unused by TEx-Face
_RESBLOCK = _re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")


def _check_config(config: Mapping) -> dict:
    """The full text-tower config: ViT-B/32 values overridden by `config`; unknown keys are an error."""
    unknown = sorted(set(config) - set(VIT_B32_TEXT))
    if unknown:
        raise ValueError(f"unknown CLIP text config keys {unknown}; allowed: {sorted(VIT_B32_TEXT)}")
    full = {**VIT_B32_TEXT, **config}
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings"):
        if not isinstance(full[key], int) or isinstance(full[key], bool) or full[key] < 1:
            raise ValueError(f"CLIP text config {key} must be a positive int, got {full[key]!r}")
    if full["hidden_size"] % full["num_attention_heads"]:
        raise ValueError(f"hidden_size {full['hidden_size']} is not divisible by num_attention_heads "
                         f"{full['num_attention_heads']}")
    if full["vocab_size"] <= EOT_TOKEN:
        raise ValueError(f"vocab_size must cover the CLIP tokens (> {EOT_TOKEN}), got {full['vocab_size']}")
    if full["max_position_embeddings"] < 2:
        raise ValueError("max_position_embeddings must be >= 2 (start + end token)")
    if full["hidden_act"] not in ("quick_gelu", "gelu"):
        raise ValueError(f"hidden_act must be 'quick_gelu' (OpenAI CLIP) or 'gelu', "
                         f"got {full['hidden_act']!r}")
    full["layer_norm_eps"] = float(full["layer_norm_eps"])
    return full


def _new_model(config: dict, seed: int = 0) -> CLIPTextModel:
    """A CLIPTextModel with seeded random weights; the global RNG is left untouched."""
    hf_config = CLIPTextConfig(**config, bos_token_id=SOT_TOKEN, eos_token_id=EOT_TOKEN, pad_token_id=0,
                               attention_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(hf_config)


def _names(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _drop_cache(encoder: TextEncoder, incompatible_keys) -> None:
    # load_state_dict post-hook: new weights make cached features stale (a plain function keeps it picklable)
    encoder.clear_cache()


class TextEncoder(nn.Module):
    """Frozen CLIP text tower returning all token states after the final LayerNorm.

    Build it with `from_pretrained`, `from_openai_state`, `from_config` or `from_state`; the constructor wraps
    an existing transformers `CLIPTextModel`. The weights never train: requires_grad is off, the module stays
    in eval mode whatever `.train()` asks, and forward runs without autograd.

    Args:
        model: the transformers CLIPTextModel to wrap (converted to float32).
    """

    def __init__(self, model: CLIPTextModel):
        super().__init__()
        if not isinstance(model, CLIPTextModel):
            raise TypeError(f"TextEncoder wraps a transformers CLIPTextModel, got {type(model).__name__}")
        self.config = _check_config({k: getattr(model.config, k) for k in VIT_B32_TEXT})
        self.model = model.float()
        self.model.requires_grad_(False)
        self.tokenizer = (default_tokenizer() if self.context_length == CONTEXT_LENGTH
                          else ClipTokenizer(context_length=self.context_length))
        self._cache: dict[str, torch.Tensor] = {}  # caption -> (L, width) features, oldest first
        self.cache_limit: int | None = None  # most captions kept; None = unbounded
        self.register_load_state_dict_post_hook(_drop_cache)
        self.train(False)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: Mapping | None = None, *, seed: int = 0) -> TextEncoder:
        """Seeded random weights (transformers' CLIP init) for tests and the demo.

        Args:
            config: overrides of the ViT-B/32 text config (keys of VIT_B32_TEXT), e.g. a tiny {"hidden_size":
                64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}.
            seed: the weights depend only on this seed (the global RNG is left untouched).
        """
        return cls(_new_model(_check_config(config or {}), seed))

    @classmethod
    def from_state(cls, config: Mapping, state: Mapping[str, torch.Tensor]) -> TextEncoder:
        """Rebuild from `encoder.config` and `encoder.state_dict()` (strict)."""
        encoder = cls(_new_model(_check_config(config)))
        try:
            encoder.load_state_dict(dict(state), strict=True)
        except RuntimeError as e:
            raise ValueError(f"text encoder weights do not match its config: {e}") from None
        return encoder

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TextEncoder:
        """Load a local Hugging Face folder offline: a CLIPTextModel, or a full CLIPModel (its text tower).

        Args:
            path: folder with config.json and model.safetensors (e.g. `save_pretrained` output or a download
                of openai/clip-vit-base-patch32). Nothing is downloaded; weights must be safetensors.
        """
        path = Path(path)
        hint = ("expected a Hugging Face folder with config.json and model.safetensors, e.g. made by "
                "CLIPTextModel.save_pretrained or a download of openai/clip-vit-base-patch32")
        if not path.is_dir():
            raise FileNotFoundError(f"CLIP text model folder not found: {path} ({hint})")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing ({hint})")
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{config_file} is not a valid JSON config: {e}") from None
        if model_type not in ("clip", "clip_text_model"):
            raise ValueError(f"{path} holds a {model_type!r} model, not a CLIP text model ({hint})")
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a full CLIPModel's vision keys are expected; the checks below report
        try:
            model, info = CLIPTextModel.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                        output_loading_info=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"could not load a CLIP text model from {path}: {e} ({hint})") from None
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
        if missing or info["mismatched_keys"]:
            raise ValueError(f"{path} does not hold a complete CLIP text tower: missing {_names(missing)}; "
                             f"wrong shape {_names(str(k) for k in info['mismatched_keys'])}")
        return cls(model)

    @classmethod
    def from_openai_state(cls, state: Mapping[str, torch.Tensor]) -> TextEncoder:
        """Convert OpenAI CLIP text-tower weights (strict) into a TextEncoder.

        Args:
            state: `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.N.*`, `ln_final.*`
                and optionally `text_projection` (ignored), as in OpenAI's `clip` package or the released
                TEx-Face checkpoint's `clip_model.*` with the prefix removed. Width, depth, MLP size and
                context length are read from the shapes; heads = width // 64 as in every OpenAI CLIP. fp16
                weights become float32.
        """
        for key in _OPENAI_TOP_KEYS[:2]:
            if key not in state:
                raise ValueError(f"not an OpenAI CLIP text state dict: {key!r} is missing (got "
                                 f"{_names(state)}; remove any prefix such as 'clip_model.' first)")
        vocab_size, width = state["token_embedding.weight"].shape
        layers = {int(m.group(1)) for k in state if (m := _RESBLOCK.fullmatch(k))}
        n_layers = max(layers) + 1 if layers else 0
        expected = set(_OPENAI_TOP_KEYS) | {f"transformer.resblocks.{i}.{s}" for i in range(n_layers)
                                              for s in (*_OPENAI_LAYER_KEYS, *_OPENAI_IN_PROJ)}
        missing = expected - set(state)
        unknown = set(state) - expected - set(_OPENAI_OPTIONAL)
        if missing or unknown or n_layers == 0:
            raise ValueError(f"OpenAI CLIP text state dict does not match the text tower: missing "
                             f"[{_names(missing)}], unknown [{_names(unknown)}], "
                             f"resblocks found {sorted(layers)}")
        if width % 64:
            raise ValueError(f"OpenAI CLIP text width {width} is not a multiple of the 64-d heads")
        config = _check_config({
            "vocab_size": int(vocab_size), "hidden_size": int(width),
            "intermediate_size": int(state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": n_layers, "num_attention_heads": int(width) // 64,
            "max_position_embeddings": int(state["positional_embedding"].shape[0]),
        })
        hf = {"embeddings.token_embedding.weight": state["token_embedding.weight"],
              "embeddings.position_embedding.weight": state["positional_embedding"],
              "final_layer_norm.weight": state["ln_final.weight"],
              "final_layer_norm.bias": state["ln_final.bias"]}
        for i in range(n_layers):
            src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
            for s, d in _OPENAI_LAYER_KEYS.items():
                hf[dst + d] = state[src + s]
            # in_proj stacks the q, k, v projections along the output dimension
            for kind, chunk in zip(("weight", "bias"), _OPENAI_IN_PROJ):
                for name, part in zip("qkv", state[src + chunk].chunk(3, dim=0)):
                    hf[f"{dst}self_attn.{name}_proj.{kind}"] = part
        model = _new_model(config)
        try:
            model.load_state_dict({k: v.float() for k, v in hf.items()}, strict=True)
        except RuntimeError as e:
            raise ValueError(f"OpenAI CLIP text weights have inconsistent shapes: {e}") from None
        return cls(model)

    # ---- properties ---------------------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.config["hidden_size"]

    @property
    def context_length(self) -> int:
        return self.config["max_position_embeddings"]

    @property
    def device(self) -> torch.device:
        return self.model.embeddings.token_embedding.weight.device

    # ---- frozen behaviour ---------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen like the official CLIP wrapper: a parent's .train() must not switch dropout or anything on.
        return super().train(False)

    def _apply(self, fn, recurse=True):
        # Moving or casting the weights makes cached features stale (other device or dtype).
        self.clear_cache()
        return super()._apply(fn, recurse)

    def clear_cache(self) -> None:
        self._cache = {}

    # ---- encoding -----------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, width) final-LayerNorm token states (L = context_length)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be (B, {self.context_length}), got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.config["vocab_size"]):
            raise ValueError(f"token ids must lie in [0, {self.config['vocab_size']})")
        with torch.no_grad():
            return self.model(input_ids=tokens.to(self.device)).last_hidden_state  # (B, L, width)

    def encode(self, captions: str | Sequence[str]) -> torch.Tensor:
        """(B, L, width) features of the captions; each distinct caption is encoded once and cached.

        Each cached caption holds L * width floats (158 kB for ViT-B/32) on the encoder's device. Set
        `cache_limit` to bound the cache (the oldest captions are dropped first); `clear_cache()` empties it.
        """
        captions = caption_list(captions)
        new = [c for c in dict.fromkeys(captions) if c not in self._cache]
        if new:
            features = self(self.tokenizer(new))  # (N, L, width)
            self._cache.update((c, f.clone()) for c, f in zip(new, features))  # clone: no shared storage
        if not captions:
            return torch.empty(0, self.context_length, self.width, device=self.device)
        out = torch.stack([self._cache[c] for c in captions])  # (B, L, width)
        while self.cache_limit is not None and len(self._cache) > self.cache_limit:
            del self._cache[next(iter(self._cache))]
        return out

    def null_features(self) -> torch.Tensor:
        """(L, width) features of the empty caption, the SCD's "no text" condition."""
        return self.encode([""])[0]
