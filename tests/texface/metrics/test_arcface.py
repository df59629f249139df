"""texface.metrics.arcface: the IR-SE50 ArcFace against the official Re-PoI fixture, and its file loading."""
from __future__ import annotations

import pytest
import torch

from repoi_reference import compare, load_reference, seeded_weights
from texface.checkpoint import load_state_strict
from texface.errors import CheckpointError, ConfigError
from texface.metrics.arcface import ArcFace, face_crop


@pytest.fixture(scope="module")
def reference():
    meta, io, _ = load_reference()
    arcface = ArcFace()
    load_state_strict(arcface, seeded_weights("arcface."), source="seeded fixture weights", kind="ArcFace")
    return meta, io, arcface


def test_embeddings_match_reference(reference):
    meta, io, arcface = reference
    compare(meta, io, "id_face_x", face_crop(io["x"]))
    compare(meta, io, "id_feats_x", arcface.embed(io["x"]))
    compare(meta, io, "id_feats_refine", arcface.embed(io["refine"]))
    # A crop shifted by one pixel is one of the mistakes the fixture catches.
    shifted = torch.nn.functional.adaptive_avg_pool2d(io["x"][:, :, 36:224, 32:220], 112)
    with pytest.raises(AssertionError):
        compare(meta, io, "id_face_x", shifted)


def test_state_dict_names_are_the_official_layout():
    names = set(ArcFace().state_dict())
    assert names == set(seeded_weights("arcface."))
    assert {n.split(".")[0] for n in names} == {"input_layer", "body", "output_layer"}
    assert {n.split(".")[1] for n in names if n.startswith("output_layer.")} == {"0", "3", "4"}


def test_frozen_and_always_eval_with_gradients_to_the_input():
    arcface = ArcFace().train()
    assert not any(m.training for m in arcface.modules())
    assert not any(p.requires_grad for p in arcface.parameters())
    image = torch.rand(1, 3, 256, 256, requires_grad=True)
    embedding = arcface.embed(image * 2 - 1)
    assert embedding.shape == (1, 512)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(1))
    embedding.sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_embed_rejects_other_sizes():
    with pytest.raises(ValueError, match="256x256"):
        ArcFace().embed(torch.zeros(1, 3, 128, 128))


def test_from_file_loads_a_data_parallel_state_dict(tmp_path):
    source = ArcFace()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval-mode normalisation matters
        for module in source.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.8, 1.2)
    path = tmp_path / "model_ir_se50.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    loaded = ArcFace.from_file(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    faces = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(loaded(faces), source(faces))


def test_from_file_errors(tmp_path):
    missing = tmp_path / "nowhere" / "model_ir_se50.pth"
    with pytest.raises(ConfigError, match="model_ir_se50.pth") as err:
        ArcFace.from_file(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)

    for name, content in (("garbage.pth", b"not a torch file"), ("hello.pth", b"hello"), ("empty.pth", b"")):
        garbage = tmp_path / name
        garbage.write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            ArcFace.from_file(garbage)
        assert str(garbage) in str(err.value) and "\n" not in str(err.value)

    not_a_state_dict = tmp_path / "options.pth"
    torch.save({"opts": {"lr": 0.1}}, not_a_state_dict)
    with pytest.raises(CheckpointError, match="state dict") as err:
        ArcFace.from_file(not_a_state_dict)
    assert str(not_a_state_dict) in str(err.value)

    incomplete = tmp_path / "incomplete.pth"
    state = ArcFace().state_dict()
    del state["output_layer.3.weight"]
    torch.save(state, incomplete)
    with pytest.raises(CheckpointError, match="output_layer.3.weight"):
        ArcFace.from_file(incomplete)
