"""python -m inversion.convert: the released Re-PoI checkpoint layout -> our encoder checkpoint, strictly and safely.

The fake official file holds the repoi_reference fixture's seeded encoder weights and the tiny EG3D decoder of
eg3d_reference under ``decoder.*``, as TEx-Face's ``checkpoints.pt`` holds the FFHQ-512 one.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from eg3d.checkpoint import load_generator, save_generator
from helpers import reference_fixture
from inversion import convert as convert_module
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.convert import main
from repoi_reference import compare, load_reference, seeded_weights


def tiny_decoder_state() -> dict[str, torch.Tensor]:
    return load_file(str(reference_fixture("eg3d_reference/tiny") / "G_state.safetensors"))


def write_official(path, encoder: dict, decoder: dict | None = None, prefix: str = "", **top) -> str:
    state = {prefix + k: v for k, v in encoder.items()}
    state |= {prefix + "decoder." + k: v for k, v in (decoder or {}).items()}
    torch.save({"state_dict": state, "opts": {"model_name": "x"}, **top}, path)
    return str(path)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """Path of the fake official checkpoint (encoder + tiny decoder)."""
    return write_official(tmp_path_factory.mktemp("official") / "checkpoints.pt", seeded_weights("repoi."),
                          tiny_decoder_state())


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    """A generator checkpoint of the fixture's tiny decoder (what --generator names)."""
    _, _, G = load_reference()
    return save_generator(G, tmp_path_factory.mktemp("gen") / "tiny")


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def nothing_written(out) -> bool:
    """No OUT and no hidden staging sibling of it."""
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def config(out) -> dict:
    return json.loads((out / "config.json").read_text())


def test_converted_encoder_matches_the_official_forward(official, tmp_path, capsys):
    out = tmp_path / "repoi"
    assert main([official, str(out), "--preset", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"python -m inversion.invert ckpt={out} image=... camera=..." in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generator", "model.safetensors"]
    cfg = config(out)
    assert cfg["generator"] == {"_target_": "eg3d.checkpoint.build_generator", "ckpt": "generator",
                                "preset": "tiny", "seed": 0, "neural_rendering_resolution": None}
    assert cfg["extra"]["converted_from"] == "checkpoints.pt" and cfg["extra"]["official_opts"] == {"model_name": "x"}

    encoder = load_encoder(out)
    G = encoder_generator(out)
    assert G.neural_rendering_resolution == 64
    for key, value in tiny_decoder_state().items():  # the decoder, mapping network and w_avg included, exactly
        assert torch.equal(G.state_dict()[key], value), key
    meta, io, _ = load_reference()
    with torch.no_grad():
        result = encoder(io["x"], io["cam"], G, deterministic=True)
    compare(meta, io, "codes", result["codes"])
    compare(meta, io, "refine", result["refine"])


def test_matching_generator_is_recorded_by_absolute_path(official, tiny_generator, tmp_path, monkeypatch):
    out = tmp_path / "repoi"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    monkeypatch.chdir(tiny_generator.parent)
    assert main([official, str(out), "--generator", tiny_generator.name, "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # replaced as a whole
    assert config(out)["generator"]["ckpt"] == str(tiny_generator.resolve())
    assert os.path.isabs(config(out)["generator"]["ckpt"])


def test_a_different_generator_is_refused(official, tiny_generator, tmp_path, capsys):
    G = load_generator(tiny_generator)
    with torch.no_grad():
        G.backbone.mapping.w_avg.add_(1e-3)
    other = save_generator(G, tmp_path / "other")
    out = tmp_path / "repoi"
    assert main([official, str(out), "--generator", str(other)]) == 2
    line = error_line(capsys)
    assert "different values (1): backbone.mapping.w_avg" in line and str(other) in line
    assert nothing_written(out)


def test_encoder_keys_are_checked_strictly(tmp_path, capsys):
    weights = seeded_weights("repoi.")
    weights.pop("w_plus_query")
    weights["head.weight"] = torch.zeros(3)
    src = write_official(tmp_path / "bad.pt", weights, tiny_decoder_state())
    out = tmp_path / "repoi"
    assert main([src, str(out), "--preset", "tiny"]) == 2
    line = error_line(capsys)
    assert "missing keys (1): w_plus_query" in line and "unexpected keys (1): head.weight" in line
    assert nothing_written(out)


def test_rotary_frequencies_must_be_the_constants(tmp_path, capsys):
    weights = seeded_weights("repoi.")
    key = "pose_mapping_residual.transformerlayer_fine.rotary.freqs"
    weights[key] = weights[key] * 1.01
    src = write_official(tmp_path / "bad.pt", weights, tiny_decoder_state())
    out = tmp_path / "repoi"
    assert main([src, str(out), "--preset", "tiny"]) == 2
    assert "rotary frequencies differ" in (line := error_line(capsys)) and key in line
    assert nothing_written(out)


def test_dataparallel_prefix_and_missing_decoder(tiny_generator, tmp_path, capsys):
    src = write_official(tmp_path / "encoder_only.pt", seeded_weights("repoi."), prefix="module.")
    out = tmp_path / "repoi"
    assert main([src, str(out)]) == 2
    assert "no decoder.* tensors" in error_line(capsys) and nothing_written(out)
    assert main([src, str(out), "--generator", str(tiny_generator)]) == 0
    encoder = load_encoder(out)
    assert torch.equal(encoder.w_plus_query, seeded_weights("repoi.")["w_plus_query"])
    assert config(out)["generator"]["ckpt"] == str(tiny_generator.resolve())


class Opaque:
    """A custom class: torch.save pickles it by reference, so only an unrestricted load could rebuild it."""


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("kind", ["text", "custom_class", "code"])
def test_unsafe_or_foreign_files_are_refused(kind, tmp_path, capsys):
    src, marker = tmp_path / "checkpoints.pt", tmp_path / "marker"
    if kind == "text":
        src.write_text("not a checkpoint\n")
    else:
        payload = Opaque() if kind == "custom_class" else RunsCode(marker)
        torch.save({"state_dict": {"w_plus_query": torch.zeros(1, 14, 512)}, "opts": payload}, src)
    out = tmp_path / "repoi"
    assert main([str(src), str(out)]) == 2
    line = error_line(capsys)
    assert str(src) in line
    expected = {"text": "is not a readable PyTorch checkpoint (Unsupported operand",
                "custom_class": f"refusing to load it: it references the Python object {__name__}.Opaque",
                "code": "refusing to load it: it references the Python object posix.mkdir"}[kind]
    assert expected in line
    assert not marker.exists() and nothing_written(out)


def test_existing_output_is_kept_without_force(official, tmp_path, capsys):
    out = tmp_path / "repoi"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([official, str(out), "--preset", "tiny"]) == 2
    assert "already exists; pass --force" in error_line(capsys)
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_failed_write_leaves_no_output(official, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(convert_module, "save_generator", fail)  # after the encoder is written into the stage
    out = tmp_path / "repoi"
    with pytest.raises(OSError, match="disk full"):
        main([official, str(out), "--preset", "tiny"])
    assert nothing_written(out)
