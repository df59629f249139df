"""The official Re-PoI reference fixtures (../shared/fixtures/repoi_reference) and their tolerances.

The fixture holds no weights: :func:`seeded_weights` regenerates every tensor from meta.json's seeded rule and
checks each against its recorded sha256 prefix. :func:`load_reference` returns (meta, io, weights, decoder), the
decoder being the ``tiny`` EG3D of eg3d_reference built with Re-PoI's G_kwargs.
"""
from __future__ import annotations

import functools
import hashlib
import json

import torch
from safetensors.torch import load_file

from eg3d.generator import TriPlaneGenerator
from helpers import assert_close, reference_fixture

FREQS = 1.0 / 10000 ** (torch.arange(0, 512, 2).float() / 512)
LPIPS_CONST = {"lpips.net.mean": torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1),
               "lpips.net.std": torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)}


def _const(name: str, shape: list[int]) -> torch.Tensor:
    if name.endswith(".freqs"):
        return FREQS.clone()
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    return LPIPS_CONST[name].clone()


def _sha16(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _weights(root: str) -> dict[str, torch.Tensor]:
    meta = json.loads((reference_fixture("repoi_reference") / "meta.json").read_text())["weights"]
    out = {}
    for entry in meta["entries"]:
        if entry["rule"] == "uniform":
            g = torch.Generator().manual_seed(meta["base"] + entry["index"])
            u = torch.rand(entry["shape"], generator=g, dtype=torch.float32)
            value = (torch.tensor(entry["offset"], dtype=torch.float32)
                     + torch.tensor(entry["scale"], dtype=torch.float32) * (2 * u - 1))
        else:
            value = _const(entry["name"], entry["shape"])
        assert _sha16(value) == entry["sha256_16"], f"regenerated {entry['name']} does not match its sha256"
        out[entry["name"]] = value
    return out


def seeded_weights(prefix: str) -> dict[str, torch.Tensor]:
    """The regenerated weights under ``prefix`` ("repoi.", "arcface." or "lpips."), with the prefix removed."""
    weights = _weights(str(reference_fixture("repoi_reference")))
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def load_reference() -> tuple[dict, dict[str, torch.Tensor], TriPlaneGenerator]:
    """(meta, io tensors, the frozen tiny decoder with the fixture's G_kwargs and G_state)."""
    root = reference_fixture("repoi_reference")
    meta = json.loads((root / "meta.json").read_text())
    io = load_file(str(root / "io.safetensors"))
    G = TriPlaneGenerator(**meta["decoder"]["G_kwargs"]).eval().requires_grad_(False)
    G.load_state_dict(load_file(str(reference_fixture("eg3d_reference/tiny") / "G_state.safetensors")), strict=True)
    G.neural_rendering_resolution = meta["decoder"]["neural_rendering_resolution"]
    return meta, io, G


def compare(meta: dict, io: dict[str, torch.Tensor], key: str, actual: torch.Tensor) -> None:
    """``actual`` against the stored tensor, batch row by batch row (a scalar as a whole), with the README's
    (atol, rel)."""
    atol, rel = meta["tolerances"][key]
    expected = io[key]
    actual = actual.detach().cpu().float()
    if expected.dim() == 0:
        assert_close(actual.reshape(()), expected, atol=atol, rel=rel, name=key)
        return
    for row, (a, b) in enumerate(zip(actual, expected)):
        assert_close(a, b, atol=atol, rel=rel, name=f"{key}[{row}]")
