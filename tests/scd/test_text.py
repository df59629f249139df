"""Tests of scd.text: OpenAI-exact tokenization and the frozen CLIP text tower."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel

from scd.text import TextEncoder
from texface.tokenizer import EOT_TOKEN, SOT_TOKEN, ClipTokenizer, default_tokenizer

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}

# Reference ids, produced once with the real tokenizers (not this repo's code): the OpenAI `clip`
# tokenizer from the PyPI wheel clip-anytorch==2.6.0 (clip/simple_tokenizer.py with the
# clip.tokenize(..., truncate=True) logic) and open_clip_torch==3.3.0's open_clip.tokenize, both unpacked
# into /tmp and run without installing. The two agree on every caption except the one containing literal
# special-token strings, where open_clip (which no longer treats them as special) differs; TEx-Face uses
# OpenAI's `clip`, so the OpenAI ids are the reference. Trailing zeros of the 77-long rows are omitted here.
REFERENCE_IDS = [
    ("", [49406, 49407]),
    ("This man has a beard.", [49406, 589, 786, 791, 320, 9052, 269, 49407]),
    ("This woman has no bangs.", [49406, 589, 2308, 791, 871, 27992, 269, 49407]),
    ("A PHOTO of a Smiling Woman, with EyeGlasses!!!",
     [49406, 320, 1125, 539, 320, 9200, 2308, 267, 593, 5034, 6116, 995, 49407]),
    ("She is 25 years old; he was born in 1984 & wears 3D glasses...",
     [49406, 1043, 533, 273, 276, 1151, 896, 282, 797, 739, 2683, 530, 272, 280, 279, 275, 261, 11869, 274,
      323, 6116, 678, 49407]),
    ("caf&eacute; &amp;amp; na&iuml;ve &lt;b&gt;bold&lt;/b&gt;",
     [49406, 15304, 261, 1097, 35689, 563, 283, 321, 285, 8911, 34308, 321, 285, 49407]),
    ("\u00dcn\u00efc\u00f6d\u00e9 fa\u00e7ade \u2014 \u201cquoted\u201d, "
     "emoji \U0001F600 and \u4e2d\u6587 text",
     [49406, 6522, 77, 35689, 66, 7255, 67, 4166, 778, 10067, 1928, 2005, 257, 27706, 4332, 16327, 7334, 537,
      19759, 255, 29032, 485, 4160, 49407]),
    ("sch\u00c3\u00b6n mojibake", [49406, 844, 7255, 333, 617, 3252, 11878, 49407]),
    ("  multiple   spaces\tand\nnew lines  ", [49406, 6470, 9006, 537, 686, 3418, 49407]),
    ("don't can't we'll they're I'm you've she'd IT'S",
     [49406, 847, 713, 753, 713, 649, 1342, 889, 982, 328, 880, 592, 1200, 1043, 1896, 585, 568, 49407]),
    ("<|endoftext|> inside <|startoftext|> a caption", [49406, 49407, 2912, 49406, 320, 11327, 49407]),
    ("a " * 75, [49406] + [320] * 75 + [49407]),  # exactly fills 77
    ("a " * 76, [49406] + [320] * 75 + [49407]),  # one too many: truncated, ends with EOT
    ("The person in the picture is a middle-aged gentleman with a thick, well-groomed beard, "
     "short grey hair, "
     "rectangular eyeglasses and a broad smile; there are no bangs covering his forehead, and he looks about "
     "fifty-five years old, photographed outdoors in soft afternoon light near the sea. Behind him, a row of "
     "white houses, two boats and a lighthouse (built 1887) can be seen under a pale-blue, cloudless sky.",
     [49406, 518, 2533, 530, 518, 1674, 533, 320, 3694, 268, 3889, 13293, 593, 320, 11006, 267, 1123, 268,
      1464, 16835, 9052, 267, 3005, 5046, 2225, 267, 43321, 5034, 6116, 537, 320, 12623, 3490, 282, 997, 631,
      871, 27992, 9462, 787, 25394, 267, 537, 797, 1606, 781, 15978, 268, 3127, 1151, 896, 267, 11573, 10469,
      530, 3773, 2716, 1395, 2252, 518, 2102, 269, 2403, 1269, 267, 320, 1044, 539, 1579, 7791, 267, 1237,
      10080, 537, 320, 13717, 49407]),
]


# ------------------------------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize("caption,expected", REFERENCE_IDS, ids=[repr(c)[:30] for c, _ in REFERENCE_IDS])
def test_tokenizer_matches_openai(caption, expected):
    row = default_tokenizer()([caption])[0]
    assert row.dtype == torch.long and row.shape == (77,)
    assert row.tolist() == expected + [0] * (77 - len(expected))


def test_tokenizer_batch_and_single_string():
    tok = ClipTokenizer()
    captions = [c for c, _ in REFERENCE_IDS]
    batch = tok(captions)  # (B, 77)
    assert batch.shape == (len(captions), 77)
    for row, (_, expected) in zip(batch, REFERENCE_IDS):
        assert row[: len(expected)].tolist() == expected and not row[len(expected):].any()
    assert torch.equal(tok("This man has a beard."), batch[1:2])
    assert tok([]).shape == (0, 77)


def test_tokenizer_context_length_and_errors():
    short = ClipTokenizer(context_length=5)("This man has a beard.")
    assert short.tolist() == [[SOT_TOKEN, 589, 786, 791, EOT_TOKEN]]
    with pytest.raises(TypeError, match="strings"):
        default_tokenizer()(["ok", 3])
    with pytest.raises(ValueError, match="context_length"):
        ClipTokenizer(context_length=1)


# ------------------------------------------------------------------------------------ OpenAI weights
def random_openai_state(*, width=128, layers=2, ff=256, vocab=49408, context=77, seed=0, dtype=torch.float32):
    """An OpenAI-layout CLIP text state dict with random, non-trivial weights (heads = width // 64)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=g)).to(dtype)

    state = {"token_embedding.weight": rnd(vocab, width, scale=0.5),
             "positional_embedding": rnd(context, width, scale=0.2),
             "ln_final.weight": rnd(width, scale=0.2, offset=1.0), "ln_final.bias": rnd(width, scale=0.2),
             "text_projection": rnd(width, 32)}
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state.update({
            p + "attn.in_proj_weight": rnd(3 * width, width, scale=width ** -0.5),
            p + "attn.in_proj_bias": rnd(3 * width, scale=0.1),
            p + "attn.out_proj.weight": rnd(width, width, scale=width ** -0.5),
            p + "attn.out_proj.bias": rnd(width, scale=0.1),
            p + "ln_1.weight": rnd(width, scale=0.2, offset=1.0), p + "ln_1.bias": rnd(width, scale=0.2),
            p + "mlp.c_fc.weight": rnd(ff, width, scale=width ** -0.5),
            p + "mlp.c_fc.bias": rnd(ff, scale=0.1),
            p + "mlp.c_proj.weight": rnd(width, ff, scale=ff ** -0.5),
            p + "mlp.c_proj.bias": rnd(width, scale=0.1),
            p + "ln_2.weight": rnd(width, scale=0.2, offset=1.0), p + "ln_2.bias": rnd(width, scale=0.2),
        })
    return state


def openai_text_reference(state, tokens):
    """float64 OpenAI CLIP encode_text up to ln_final: embeddings + positions, pre-LN residual blocks with a
    causal mask (multi-head attention with 64-d heads, QuickGELU MLP), final LayerNorm; all token states."""
    s = {k: v.double() for k, v in state.items()}

    def layer_norm(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * w + b

    x = s["token_embedding.weight"][tokens] + s["positional_embedding"]  # (B, L, W)
    B, L, W = x.shape
    H = W // 64
    future = torch.ones(L, L, dtype=torch.bool).triu(1)  # position i may not see j > i
    n_layers = len({k.split(".")[2] for k in s if k.startswith("transformer.resblocks.")})
    for i in range(n_layers):
        p = f"transformer.resblocks.{i}."
        h = layer_norm(x, s[p + "ln_1.weight"], s[p + "ln_1.bias"])
        q, k, v = (h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, L, H, 64).transpose(1, 2) for t in (q, k, v))  # (B, H, L, 64)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(64)).masked_fill(future, float("-inf"))
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, W)
        x = x + att @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
        h = layer_norm(x, s[p + "ln_2.weight"], s[p + "ln_2.bias"])
        h = h @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]
    return layer_norm(x, s["ln_final.weight"], s["ln_final.bias"])


