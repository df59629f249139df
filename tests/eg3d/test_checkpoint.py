"""Generator checkpoints: our safetensors + JSON format, TEx-Face's state-dict file, presets and build_generator."""
from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import reference_fixture
from safetensors.torch import load_file

from eg3d.camera import orbit_labels
from eg3d.checkpoint import build_generator, load_generator, save_generator
from eg3d.generator import TriPlaneGenerator
from eg3d.presets import PRESETS, preset
from texface.checkpoint import read_config, read_tensors, write_checkpoint
from texface.errors import CheckpointError


@pytest.fixture(scope="module")
def tiny():
    return build_generator(preset="tiny", seed=0)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_generator(tiny, path)
    return path


def _equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _render(G, nrr=16):
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1))
    c = orbit_labels(2)
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7, noise_mode="const", deterministic=True, neural_rendering_resolution=nrr)


# ---- our format ------------------------------------------------------------------------------------------------

def test_round_trip_is_exact(tiny, saved):
    G = load_generator(saved)
    assert isinstance(G, TriPlaneGenerator) and not G.training
    assert G.init_kwargs == tiny.init_kwargs and G.neural_rendering_resolution == 64
    assert _equal_states(G, tiny)
    expected, out = _render(tiny), _render(G)
    assert all(torch.equal(out[k], v) for k, v in expected.items())


def test_file_layout(saved, tiny):
    assert sorted(os.listdir(saved)) == ["config.json", "model.safetensors"]
    config = json.loads((saved / "config.json").read_text())
    assert config == {"format": "texface.eg3d.TriPlaneGenerator", "format_version": 1,
                      "init_kwargs": tiny.init_kwargs, "neural_rendering_resolution": 64}
    assert set(load_file(saved / "model.safetensors")) == set(tiny.state_dict())


def test_render_resolution_is_saved(tmp_path):
    G = build_generator(seed=1, neural_rendering_resolution=32)
    save_generator(G, tmp_path / "g")
    assert load_generator(tmp_path / "g").neural_rendering_resolution == 32


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    a, b = build_generator(seed=1), build_generator(seed=2)
    save_generator(a, tmp_path / "g")
    save_generator(b, tmp_path / "g")
    assert _equal_states(load_generator(tmp_path / "g"), b)
    assert os.listdir(tmp_path) == ["g"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "c", {"a": 1}, {"t": {"x": torch.ones(2)}})
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path / "c", {"a": object()}, {"t": {"x": torch.zeros(2)}})  # config is not JSON
    assert read_config(tmp_path / "c") == {"a": 1} and torch.equal(read_tensors(tmp_path / "c", "t")["x"],
                                                                    torch.ones(2))
    assert os.listdir(tmp_path) == ["c"]


# ---- errors ----------------------------------------------------------------------------------------------------

def _copy_with(saved, tmp_path, *, config=None, state=None):
    """A copy of ``saved`` with its config and/or state dict replaced."""
    cfg = config if config is not None else read_config(saved)
    tensors = state if state is not None else read_tensors(saved, "model")
    return write_checkpoint(tmp_path / "bad", cfg, {"model": tensors})


def test_missing_and_malformed(tmp_path, saved):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_generator(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="expected config.json"):
        load_generator(tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"123")
    with pytest.raises(CheckpointError, match="unknown checkpoint kind"):
        load_generator(tmp_path / "weights.bin")

    bad = _copy_with(saved, tmp_path, config={"format": "something.else"})
    with pytest.raises(CheckpointError, match="is not a generator checkpoint"):
        load_generator(bad)
    bad = _copy_with(saved, tmp_path, config={**read_config(saved), "format_version": 99})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_generator(bad)
    bad = _copy_with(saved, tmp_path, config={**read_config(saved), "init_kwargs": {"z_dim": 512}})
    with pytest.raises(CheckpointError, match="cannot build a TriPlaneGenerator"):
        load_generator(bad)

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text((saved / "config.json").read_text())
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_generator(tmp_path / "corrupt")


