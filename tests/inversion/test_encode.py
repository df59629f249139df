"""`python -m inversion.encode`: images -> style-code dataset, labels joined by name, resumable shards, refusals.

A tiny random Re-PoI encoder (64^2 input) inverts into the tiny random generator (16^2 neural render); the images
are a 3-head x 2-view face-world dataset at 32^2 and a hand-written EG3D folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inversion.encode as encode_module
from faceworld.datadir import read_index, write_dataset
from helpers import assert_close
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.data import EG3DImages
from inversion.encode import SHARDS_DIR, encode
from texface.config import compose
from texface.errors import ConfigError, DataFormatError
from texface.stylecodes import CODES_FILE, StyleCodeSet

REAL_ENCODE_BATCH = encode_module.encode_batch
GENERATOR = {"_target_": "eg3d.checkpoint.build_generator", "ckpt": None, "preset": "tiny", "seed": 0,
             "neural_rendering_resolution": 16}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("world") / "w"
    write_dataset(path, heads=3, views=2, resolution=32, seed=0, device="cpu", progress=False)
    return path


@pytest.fixture(scope="module")
def folder(world, tmp_path_factory) -> Path:
    """A hand-written EG3D folder: 3 random 32^2 images (one in a subfolder), the world's first 3 cameras."""
    root = tmp_path_factory.mktemp("eg3d") / "faces"
    (root / "sub").mkdir(parents=True)
    labels = json.loads((world / "dataset.json").read_text())["labels"]
    rng = np.random.default_rng(0)
    names = ["sub/a.png", "b.png", "c.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / name)
    (root / "dataset.json").write_text(json.dumps({"labels": [[n, labels[i][1]] for i, n in enumerate(names)]}))
    return root


def config(ckpt, images, out, *overrides):
    return compose("encode", [f"ckpt={ckpt}", f"images={images}", f"out={out}", "device=cpu", "progress=false",
                              "shard_size=2", "batch_size=2", f"paths.output_dir={Path(out).parent / 'run'}",
                              *overrides])


def direct_codes(ckpt, images) -> torch.Tensor:
    """RePoI.forward(deterministic=True)["codes"] of all images in one batch, in dataset.json order."""
    encoder, generator = load_encoder(ckpt), encoder_generator(ckpt)
    data = EG3DImages(images, resolution=encoder.image_resolution)
    x = torch.stack([data[i]["image"] for i in range(len(data))])
    cam = torch.stack([data[i]["camera"] for i in range(len(data))])
    with torch.no_grad():
        return encoder(x, cam, generator, deterministic=True)["codes"]


@pytest.fixture(scope="module")
def baseline(ckpt, world, tmp_path_factory):
    """(out, result) of one uninterrupted run over the face-world dataset: 3 shards of 2 images."""
    out = tmp_path_factory.mktemp("baseline") / "codes"
    return out, encode(config(ckpt, world, out))


def test_faceworld_dataset_becomes_a_style_code_dataset(ckpt, world, baseline):
    out, result = baseline
    assert (result["out"], result["images"], result["with_expression"]) == (out, 6, 6)
    assert (result["shards"], result["reused_shards"], result["encoded"]) == (3, 0, 6)
    data = StyleCodeSet.load(out)
    index = read_index(world)
    assert len(data) == 6 and data.ids == index.names          # dataset.json order, ids = image names
    assert_close(data.codes, direct_codes(ckpt, world), atol=1e-5, rel=1e-5, name="codes")
    assert data.captions == index.captions and result["captioned"] == sum(bool(c) for c in index.captions)
    assert result["uncaptioned"] == 6 - result["captioned"]
    assert torch.equal(data.expressions, index.expressions) and bool(data.has_exp.all())
    assert torch.equal(data.cameras, index.cameras)
    assert data.meta["source"] == "inversion.encode" and data.meta["generator"] == GENERATOR
    assert data.meta["encoder_ckpt"] == str(ckpt.resolve()) and data.meta["images"] == str(world.resolve())
    assert data.meta["captions_file"].endswith("captions.jsonl")
    assert not (out / SHARDS_DIR).exists() and sorted(p.name for p in out.iterdir()) == [
        "captions.jsonl", "codes.safetensors", "meta.json"]


def test_explicit_captions_and_expressions_join_by_name(ckpt, folder, tmp_path):
    captions = tmp_path / "captions.jsonl"     # out of order, and b.png has no line
    captions.write_text(json.dumps({"id": "c.png", "captions": ["She is smiling.", "A smile."]}) + "\n"
                        + json.dumps({"id": "sub/a.png", "captions": ["This man has a beard."]}) + "\n")
    exp = np.random.default_rng(1).standard_normal((3, 50)).astype(np.float32)
    np.save(tmp_path / "exp.npy", exp)
    data = StyleCodeSet.load(encode(config(ckpt, folder, tmp_path / "a", f"captions={captions}",
                                           f"expressions={tmp_path / 'exp.npy'}"))["out"])
    assert data.ids == ["sub/a.png", "b.png", "c.png"]
    assert data.captions == [["This man has a beard."], [], ["She is smiling.", "A smile."]]
    assert torch.equal(data.expressions, torch.from_numpy(exp)) and bool(data.has_exp.all())
    assert_close(data.codes, direct_codes(ckpt, folder), atol=1e-5, rel=1e-5, name="codes")

    # The same expressions as a name -> coefficients mapping (.json, and .jsonl), in another order.
    table = {name: exp[i].tolist() for i, name in enumerate(data.ids)}
    (tmp_path / "exp.json").write_text(json.dumps(dict(reversed(table.items()))))
    (tmp_path / "exp.jsonl").write_text("".join(json.dumps({"id": k, "expression": v}) + "\n"
                                                for k, v in reversed(table.items())))
    for name in ("exp.json", "exp.jsonl"):
        assert torch.equal(encode_module.join_expressions(tmp_path / name, data.ids), torch.from_numpy(exp))

    # Neither given, not a face-world dataset: no captions, zero expressions marked has_exp = False.
    bare = StyleCodeSet.load(encode(config(ckpt, folder, tmp_path / "b"))["out"])
    assert bare.captions == [[], [], []] and not bool(bare.has_exp.any())
    assert torch.equal(bare.codes, data.codes)


def test_bad_labels_are_one_line_errors_naming_the_entry(ckpt, folder, tmp_path):
    names = ["sub/a.png", "b.png", "c.png"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope.png", "captions": ["A man."]}) + "\n")
    with pytest.raises(DataFormatError, match="'nope.png'") as err:
        encode(config(ckpt, folder, tmp_path / "out", f"captions={bad}"))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()

    (tmp_path / "missing.json").write_text(json.dumps({"sub/a.png": [0.0] * 50, "c.png": [0.0] * 50}))
    with pytest.raises(DataFormatError, match="no expression for image 'b.png'"):
        encode_module.join_expressions(tmp_path / "missing.json", names)
    (tmp_path / "extra.json").write_text(json.dumps({n: [0.0] * 50 for n in [*names, "d.png"]}))
    with pytest.raises(DataFormatError, match="'d.png'"):
        encode_module.join_expressions(tmp_path / "extra.json", names)
    np.save(tmp_path / "short.npy", np.zeros((2, 50), np.float32))
    with pytest.raises(DataFormatError, match=r"expected \(3, 50\)"):
        encode_module.join_expressions(tmp_path / "short.npy", names)


def test_cli_reports_an_unknown_caption_id_in_one_line(ckpt, folder, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nope.png", "captions": ["A man."]}) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="0")
    command = [sys.executable, "-m", "inversion.encode", f"hydra.run.dir={tmp_path / 'run'}", f"ckpt={ckpt}",
               f"images={folder}", f"captions={bad}", f"out={tmp_path / 'out'}", "device=cpu"]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'nope.png'" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


class Interrupted(Exception):
    """Stands for the run being killed mid-way."""


def interrupt_after(monkeypatch, calls: int) -> list[int]:
    """Make encode_batch raise on call ``calls + 1``; returns the list counting the calls that ran."""
    count = [0]
    real = REAL_ENCODE_BATCH

    def counted(*args):
        if count[0] == calls:
            raise Interrupted
        count[0] += 1
        return real(*args)

    monkeypatch.setattr(encode_module, "encode_batch", counted)
    return count


def test_interrupted_run_resumes_from_its_finished_shards(ckpt, world, baseline, tmp_path, monkeypatch):
    out = tmp_path / "codes"
    interrupt_after(monkeypatch, 1)                       # shard 0 (one batch of 2) finishes, then the run dies
    with pytest.raises(Interrupted):
        encode(config(ckpt, world, out))
    assert [p.name for p in (out / SHARDS_DIR).iterdir()] == ["shard_00000.safetensors"]
    assert not (out / CODES_FILE).exists()

    count = interrupt_after(monkeypatch, 100)
    result = encode(config(ckpt, world, out))
    assert count[0] == 2 and result["reused_shards"] == 1 and result["encoded"] == 4   # shard 0 not recomputed
    for name in ("codes.safetensors", "captions.jsonl", "meta.json"):
        assert (out / name).read_bytes() == (baseline[0] / name).read_bytes(), name
    assert not (out / SHARDS_DIR).exists()


def test_shards_of_other_settings_are_refused_unless_force(ckpt, world, baseline, tmp_path, monkeypatch):
    out = tmp_path / "codes"
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupted):
        encode(config(ckpt, world, out))
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="new out dir.*force=true") as err:
        encode(config(ckpt, world, out, "shard_size=3"))
    assert "shard_00000" in str(err.value) and "\n" not in str(err.value)
    result = encode(config(ckpt, world, out, "shard_size=3", "force=true"))
    assert result["reused_shards"] == 0 and result["shards"] == 2
    assert_close(StyleCodeSet.load(out).codes, StyleCodeSet.load(baseline[0]).codes, atol=1e-5, rel=1e-5)


def test_a_complete_out_is_replaced_only_with_force(ckpt, world, baseline, tmp_path):
    out = tmp_path / "codes"
    shutil.copytree(baseline[0], out)
    with pytest.raises(ConfigError, match="already holds a style-code dataset.*force=true"):
        encode(config(ckpt, world, out))
    result = encode(config(ckpt, world, out, "force=true"))
    assert result["encoded"] == 6 and (out / CODES_FILE).read_bytes() == (baseline[0] / CODES_FILE).read_bytes()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="neither a style-code dataset"):
        encode(config(ckpt, world, other, "force=true"))
    assert (other / "notes.txt").read_text() == "keep me"
