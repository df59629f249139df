"""python -m scd.convert: official TEx-Face checkpoint layout -> our SCD checkpoint, strictly and safely."""
from __future__ import annotations

import os
import runpy
import sys

import pytest
import torch

from scd.pipeline import SCDPipeline
from scd.convert import main


def load(path, **kwargs) -> SCDPipeline:
    """The checkpoint at ``path`` as a pipeline without a generator (denoiser, diffusion, text encoder, config)."""
    return SCDPipeline.from_pretrained(path, generator=None, device="cpu", **kwargs)


D, CODE, FF, EXP, DEPTH, HEADS = 64, 32, 96, 50, 2, 4
CLIP_WIDTH, CLIP_VOCAB, CLIP_CTX = 64, 49408, 77


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of an official `scd.Model` state dict (the released names), with small sizes."""
    shapes = {
        "null_cond_txt": (1, 1, D), "null_cond_exp": (1, 1, D), "rotary.freqs": (D // 2,),
        "time_mlp.1.weight": (2 * D, D // 2), "time_mlp.1.bias": (2 * D,),
        "to_time_emb.0.weight": (D, 2 * D), "to_time_emb.0.bias": (D,),
        "to_time_tokens.0.weight": (2 * D, 2 * D), "to_time_tokens.0.bias": (2 * D,),
        "input_projection.weight": (D, CODE), "input_projection.bias": (D,),
        "exp_proj.0.weight": (D, EXP), "exp_proj.0.bias": (D,),
        "final_layer.weight": (CODE, D), "final_layer.bias": (CODE,),
    }
    for i in range(DEPTH):
        p = f"seqTransDecoder.stack.{i}."
        for attn in ("self_attn", "multihead_attn", "multihead_attn_exp"):
            shapes |= {p + attn + ".in_proj_weight": (3 * D, D), p + attn + ".in_proj_bias": (3 * D,),
                       p + attn + ".out_proj.weight": (D, D), p + attn + ".out_proj.bias": (D,)}
        shapes |= {p + "linear1.weight": (FF, D), p + "linear1.bias": (FF,), p + "linear2.weight": (D, FF),
                   p + "linear2.bias": (D,), p + "layer_selection.0.weight": (D, D),
                   p + "layer_selection.0.bias": (D,), p + "rotary.freqs": (D // 2,)}
        for j in (1, 2, 3):
            shapes |= {p + f"norm{j}.weight": (D,), p + f"norm{j}.bias": (D,),
                       p + f"film{j}.block.1.weight": (2 * D, D), p + f"film{j}.block.1.bias": (2 * D,)}
    w = CLIP_WIDTH
    shapes |= {"clip_model.token_embedding.weight": (CLIP_VOCAB, w),
               "clip_model.positional_embedding": (CLIP_CTX, w), "clip_model.ln_final.weight": (w,),
               "clip_model.ln_final.bias": (w,), "clip_model.text_projection": (w, 32)}
    p = "clip_model.transformer.resblocks.0."
    shapes |= {p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
               p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
               p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
               p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
               p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,)}
    return shapes


def official_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 * torch.randn(s, generator=g) for k, s in official_shapes().items()}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-layout model.pt with raw and EMA weights (the CLIP tower in both, as in the release)."""
    path = tmp_path_factory.mktemp("official") / "model.pt"
    raw, ema = official_state(0), official_state(1)
    ema |= {k: v for k, v in raw.items() if k.startswith("clip_model.")}
    torch.save({"state_dict": raw, "ema": ema}, path)
    return path, raw, ema


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_converts_raw_and_ema_weights(tmp_path, official, capsys):
    path, raw, ema = official
    out_dir = tmp_path / "scd"
    rc, out, err = run(capsys, path, out_dir, "--heads", HEADS)
    assert rc == 0, err
    assert "depth 2" in out and "raw + EMA" in out
    for use_ema, source in ((True, ema), (False, raw)):
        bundle = load(out_dir, use_ema=use_ema)
        assert bundle.denoiser.config == dict(code_dim=CODE, n_tokens=14, dim=D, depth=DEPTH, heads=HEADS,
                                              ff_dim=FF, dropout=0.1, text_dim=CLIP_WIDTH, text_len=CLIP_CTX,
                                              exp_dim=EXP)
        state = bundle.denoiser.state_dict()
        for key, value in state.items():
            if key != "null_text":
                assert torch.equal(value, source[key]), key
    # The null text is the converted CLIP tower's encoding of "".
    assert torch.equal(state["null_text"], bundle.text_encoder.null_features())
    assert torch.equal(bundle.text_encoder.state_dict()["model.embeddings.token_embedding.weight"],
                       raw["clip_model.token_embedding.weight"])
    assert bundle.diffusion.config["objective"] == "v" and bundle.diffusion.num_timesteps == 1000
    assert bundle.config["sampling"]["cond_scale"] == 7.0 and bundle.config["sampling"]["steps"] == 50


