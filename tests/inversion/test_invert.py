"""`python -m inversion.invert`: photos + EG3D cameras -> W+ codes, reconstructions, novel views, orbit video.

A tiny random Re-PoI encoder (64^2 input) inverts into the tiny random generator (16^2 neural render, 128^2 out).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from eg3d.camera import orbit_labels
from helpers import ROOT, video_frames
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.data import load_image
from inversion.invert import CODES_FILE, invert
from texface.config import compose
from texface.errors import CheckpointError, ConfigError, DataFormatError, TexfaceError

GENERATOR = {"_target_": "eg3d.checkpoint.build_generator", "ckpt": None, "preset": "tiny", "seed": 0,
             "neural_rendering_resolution": 16}
OUTPUTS = {CODES_FILE, "input.png", "reconstruction.png", "novel_views.png", "orbit.mp4"}


@pytest.fixture(autouse=True)
def one_thread():
    """Two OpenMP threads on a shared 2-core machine are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_face(folder: Path, stem: str, seed: int, *, mode: str = "RGB", camera=None) -> Path:
    """A random 64^2 image <stem>.png with the frontal orbit camera (or ``camera``) as <stem>.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(folder / f"{stem}.png")
    np.save(folder / f"{stem}.npy", orbit_labels(1)[0].numpy() if camera is None else camera)
    return folder / f"{stem}.png"


def config(ckpt, image, out, *overrides):
    return compose("invert", [f"ckpt={ckpt}", f"image={image}", "device=cpu", "progress=false", f"out_dir={out}",
                              f"paths.output_dir={Path(out).parent / 'run'}", *overrides])


def direct(ckpt, image: Path) -> dict:
    """RePoI.forward(deterministic=True) of one image with its <stem>.npy camera."""
    encoder, generator = load_encoder(ckpt), encoder_generator(ckpt)
    x = load_image(image, str(image), encoder.image_resolution)[None]
    cam = torch.from_numpy(np.load(image.with_suffix(".npy"))).float()[None]
    with torch.no_grad():
        return encoder(x, cam, generator, deterministic=True) | {"x": x, "cam": cam}


def test_single_image(ckpt, tmp_path):
    image = write_face(tmp_path / "in", "face", 0)
    out = tmp_path / "out"
    result = invert(config(ckpt, image, out, f"camera={image.with_suffix('.npy')}", "frames=3",
                           "yaws=[-0.5,0.0,0.5]"))
    assert {p.name for p in out.iterdir()} == OUTPUTS
    assert sorted(result["files"]) == sorted(out / name for name in OUTPUTS)
    expected = direct(ckpt, image)
    with safe_open(str(out / CODES_FILE), framework="pt") as f:
        assert f.metadata()["image"] == str(image)
        assert torch.equal(f.get_tensor("codes"), expected["codes"])
        assert torch.equal(f.get_tensor("codes_coarse"), expected["codes_coarse"])
        assert torch.equal(f.get_tensor("camera"), expected["cam"])
    assert torch.equal(result["codes"], expected["codes"]) and result["names"] == ["face.png"]
    assert np.array_equal(np.asarray(Image.open(out / "input.png")), np.asarray(Image.open(image)))
    assert Image.open(out / "reconstruction.png").size == (3 * 64, 64)
    assert Image.open(out / "novel_views.png").size == (3 * 128, 128)   # the generator's 128^2 images
    assert len(video_frames(out / "orbit.mp4")) == 3


def test_folder_makes_one_subfolder_per_image(ckpt, tmp_path):
    images = [write_face(tmp_path / "in", stem, seed) for seed, stem in enumerate(["b", "a"])]
    out = tmp_path / "out"
    result = invert(config(ckpt, tmp_path / "in", out, "video=false", "yaws=[0.3]"))
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"] and result["names"] == ["a.png", "b.png"]
    for stem in ("a", "b"):
        assert {p.name for p in (out / stem).iterdir()} == OUTPUTS - {"orbit.mp4"}
    assert torch.equal(result["codes"][1:], direct(ckpt, images[0])["codes"])   # sorted: a, then b


def bad_request(tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """The image and the extra overrides of a bad request."""
    good = write_face(tmp_path / "good", "face", 0)
    camera = [f"camera={good.with_suffix('.npy')}"]
    if case == "16 numbers":
        np.save(good.with_suffix(".npy"), np.eye(4, dtype=np.float32))
    elif case == "grey png":
        write_face(tmp_path / "good", "face", 0, mode="L")
    elif case.startswith("folder"):
        write_face(tmp_path / "folder", "a", 0)     # a good image first: nothing of it may be written either
        write_face(tmp_path / "folder", "b", 1, mode="L" if case == "folder with a grey png" else "RGB")
        if case == "folder without a camera":
            (tmp_path / "folder" / "b.npy").unlink()
        return tmp_path / "folder", []
    return good, {"missing camera": [], "missing camera file": [f"camera={tmp_path / 'none.npy'}"],
                  "missing ckpt": [*camera, f"ckpt={tmp_path / 'no-such-encoder'}"]}.get(case, camera)


@pytest.mark.parametrize("case, error, words", [
    ("missing camera", ConfigError, ["camera= is required", "25 numbers", "dataset_preprocessing/ffhq"]),
    ("missing camera file", ConfigError, ["camera file not found", "dataset_preprocessing/ffhq"]),
    ("16 numbers", DataFormatError, ["16 values", "25 numbers", "4x4 cam2world"]),
    ("grey png", DataFormatError, ["is a L image; RGB is needed"]),
    ("missing ckpt", CheckpointError, ["checkpoint not found", "no-such-encoder"]),
    ("folder without a camera", ConfigError, ["b.png has no camera b.npy", "dataset_preprocessing/ffhq"]),
    ("folder with a grey png", DataFormatError, ["b.png is a L image"]),
])
def test_bad_requests_write_nothing(ckpt, tmp_path, case, error, words):
    image, overrides = bad_request(tmp_path, case)
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        invert(config(ckpt, image, out, *overrides))
    message = str(info.value)
    assert isinstance(info.value, TexfaceError) and "\n" not in message
    assert all(word in message for word in words), message
    assert not out.exists()


def test_command_missing_camera_is_one_line(ckpt, tmp_path):
    image = write_face(tmp_path, "face", 0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROJECT_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "inversion.invert", f"ckpt={ckpt}", f"image={image}",
                           "device=cpu"], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "EG3D-format cameras are needed" in lines[0] and "NVlabs/eg3d" in lines[0]
    assert not list((tmp_path / "outputs").glob("invert/runs/*/*.png"))
