"""texface.metrics.lpips: LPIPS-alex against the official Re-PoI fixture, LPIPS-vgg, and loading from files in
the torchvision and richzhang/PerceptualSimilarity layouts."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from repoi_reference import compare, load_reference, seeded_weights
from texface.checkpoint import load_state_strict
from texface.errors import CheckpointError, ConfigError
from texface.metrics.lpips import LPIPS

# torchvision's conv indices in ``features`` (AlexNet, and VGG16 up to conv5_3).
ALEX_CONVS = (0, 3, 6, 8, 10)
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _seeded_alex() -> LPIPS:
    model = LPIPS("alex")
    load_state_strict(model, seeded_weights("lpips."), source="seeded fixture weights", kind="LPIPS")
    return model


def _official_files(model: LPIPS, tmp_path, *, heads_layout: str = "richzhang", suffix: str = ".pth",
                    prefix: str = ""):
    """A torchvision-layout backbone file (with a classifier, which is ignored) and a heads file of ``model``."""
    backbone = {f"features.{k}": v for k, v in model.net.layers.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)
    name = "lin{k}.model.1.weight" if heads_layout == "richzhang" else "lin.{k}.1.weight"
    heads = {name.format(k=k): head[1].weight.clone() for k, head in enumerate(model.lin)}
    paths = tmp_path / f"{prefix}backbone{suffix}", tmp_path / f"{prefix}heads{suffix}"
    for path, state in zip(paths, (backbone, heads)):
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
    return paths


def test_alex_matches_reference():
    meta, io, _ = load_reference()
    model = _seeded_alex()
    compare(meta, io, "loss_lpips", model(io["refine"], io["x"]).mean())
    # LPIPS without its input shift and scale is one of the mistakes the fixture catches.
    model.net.mean.zero_()
    model.net.std.fill_(1)
    with pytest.raises(AssertionError):
        compare(meta, io, "loss_lpips", model(io["refine"], io["x"]).mean())


@pytest.mark.parametrize("heads_layout,suffix", [("richzhang", ".pth"), ("ours", ".pth"),
                                                  ("richzhang", ".safetensors")])
def test_alex_from_files_equals_direct_loading(tmp_path, heads_layout, suffix):
    direct = _seeded_alex()
    backbone, heads = _official_files(direct, tmp_path, heads_layout=heads_layout, suffix=suffix)
    loaded = LPIPS.from_files("alex", backbone=backbone, heads=heads)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(2, 3, 96, 96, generator=g) * 2 - 1 for _ in range(2))
    assert torch.equal(loaded(a, b), direct(a, b))


def test_vgg_from_torchvision_layout_file(tmp_path):
    source = LPIPS("vgg")
    assert {k for k in source.state_dict() if k.startswith("net.layers.")} == {
        f"net.layers.{i}.{p}" for i in VGG_CONVS for p in ("weight", "bias")}
    assert [head[1].in_channels for head in source.lin] == [64, 128, 256, 512, 512]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for head in source.lin:  # LPIPS heads are non-negative
            head[1].weight.copy_(0.2 * torch.rand(head[1].weight.shape, generator=g))
    backbone, heads = _official_files(source, tmp_path)
    model = LPIPS.from_files("vgg", backbone=backbone, heads=heads)
    a, b = (torch.rand(3, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    same, different = model(a, a), model(a, b)
    assert same.shape == different.shape == (3,)
    assert same.abs().max() < 1e-6
    assert (different > 0).all()
    torch.testing.assert_close(different, source(a, b))


def test_alex_layout_and_gradients_to_the_inputs():
    model = LPIPS("alex").train()
    assert not any(m.training for m in model.modules())
    assert {k for k in model.state_dict() if k.startswith("net.layers.")} == {
        f"net.layers.{i}.{p}" for i in ALEX_CONVS for p in ("weight", "bias")}
    a = torch.rand(2, 3, 64, 64, requires_grad=True)
    model(a, torch.zeros(2, 3, 64, 64)).sum().backward()
    assert a.grad.abs().sum() > 0


def test_from_files_errors(tmp_path):
    backbone, heads = _official_files(LPIPS("alex"), tmp_path)
    missing = tmp_path / "alexnet-owt-7be5be79.pth"
    with pytest.raises(ConfigError, match="alexnet-owt-7be5be79.pth") as err:
        LPIPS.from_files("alex", backbone=missing, heads=heads)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="alex.pth") as err:
        LPIPS.from_files("alex", backbone=backbone, heads=tmp_path / "alex.pth")
    assert str(tmp_path / "alex.pth") in str(err.value)

    partial = tmp_path / "partial.pth"
    torch.save({f"lin{k}.model.1.weight": torch.zeros(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256))},
               partial)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): lin\.4\.1\.weight") as err:
        LPIPS.from_files("alex", backbone=backbone, heads=partial)
    assert str(partial) in str(err.value)
    # A VGG backbone file is not an AlexNet one.
    vgg_backbone, _ = _official_files(LPIPS("vgg"), tmp_path, prefix="vgg_")
    with pytest.raises(CheckpointError, match=r"missing keys \(6\): features\.3\.weight"):
        LPIPS.from_files("alex", backbone=vgg_backbone, heads=heads)
    with pytest.raises(ConfigError, match="alex, vgg"):
        LPIPS("squeeze")