def test_from_openai_state_matches_float64_reference():
    state = random_openai_state()
    encoder = TextEncoder.from_openai_state(state)
    assert encoder.config["num_attention_heads"] == 2 and encoder.config["num_hidden_layers"] == 2
    assert encoder.config["hidden_act"] == "quick_gelu" and encoder.config["layer_norm_eps"] == 1e-5
    assert encoder.width == 128
    tokens = default_tokenizer()(["", "This man has a beard.", "a " * 80])
    tokens = torch.cat([tokens, torch.randint(0, 49408, (1, 77), generator=torch.Generator().manual_seed(1))])
    out = encoder(tokens)
    expected = openai_text_reference(state, tokens)
    assert out.shape == (4, 77, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    assert (expected[:, 1:] - expected[:, :1]).abs().max() > 0.1  # positions differ: a wrong mask would show


def test_from_openai_state_fp16_becomes_float32():
    state = random_openai_state(width=64, layers=1, ff=128, dtype=torch.float16)
    encoder = TextEncoder.from_openai_state(state)
    weight = encoder.model.embeddings.token_embedding.weight
    assert weight.dtype == torch.float32 and torch.equal(weight, state["token_embedding.weight"].float())
    tokens = default_tokenizer()(["a smiling woman"])
    expected = openai_text_reference(state, tokens)
    torch.testing.assert_close(encoder(tokens).double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("ln_final.bias"), "ln_final.bias"),
    (lambda s: s.pop("transformer.resblocks.0.mlp.c_fc.bias"), "resblocks.0.mlp.c_fc.bias"),
    (lambda s: s.__setitem__("logit_scale", torch.ones(())), "logit_scale"),
    (lambda s: s.__setitem__("transformer.resblocks.3.ln_1.weight", torch.ones(64)),
     "resblocks found [0, 3]"),
    (lambda s: s.pop("token_embedding.weight"), "token_embedding.weight"),
])
def test_from_openai_state_is_strict(edit, message):
    state = random_openai_state(width=64, layers=1, ff=128, vocab=49408)
    edit(state)
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
        TextEncoder.from_openai_state(state)


