"""`python -m scd.generate`: outputs, modes, determinism, sampling pipeline and one-line errors.

A tiny SCD checkpoint (small denoiser, tiny random CLIP text tower) is built once per module; renders use the
tiny random-weight generator of conf/generator/tiny.yaml, 2 DDIM steps and a few video frames.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from eg3d.frames import FrameRenderer
from scd.checkpoint import save_scd
from scd.denoiser import StyleCodeDenoiser
from scd.generate import check_options, generate
from scd.pipeline import DEMO_SCD, SCDPipeline
from scd.sampling import SAMPLING_KEYS, initial_noise, prepare_captions, prepare_exp
from scd.text import TextEncoder
from texface.config import compose
from texface.errors import CheckpointError, ConfigError
SIZE, RAW = 128, 32  # the tiny generator's image size, and the neural-render size the tests set (faster)
TINY = ["generator=tiny", "steps=2", "num_samples=2", "progress=false", "device=cpu",
        f"++generator.neural_rendering_resolution={RAW}"]
CAPTION_A, CAPTION_B = "This man has a beard.", "She is smiling and has bangs."
TWO_CAPTIONS = f"captions=['{CAPTION_A}','{CAPTION_B}']"


def tiny(overrides) -> list[str]:
    """TINY + overrides; a named generator replaces the tiny one."""
    named = any(o.startswith("generator=") for o in overrides)
    return [o for o in TINY if not (named and o.startswith("generator="))] + list(overrides)


def config(*overrides: str):
    return compose("generate", tiny(overrides))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    text_encoder = TextEncoder.from_config(
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        seed=0)
    torch.manual_seed(0)
    denoiser = StyleCodeDenoiser(dim=32, depth=1, heads=2, ff_dim=64, dropout=0.1,
                                 text_dim=text_encoder.width)
    denoiser.set_null_text(text_encoder.null_features())
    path = tmp_path_factory.mktemp("scd") / "tiny"
    save_scd(path, denoiser=denoiser, ema_denoiser=None, text_encoder=text_encoder,
             diffusion_config={"timesteps": 1000, "schedule": "cosine", "objective": "v"})
    return path


@pytest.fixture(scope="module")
def bundle(ckpt):
    return SCDPipeline.from_pretrained(ckpt, generator=None, device="cpu")


@pytest.fixture(scope="module")
def exp_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("exp") / "exp.npy"
    np.save(path, np.random.default_rng(0).standard_normal(50).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def first_run(ckpt, exp_file, tmp_path_factory) -> dict:
    """Text + expression, 2 samples, a 3-frame depth orbit video each."""
    out = tmp_path_factory.mktemp("run") / "out"
    return generate(config(f"ckpt={ckpt}", f"exp={exp_file}", TWO_CAPTIONS, "seed=3", "video=true",
                           "video_frames=3", "video_mode=image_depth", f"out_dir={out}"))


def read_png(path: Path) -> np.ndarray:
    return iio.imread(path)


def mp4_frames(path: Path) -> np.ndarray:
    return np.stack(list(iio.imiter(path)))


# ------------------------------------------------------------------------------------------------ outputs

def test_writes_grid_samples_latents_conditions_and_videos(first_run, exp_file):
    out = first_run["out_dir"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["conditions.json", "grid.png", "latents.pt", "orbit.mp4", "orbit_00.mp4", "orbit_01.mp4",
                     "sample_00.png", "sample_01.png"]  # nothing else, no staging folder left behind
    assert sorted(first_run["files"]) == sorted(out / n for n in names)

    assert read_png(out / "grid.png").shape == (SIZE, 2 * SIZE, 3)
    samples = [read_png(out / f"sample_{i:02d}.png") for i in range(2)]
    assert all(s.shape == (SIZE, SIZE, 3) and s.dtype == np.uint8 for s in samples)
    np.testing.assert_array_equal(read_png(out / "grid.png"), np.concatenate(samples, axis=1))

    latents = torch.load(out / "latents.pt", weights_only=True)
    assert type(latents) is torch.Tensor and latents.dtype == torch.float32 and latents.shape == (2, 14, 512)
    torch.testing.assert_close(latents, first_run["latents"], rtol=0, atol=0)
    assert latents.abs().max() <= 1.0  # the default x0 clamp

    conditions = json.loads((out / "conditions.json").read_text())
    assert conditions["captions"] == [CAPTION_A, CAPTION_B]
    np.testing.assert_allclose(np.array(conditions["exp"]), np.tile(np.load(exp_file), (2, 1)), rtol=0,
                               atol=1e-7)
    assert conditions["seed"] == 3 and conditions["steps"] == 2 and conditions["cond_scale"] == 7.0
    assert conditions["source"] == "sampled"

    grid_video = mp4_frames(out / "orbit.mp4")
    assert grid_video.shape == (3, RAW, 2 * RAW, 3)  # both codes side by side (gen_videos' grid)
    for i in range(2):
        frames = mp4_frames(out / f"orbit_{i:02d}.mp4")
        assert frames.shape == (3, RAW, RAW, 3)  # depth is rendered at the neural-rendering resolution
        assert np.abs(grid_video[:, :, i * RAW:(i + 1) * RAW].astype(int) - frames).mean() < 4  # one render each
        # Grey, and min-max scaled to the full range in every frame (up to H.264 rounding).
        assert np.abs(frames.astype(int) - frames[..., :1]).max() <= 8
        assert (frames.reshape(3, -1).min(1) <= 16).all() and (frames.reshape(3, -1).max(1) >= 239).all()
        assert np.abs(frames[0].astype(int) - frames[1]).mean() > 5  # the camera moves


def test_same_seed_same_codes_other_seed_other_codes(bundle):
    kwargs = dict(num_samples=2, steps=2, cond_scale=7.0)
    a = bundle.sample(CAPTION_A, None, seed=5, **kwargs)
    b = bundle.sample(CAPTION_A, None, seed=5, **kwargs)
    c = bundle.sample(CAPTION_A, None, seed=6, **kwargs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    # eta > 0 draws step noise, from the same seed too.
    d = bundle.sample(CAPTION_A, None, seed=5, eta=0.5, **kwargs)
    e = bundle.sample(CAPTION_A, None, seed=5, eta=0.5, **kwargs)
    torch.testing.assert_close(d, e, rtol=0, atol=0)
    assert (a - d).abs().max() > 1e-3


def test_cli_run_is_deterministic(first_run, ckpt, exp_file, tmp_path):
    again = generate(config(f"ckpt={ckpt}", f"exp={exp_file}", TWO_CAPTIONS, "seed=3", f"out_dir={tmp_path}"))
    torch.testing.assert_close(again["latents"], first_run["latents"], rtol=0, atol=0)
    for i in range(2):
        np.testing.assert_array_equal(read_png(tmp_path / f"sample_{i:02d}.png"),
                                      read_png(first_run["out_dir"] / f"sample_{i:02d}.png"))


def test_latents_mode_renders_saved_codes_without_a_checkpoint(first_run, tmp_path, monkeypatch):
    depth_samples = []  # (depth_resolution, depth_resolution_importance) seen by each render call
    render_batch = FrameRenderer.render_batch

    def spy(self, ws, c, **kwargs):
        depth_samples.append((self.generator.rendering_kwargs["depth_resolution"],
                              self.generator.rendering_kwargs["depth_resolution_importance"]))
        return render_batch(self, ws, c, **kwargs)

    monkeypatch.setattr(FrameRenderer, "render_batch", spy)
    run = generate(config(f"latents={first_run['out_dir'] / 'latents.pt'}", "ckpt=/nonexistent/ckpt",
                          "seed=3", "video=true", "video_frames=2", "video_mode=image",
                          f"out_dir={tmp_path}"))
    torch.testing.assert_close(run["latents"], first_run["latents"], rtol=0, atol=0)
    for i in range(2):  # same codes, same frontal camera, same seed: the same pictures
        np.testing.assert_array_equal(read_png(tmp_path / f"sample_{i:02d}.png"),
                                      read_png(first_run["out_dir"] / f"sample_{i:02d}.png"))
        frames = mp4_frames(tmp_path / f"orbit_{i:02d}.mp4")
        assert frames.shape == (2, SIZE, SIZE, 3)
    assert json.loads((tmp_path / "conditions.json").read_text())["source"] == "latents"
    # Stills use the generator's depth samples (tiny: 12 + 12), videos twice as many.
    assert depth_samples == [(12, 12)] + [(24, 24)] * 2


def test_interpolation_shares_noise_and_writes_morph_videos(ckpt, bundle, tmp_path):
    run = generate(config(f"ckpt={ckpt}", f"interpolate=['{CAPTION_A}','{CAPTION_B}']", "interp_frames=3",
                          "interp_orbit=true", "num_samples=1", "video_mode=image_raw", "seed=4",
                          f"out_dir={tmp_path}"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["conditions.json", "grid.png", "latents_a.pt", "latents_b.pt", "morph_00.mp4"]
    ends = []
    for tag, caption in zip("ab", (CAPTION_A, CAPTION_B)):  # each end is the ordinary sample of its caption
        ends.append(torch.load(tmp_path / f"latents_{tag}.pt", weights_only=True))
        expected = bundle.sample(caption, None, num_samples=1, steps=2, seed=4)
        torch.testing.assert_close(ends[-1], expected, rtol=0, atol=1e-6)
    assert (ends[0] - ends[1]).abs().max() > 1e-3
    assert run["latents"].shape == (1, 2, 14, 512)
    grid = read_png(tmp_path / "grid.png")
    assert grid.shape == (SIZE, 5 * SIZE, 3)  # 5 keyframes from the first caption's code to the second's
    assert not np.array_equal(grid[:, :SIZE], grid[:, -SIZE:])
    assert mp4_frames(tmp_path / "morph_00.mp4").shape == (3, RAW, RAW, 3)


# ------------------------------------------------------------------------------------------------ modes

def test_unconditional_is_the_unguided_prediction(bundle):
    """No conditions: exactly the u branch, which text guidance at scale 0 also reduces to."""
    kwargs = dict(num_samples=2, steps=3, seed=1)
    unconditional = bundle.sample(None, None, cond_scale=7.0, **kwargs)
    text_at_zero = bundle.sample(CAPTION_A, None, cond_scale=0.0, **kwargs)
    torch.testing.assert_close(unconditional, text_at_zero, rtol=0, atol=1e-6)
    guided = bundle.sample(CAPTION_A, None, cond_scale=7.0, **kwargs)
    assert (unconditional - guided).abs().max() > 1e-3


def test_separate_scales_reach_text_only_and_expression_only_guidance(bundle):
    exp = torch.randn(50, generator=torch.Generator().manual_seed(2))
    kwargs = dict(num_samples=2, steps=3, seed=1)
    exp_only = bundle.sample(None, exp, cond_scale=5.0, **kwargs)
    text_only = bundle.sample(CAPTION_B, None, cond_scale=5.0, **kwargs)
    both_exp_guided = bundle.sample(CAPTION_B, exp, text_scale=0.0, exp_scale=5.0, **kwargs)
    both_text_guided = bundle.sample(CAPTION_B, exp, text_scale=5.0, exp_scale=0.0, **kwargs)
    torch.testing.assert_close(both_exp_guided, exp_only, rtol=0, atol=1e-5)
    torch.testing.assert_close(both_text_guided, text_only, rtol=0, atol=1e-5)
    assert (exp_only - text_only).abs().max() > 1e-3


def test_expression_only_from_the_cli(ckpt, exp_file, bundle, tmp_path):
    run = generate(config(f"ckpt={ckpt}", f"exp={exp_file}", "captions=null", "seed=2",
                          f"out_dir={tmp_path}"))
    expected = bundle.sample(None, torch.from_numpy(np.load(exp_file)), num_samples=2, steps=2, seed=2)
    torch.testing.assert_close(run["latents"], expected, rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "conditions.json").read_text())["captions"] is None


def test_ckpt_null_means_the_demo_checkpoint(ckpt, monkeypatch, tmp_path):
    import scd.pipeline

    monkeypatch.setattr(scd.pipeline, "DEMO_SCD", ckpt)
    run = generate(config("ckpt=null", "num_samples=1", f"out_dir={tmp_path / 'a'}"))
    assert run["conditions"]["ckpt"] == str(ckpt.resolve())
    monkeypatch.setattr(scd.pipeline, "DEMO_SCD", tmp_path / "absent")
    with pytest.raises(ConfigError, match="demo checkpoint is missing"):
        generate(config("ckpt=null", f"out_dir={tmp_path / 'b'}"))
    assert not (tmp_path / "b").exists()


def test_default_checkpoint_is_the_shipped_demo(tmp_path):
    assert (DEMO_SCD / "config.json").is_file(), f"the demo checkpoint is missing at {DEMO_SCD}"
    run = generate(config("num_samples=1", f"out_dir={tmp_path}"))
    assert run["conditions"]["ckpt"] == str(DEMO_SCD)
    assert run["latents"].shape == (1, 14, 512)


# ------------------------------------------------------------------------------------------------ helpers

def resolve_sampling(given: dict, pipeline: SCDPipeline) -> dict:
    return pipeline.sampling_options(**{k: given[k] for k in SAMPLING_KEYS})


def test_sampling_options_fall_back_to_the_checkpoint(bundle):
    def with_config(config: dict) -> SCDPipeline:
        return SCDPipeline(denoiser=bundle.denoiser, diffusion=bundle.diffusion, config=config)

    bundle = with_config({"sampling": {"cond_scale": 3.0, "steps": 20, "eta": 0.0, "clamp": None,
                                       "text_scale": 2.0}})
    given = check_options(config("steps=null", "clamp=null"))
    assert resolve_sampling(given, bundle) == {"cond_scale": 3.0, "text_scale": 2.0, "exp_scale": None,
                                               "steps": 20, "eta": 0.0, "clamp": None}
    given = check_options(config("cond_scale=5", "clamp=false", "steps=null"))  # joint guidance asked for
    assert resolve_sampling(given, bundle) == {"cond_scale": 5.0, "text_scale": None, "exp_scale": None,
                                               "steps": 20, "eta": 0.0, "clamp": None}
    given = check_options(config("clamp=[-2,2]", "exp_scale=1"))
    assert resolve_sampling(given, bundle) == {"cond_scale": 3.0, "text_scale": None, "exp_scale": 1.0,
                                               "steps": 2, "eta": 0.0, "clamp": (-2.0, 2.0)}
    given = check_options(config("clamp=null"))  # the paper's defaults when the checkpoint stores none
    bare = with_config({})
    assert resolve_sampling(given, bare) == {"cond_scale": 7.0, "text_scale": None, "exp_scale": None,
                                             "steps": 2, "eta": 0.0, "clamp": (-1.0, 1.0)}


def test_condition_normalisation():
    assert prepare_captions("a", 3) == ["a", "a", "a"]
    assert prepare_captions(["a", "b"], 2) == ["a", "b"]
    assert prepare_captions(None, 2) is None
    for bad in ([], ["a", "b"], [1]):
        with pytest.raises(ValueError):
            prepare_captions(bad, 3)
    assert prepare_exp(np.ones(50), 3).shape == (3, 50)
    assert prepare_exp(np.ones((3, 50)), 3).dtype == torch.float32
    for bad in (np.ones(49), np.ones((2, 50)), np.full(50, np.nan), np.ones((3, 50, 1))):
        with pytest.raises(ValueError):
            prepare_exp(bad, 3)
    noise = initial_noise(2, 14, 512, seed=0)
    torch.testing.assert_close(noise, initial_noise(2, 14, 512, seed=0), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ errors

def _bad_files(tmp: Path) -> dict[str, Path]:
    files = {"garbage_ckpt": tmp / "garbage_ckpt", "exp_49": tmp / "exp49.npy", "exp_nan": tmp / "expnan.npy",
             "exp_3": tmp / "exp3.npy", "exp_text": tmp / "exp.txt", "latents_shape": tmp / "lat.pt",
             "latents_dict": tmp / "latdict.pt", "latents_text": tmp / "lat.txt"}
    files["garbage_ckpt"].mkdir()
    (files["garbage_ckpt"] / "config.json").write_text("{not json")
    np.save(files["exp_49"], np.zeros(49, np.float32))
    np.save(files["exp_nan"], np.full(50, np.nan, np.float32))
    np.save(files["exp_3"], np.zeros((3, 50), np.float32))
    files["exp_text"].write_text("0 1 2")
    torch.save(torch.zeros(2, 13, 512), files["latents_shape"])
    torch.save({"w": torch.zeros(2, 14, 512)}, files["latents_dict"])
    files["latents_text"].write_text("hello")
    return files


ERRORS = [  # (overrides, error type, words of the message)
    (["ckpt={tmp}/missing"], CheckpointError, "not found"),
    (["ckpt={garbage_ckpt}"], CheckpointError, "config.json"),
    (["ckpt={exp_49}"], CheckpointError, "python -m scd.convert"),
    (["exp={tmp}/missing.npy"], ConfigError, "expression file not found"),
    (["exp={exp_49}"], ConfigError, "shape"),
    (["exp={exp_nan}"], ConfigError, "NaN"),
    (["exp={exp_3}"], ConfigError, "3 expression codes for num_samples=2"),
    (["exp={exp_text}"], ConfigError, "not a readable .npy"),
    (["captions=[]"], ConfigError, "caption list is empty"),
    (["captions=['a','b','c']"], ConfigError, "3 captions for num_samples=2"),
    (["latents={latents_shape}"], ConfigError, "(N, 14, 512)"),
    (["latents={latents_dict}"], ConfigError, "holds a dict"),
    (["latents={latents_text}"], ConfigError, "not a tensor saved with torch.save"),
    (["latents={tmp}/missing.pt"], ConfigError, "latents file not found"),
    (["generator=ffhq512"], ConfigError, "generator.ckpt=PATH"),
    (["generator.ckpt={tmp}/missing_generator"], CheckpointError, "cannot load the generator"),
    (["num_samples=0"], ConfigError, "num_samples must be an integer >= 1"),
    (["steps=0"], ConfigError, "steps must be an integer >= 1"),
    (["steps=5000"], ConfigError, "steps must be <="),
    (["video_mode=normals"], ConfigError, "video_mode must be one of"),
    (["interpolate=['only one']"], ConfigError, "two captions"),
    (["clamp=[1,-1]"], ConfigError, "clamp"),
]


@pytest.mark.parametrize("overrides,error,words", ERRORS, ids=[e[0][0].split("=")[0] + str(i)
                                                                for i, e in enumerate(ERRORS)])
def test_bad_requests_fail_before_writing(overrides, error, words, ckpt, tmp_path):
    files = {k: str(v) for k, v in _bad_files(tmp_path).items()}
    out = tmp_path / "out"
    cfg = config(f"ckpt={ckpt}", f"out_dir={out}", *[o.format(tmp=tmp_path, **files) for o in overrides])
    with pytest.raises(error) as info:
        generate(cfg)
    assert words in str(info.value)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ the CLI

def run_cli(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    command = [sys.executable, "-m", "scd.generate", f"hydra.run.dir={tmp / 'run'}", *tiny(args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env, timeout=300)


def test_cli_writes_outputs_and_says_where(ckpt, exp_file, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(f"ckpt={ckpt}", f"exp={exp_file}", "captions=['This man has a beard.']", "seed=0",
                   "cond_scale=7", f"out_dir={out}", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(out.resolve()) in proc.stdout
    assert (out / "grid.png").is_file() and (out / "latents.pt").is_file()
    assert torch.load(out / "latents.pt", weights_only=True).shape == (2, 14, 512)


def test_cli_error_is_one_line_without_traceback(ckpt, tmp_path):
    out = tmp_path / "out"  # (the other bad requests are checked in-process above, where they are cheaper)
    proc = run_cli(f"ckpt={ckpt}", "captions=[]", f"out_dir={out}", tmp=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "caption list is empty" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()