def test_state_dict_is_loaded_strictly(tmp_path, saved):
    state = read_tensors(saved, "model")
    changed = dict(state)
    del changed["decoder.net.0.weight"]
    changed["backbone.extra"] = torch.zeros(1)
    changed["backbone.mapping.w_avg"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        load_generator(_copy_with(saved, tmp_path, state=changed))
    message = str(info.value)
    assert "missing keys (1): decoder.net.0.weight" in message
    assert "unexpected keys (1): backbone.extra" in message
    assert "shape mismatches (1): backbone.mapping.w_avg (7,) != (512,)" in message
    assert "\n" not in message


# ---- TEx-Face's {'G_ema': state_dict} file ---------------------------------------------------------------------

def test_state_dict_file_assumes_ffhq512(tmp_path, saved, caplog):
    # A tiny state dict under the ffhq512 assumption must fail loudly, naming the mismatch.
    torch.save({"G_ema": read_tensors(saved, "model")}, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match="state dict does not match the generator; .*shape mismatches"):
        load_generator(tmp_path / "tiny.pth")
    assert "assuming the 'ffhq512' generator preset" in caplog.text

    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"does not hold \{'G_ema': state_dict\}"):
        load_generator(tmp_path / "other.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_state_dict_file_is_read_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"G_ema": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load it: it references the Python object posix.system"):
        load_generator(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.slow
def test_ffhq512_state_dict_file_round_trip(tmp_path):
    G = build_generator(preset="ffhq512", seed=0)
    assert G.neural_rendering_resolution == 128 and G.num_ws == 14
    torch.save({"G_ema": G.state_dict()}, tmp_path / "ffhqrebalanced512-128.pth")
    loaded = load_generator(tmp_path / "ffhqrebalanced512-128.pth")
    assert _equal_states(loaded, G) and loaded.neural_rendering_resolution == 128
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = loaded(z, orbit_labels(1), noise_mode="const", deterministic=True, neural_rendering_resolution=32)
    assert out["image"].shape == (1, 3, 512, 512)


# ---- presets and build_generator -------------------------------------------------------------------------------

def test_tiny_preset_is_the_fixture_generator(tmp_path):
    folder = reference_fixture("eg3d_reference/tiny")
    meta = json.loads((folder / "meta.json").read_text())
    assert PRESETS["tiny"] == {"init_kwargs": meta["G_kwargs"],
                               "neural_rendering_resolution": meta["neural_rendering_resolution"]}
    # The official state dict loads strictly into the preset's generator through our format.
    write_checkpoint(tmp_path / "ref", {"format": "texface.eg3d.TriPlaneGenerator", "format_version": 1,
                                        **PRESETS["tiny"]}, {"model": load_file(folder / "G_state.safetensors")})
    G = load_generator(tmp_path / "ref")
    reference = load_file(folder / "G_state.safetensors")
    assert all(torch.equal(G.state_dict()[k], v) for k, v in reference.items())


def test_ffhq512_preset_is_tex_face_config():
    config = preset("ffhq512")
    kwargs = config["init_kwargs"]
    assert config["neural_rendering_resolution"] == 128
    assert (kwargs["img_resolution"], kwargs["channel_base"], kwargs["channel_max"]) == (512, 32768, 512)
    assert kwargs["rendering_kwargs"]["superresolution_module"].endswith("SuperresolutionHybrid8XDC")
    assert (kwargs["rendering_kwargs"]["depth_resolution"],
            kwargs["rendering_kwargs"]["depth_resolution_importance"]) == (48, 48)
    assert kwargs["sr_num_fp16_res"] == 4 and kwargs["mapping_kwargs"] == {"num_layers": 2}
    config["init_kwargs"]["z_dim"] = 0  # a copy: the preset itself is unchanged
    assert preset("ffhq512")["init_kwargs"]["z_dim"] == 512
    with pytest.raises(ValueError, match="unknown generator preset 'huge'"):
        preset("huge")


def test_build_generator_is_seeded_and_frozen(tiny):
    rng = torch.random.get_rng_state()
    same, other = build_generator(seed=0), build_generator(seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is untouched
    assert _equal_states(same, tiny) and not _equal_states(other, tiny)
    assert not tiny.training and not any(p.requires_grad for p in tiny.parameters())


def test_random_w_avg_is_the_mean_style(tiny):
    # w_avg is the mean of mapped latents (the official init leaves zeros); compare with an independent sample.
    w_avg = tiny.backbone.mapping.w_avg
    z = torch.randn(4000, tiny.z_dim, generator=torch.Generator().manual_seed(123))
    c = orbit_labels(1, yaw_range=0.0, pitch_range=0.0, pitch_center=torch.pi / 2).expand(4000, 25)
    with torch.no_grad():
        w = tiny.mapping(z, c)[:, 0]  # (4000, 512)
    stderr = w.std(0) * (1 / 1000 + 1 / 4000) ** 0.5
    assert w_avg.abs().max() > 0
    assert ((w_avg - w.mean(0)).abs() < 5 * stderr).all()
    with torch.no_grad():
        assert torch.allclose(tiny.mapping(z[:2], c[:2], truncation_psi=0), w_avg.expand(2, 14, -1))


def test_build_generator_options(saved, tiny):
    assert build_generator(ckpt=saved, preset="ffhq512").init_kwargs == tiny.init_kwargs  # ckpt wins
    assert build_generator(neural_rendering_resolution=32).neural_rendering_resolution == 32
    with pytest.raises(ValueError, match="must be positive"):
        build_generator(neural_rendering_resolution=0)
    with pytest.raises(ValueError, match="unknown generator preset"):
        build_generator(preset="nope")



def test_checkpoint_folder_gets_normal_permissions(tmp_path):
    out = write_checkpoint(tmp_path / "ck", {"a": 1}, {"model": {"w": torch.zeros(2)}})
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == (0o777 & ~umask)