def test_from_openai_state_shape_mismatch_is_an_error():
    state = random_openai_state(width=64, layers=1, ff=128)
    state["transformer.resblocks.0.attn.out_proj.weight"] = torch.zeros(64, 32)
    with pytest.raises(ValueError, match="shape"):
        TextEncoder.from_openai_state(state)


# --------------------------------------------------------------------------- config / state / HF dir
def test_from_config_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = TextEncoder.from_config(TINY, seed=1)
    after = torch.rand(3)
    assert torch.equal(before, after)
    b = TextEncoder.from_config(TINY, seed=1)
    c = TextEncoder.from_config(TINY, seed=2)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.state_dict()["model.encoder.layers.0.mlp.fc1.weight"],
                           c.state_dict()["model.encoder.layers.0.mlp.fc1.weight"])
    assert a.config == {**a.config, **TINY} and a.config["vocab_size"] == 49408 and a.context_length == 77


def test_state_round_trip():
    encoder = TextEncoder.from_config(TINY, seed=3)
    config = json.loads(json.dumps(encoder.config))  # a plain, JSON-able dict
    restored = TextEncoder.from_state(config, encoder.state_dict())
    tokens = default_tokenizer()(["This woman has no bangs.", ""])
    assert torch.equal(restored(tokens), encoder(tokens))
    with pytest.raises(ValueError, match="do not match"):
        TextEncoder.from_state({**config, "num_hidden_layers": 3}, encoder.state_dict())


def test_from_pretrained_reloads_offline(tmp_path):
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **TINY)
    torch.manual_seed(0)
    hf = CLIPTextModel(config).eval()
    hf.save_pretrained(tmp_path / "text")
    encoder = TextEncoder.from_pretrained(tmp_path / "text")
    tokens = default_tokenizer()(["This man has a beard.", "", "a " * 90])
    with torch.no_grad():
        expected = hf(input_ids=tokens).last_hidden_state
    assert torch.equal(encoder(tokens), expected)
    assert encoder.config["hidden_size"] == 64 and encoder.config["hidden_act"] == "quick_gelu"


