"""The official EG3D reference fixtures (../shared/fixtures/eg3d_reference/{tiny,mid}) and their tolerances.

:func:`run_case` builds the generator from meta.json's G_kwargs, loads G_state.safetensors with strict=True,
rebuilds the camera labels from the yaws/pitches in meta.json and renders deterministically (the fixtures'
sampling rule) with noise 'const'; :func:`compare` checks a tensor camera by camera with the README's float32
tolerances.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from eg3d.camera import LookAtPoseSampler, camera_labels, fov_to_intrinsics, split_labels
from eg3d.generator import TriPlaneGenerator
from helpers import assert_close, reference_fixture

# (atol, rel) from the fixtures' README.
TOLERANCES = {
    "c": (1e-6, 1e-6), "ray_origins": (1e-6, 1e-6), "ray_directions": (1e-6, 1e-6),
    "ws": (1e-5, 2e-6),
    "field_sigma": (2e-5, 1e-5), "field_rgb": (2e-5, 1e-5),
    "planes_stride4": (1e-4, 1e-5), "feature_image": (1e-4, 1e-5), "image_raw": (1e-4, 1e-5),
    "image_depth": (1e-4, 1e-5), "weights_sum": (1e-4, 1e-5),
    "image": (2e-4, 1e-5),
}
RENDER_OUTPUTS = ("feature_image", "image_depth", "weights_sum", "image_raw", "image")


@dataclass
class Case:
    meta: dict
    io: dict[str, torch.Tensor]
    G: TriPlaneGenerator
    c: torch.Tensor  # rebuilt from meta.json
    actual: dict[str, torch.Tensor]


def load_reference(name: str, device: str = "cpu") -> tuple[dict, dict, TriPlaneGenerator]:
    root = reference_fixture(f"eg3d_reference/{name}")
    meta = json.loads((root / "meta.json").read_text())
    io = load_file(str(root / "io.safetensors"))
    G = TriPlaneGenerator(**meta["G_kwargs"]).eval().requires_grad_(False)
    G.load_state_dict(load_file(str(root / "G_state.safetensors")), strict=True)
    G.neural_rendering_resolution = meta["neural_rendering_resolution"]
    return meta, io, G.to(device)


def rebuild_labels(meta: dict) -> torch.Tensor:
    """The fixture cameras from yaw/pitch/radius/fov, through eg3d.camera."""
    pivot = meta["G_kwargs"]["rendering_kwargs"]["avg_camera_pivot"]
    cam2world = LookAtPoseSampler.sample(torch.tensor(meta["yaws"]), torch.tensor(meta["pitches"]), pivot,
                                         radius=meta["camera_radius"], batch_size=len(meta["yaws"]))
    return camera_labels(cam2world, fov_to_intrinsics(meta["fov_degrees"]))


def run_case(name: str, device: str = "cpu") -> Case:
    meta, io, G = load_reference(name, device)
    c = rebuild_labels(meta).to(device)
    z, ws_in, coords, dirs = (io[k].to(device) for k in ("z", "ws", "field_coords", "field_dirs"))
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=meta["truncation_psi"], truncation_cutoff=meta["truncation_cutoff"])
        out = G.synthesis(ws_in, c, noise_mode=meta["noise_mode"], deterministic=True)
        field = G.sample_mixed(coords, dirs, ws_in, noise_mode=meta["noise_mode"])
        ray_origins, ray_directions = G.ray_sampler(*split_labels(c), G.neural_rendering_resolution)
    batch = ws.shape[0]
    actual = {
        "c": c, "ws": ws, "ray_origins": ray_origins, "ray_directions": ray_directions,
        "planes_stride4": out["planes"].reshape(batch, 96, 256, 256)[:, :, ::4, ::4],
        "field_sigma": field["sigma"], "field_rgb": field["rgb"],
        **{key: out[key] for key in RENDER_OUTPUTS},
    }
    return Case(meta, io, G, c, {key: value.cpu() for key, value in actual.items()})


def compare(case: Case, key: str) -> None:
    """Every camera (batch row) on its own, with the README's criterion."""
    atol, rel = TOLERANCES[key]
    actual, expected = case.actual[key], case.io[key]
    assert actual.shape == expected.shape, f"{key}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert expected.shape[0] == len(case.meta["yaws"])
    for i in range(expected.shape[0]):
        assert_close(actual[i], expected[i], atol=atol, rel=rel, name=f"{key}[camera {i}]")