def test_no_ema_and_missing_ema(tmp_path, official, capsys):
    path, raw, _ = official
    rc, out, _ = run(capsys, path, tmp_path / "a", "--heads", HEADS, "--no-ema")
    assert rc == 0 and "--no-ema" in out
    assert not (tmp_path / "a" / "ema.safetensors").exists()
    only_raw = tmp_path / "raw.pt"
    torch.save({"state_dict": raw}, only_raw)
    rc, out, _ = run(capsys, only_raw, tmp_path / "b", "--heads", HEADS)
    assert rc == 0 and "no 'ema'" in out
    assert load(tmp_path / "b").config["has_ema"] is False


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("final_layer.bias"), "missing [final_layer.bias]"),
    (lambda s: s.pop("seqTransDecoder.stack.1.film2.block.1.weight"), "stack.1.film2.block.1.weight]"),
    (lambda s: s.update({"extra_head.weight": torch.zeros(2)}), "unexpected [extra_head.weight]"),
    (lambda s: s.update({"seqTransDecoder.stack.3.norm1.weight": torch.zeros(D)}), "numbered 0..N-1"),
    (lambda s: s.update({"final_layer.bias": torch.zeros(CODE + 1)}), "unexpected shapes"),
    (lambda s: s.pop("clip_model.ln_final.bias"), "CLIP text tower does not convert"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("clip_model.")], "no CLIP text tower"),
])
def test_refuses_missing_or_unexpected_tensors(tmp_path, capsys, change, message):
    state = official_state(0)
    change(state)
    src, dst = tmp_path / "model.pt", tmp_path / "out"
    torch.save({"state_dict": state}, src)
    rc, out, err = run(capsys, src, dst, "--heads", HEADS)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == [src]


def test_refuses_wrong_layout_and_existing_output(tmp_path, official, capsys):
    path, raw, _ = official
    bare = tmp_path / "bare.pt"
    torch.save(raw, bare)
    rc, _, err = run(capsys, bare, tmp_path / "out", "--heads", HEADS)
    assert rc == 2 and "official layout" in err
    (tmp_path / "exists").mkdir()
    rc, _, err = run(capsys, path, tmp_path / "exists", "--heads", HEADS)
    assert rc == 2 and "--force" in err
    rc, _, err = run(capsys, path, tmp_path / "exists", "--heads", HEADS, "--force")
    assert rc == 0 and (tmp_path / "exists" / "config.json").is_file()
    rc, _, err = run(capsys, path, tmp_path / "out", "--heads", 5)
    assert rc == 2 and "heads" in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc, _, err = run(capsys, tmp_path / "junk.pt", tmp_path / "out")
    assert rc == 2 and "Unsupported operand" in err and err.count("\n") == 1


class Payload:
    """Unpickling this calls os.mkdir(marker): any code execution at load time leaves the marker behind."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_refuses_a_malicious_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = tmp_path / "model.pt"
    torch.save({"state_dict": {"final_layer.bias": Payload(str(marker))}}, src)
    rc, out, err = run(capsys, src, tmp_path / "out")
    assert rc == 2 and "weights_only" in err and "mkdir" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_cli_exit_code_and_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["scd.convert", str(tmp_path / "nope.pt"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("scd.convert", run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint not found") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