def test_from_pretrained_full_clip_model_uses_text_tower(tmp_path):
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 16}
    text = {"vocab_size": 49408, "max_position_embeddings": 77, **TINY}
    torch.manual_seed(0)
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    full.save_pretrained(tmp_path / "clip")
    encoder = TextEncoder.from_pretrained(tmp_path / "clip")
    tokens = default_tokenizer()(["a photo of a face"])
    with torch.no_grad():
        expected = full.text_model(input_ids=tokens).last_hidden_state
    assert torch.equal(encoder(tokens), expected)


def test_from_pretrained_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        TextEncoder.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder.from_pretrained(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a CLIP text model"):
        TextEncoder.from_pretrained(tmp_path / "bert")
    (tmp_path / "noweights").mkdir()
    CLIPTextConfig(**TINY).save_pretrained(tmp_path / "noweights")
    with pytest.raises(ValueError, match="could not load"):
        TextEncoder.from_pretrained(tmp_path / "noweights")


def test_bad_config_is_an_error():
    with pytest.raises(ValueError, match="unknown CLIP text config keys"):
        TextEncoder.from_config({"hidden": 64})
    with pytest.raises(ValueError, match="divisible"):
        TextEncoder.from_config({**TINY, "num_attention_heads": 5})


# --------------------------------------------------------------------------- encoding and freezing
@pytest.fixture(scope="module")
def tiny():
    return TextEncoder.from_config(TINY, seed=0)


def test_encode_caches_per_caption(tiny):
    tiny.clear_cache()
    batches = []
    handle = tiny.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    try:
        first = tiny.encode(["a man", "a woman", "a man"])
        assert batches == [2]  # one forward for the two distinct captions
        again = tiny.encode(["a woman", "a man"])
        assert batches == [2]  # nothing re-encoded
        mixed = tiny.encode(["a child", "a man"])
        assert batches == [2, 1]  # only the new caption
        null = tiny.null_features()
        assert batches == [2, 1, 1]
        tiny.null_features()
        assert batches == [2, 1, 1]
    finally:
        handle.remove()
    direct = tiny(default_tokenizer()(["a man", "a woman", "a child", ""]))
    assert first.shape == (3, 77, 64)
    assert torch.equal(first, direct[[0, 1, 0]])
    assert torch.equal(again, torch.stack([direct[1], direct[0]]))
    assert torch.equal(mixed[0], direct[2])
    assert null.shape == (77, 64) and torch.equal(null, direct[3])
    assert tiny.encode([]).shape == (0, 77, 64)


def test_cache_limit_drops_oldest_captions(tiny):
    tiny.clear_cache()
    tiny.cache_limit = 2
    calls = []
    handle = tiny.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        three = tiny.encode(["one", "two", "three"])  # all returned, then "one" is dropped
        assert three.shape == (3, 77, 64) and calls == [3]
        tiny.encode(["two", "three"])
        assert calls == [3]
        assert torch.equal(tiny.encode(["one"])[0], three[0]) and calls == [3, 1]
    finally:
        handle.remove()
        tiny.cache_limit = None
        tiny.clear_cache()


def test_cache_is_dropped_when_weights_change():
    encoder = TextEncoder.from_config(TINY, seed=0)
    before = encoder.encode(["a man"])
    encoder.load_state_dict(TextEncoder.from_config(TINY, seed=1).state_dict())
    after = encoder.encode(["a man"])
    assert not torch.equal(before, after)
    encoder.to(torch.float64)
    assert encoder.encode(["a man"]).dtype == torch.float64


def test_encoder_is_frozen(tiny):
    assert all(not p.requires_grad for p in tiny.parameters())
    parent = nn.ModuleDict({"text": tiny, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not tiny.training and not any(m.training for m in tiny.modules())
    tiny.train(True)
    assert not tiny.training and not tiny.model.training
    out = tiny(default_tokenizer()(["frozen"]))
    assert not out.requires_grad


def test_forward_rejects_bad_tokens(tiny):
    with pytest.raises(ValueError, match=r"\(B, 77\)"):
        tiny(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        tiny(torch.zeros(1, 77))
    with pytest.raises(ValueError, match="token ids"):
        tiny(torch.full((1, 77), 49408))
    with pytest.raises(TypeError, match="strings"):
        tiny.encode([None])
