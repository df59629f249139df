"""Accelerated inference beside the exact reference generator (meant for CUDA).

:class:`FastGenerator` wraps a :class:`~eg3d.generator.TriPlaneGenerator` and offers its ``planes``,
``render_planes`` and ``synthesis`` with the same signatures, computed with the same modules and weights but with
faster arithmetic. The reference (``G.synthesis`` itself: float32, no TF32) stays the default everywhere; use this
where speed matters more than the last bits (videos, previews, large sample grids).

Two independent switches:

- ``precision``:
    - ``'fp32'``: float32 with TF32 off -- the reference's arithmetic (only the order of some sums changes when
      compiled).
    - ``'tf32'``: convolutions and matrix products take TF32 inputs (10-bit mantissa, float32 accumulation).
    - ``'bf16'``: the backbone and the super-resolution head run under bf16 autocast (their convolutions and
      style affines take bf16 inputs, accumulate in float32). The tri-planes are handed on as float32, and the
      volume renderer (plane lookups, decoder MLP, marching, importance sampling) always runs in float32: it is
      bound by memory traffic, not arithmetic, and depth needs the precision.
- ``compile``:
    - ``'none'``: eager; the reference renderer (``grid_sample`` lookups).
    - ``'render'``: the volume renderer compiled with inductor; its plane lookups are written as gathers from
      channels-last planes (:func:`sample_from_planes_gather`), so point coordinates, lookups, the average over
      the planes and the decoder's activations fuse into few kernels instead of materializing (B, 3, M, 32)
      tensors.
    - ``'all'``: ``planes`` and ``render_planes`` compiled whole (backbone and super-resolution included).

Everything else is the reference code path: the same ``rendering_kwargs`` (read from the wrapped generator at each
call), ``image_raw`` aliasing and sampling rule. Stochastic rendering (``deterministic=False``) inside compiled code
draws its depths from inductor's generator, so a seeded render is random in the same way as the reference but not
with the same numbers.

Which to use (``docs/BENCHMARKS.md``: FFHQ-512 shapes on an H100, 30-frame orbits with plane reuse): 'tf32' or
'bf16' with compile 'none' render about 2x as fast as the reference with no start-up cost (tf32 ~68 dB from the
reference, bf16 ~45 dB); 'bf16' + 'render' was the fastest per frame at batch 1 (2.5x) but inductor first spends
about two minutes compiling for each new input shape, so it pays off only for long jobs; 'all' compiled as slowly and
was slower per orbit frame than 'render'.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from torch import nn

from eg3d.renderer import PLANE_AXES, ImportanceRenderer
from texface.errors import ConfigError
from texface.options import check_choice

PRECISIONS = ("fp32", "tf32", "bf16")
COMPILE_MODES = ("none", "render", "all")
# What `precision: auto` means on CUDA: the fastest precision within the error budget of docs/BENCHMARKS.md
# (tf32 stays ~68 dB from the fp32 reference on the final image; bf16 ~45 dB and no faster in eager mode).
AUTO_CUDA_PRECISION = "tf32"


def sample_from_planes_gather(planes: torch.Tensor, coordinates: torch.Tensor, *, box_warp: float) -> torch.Tensor:
    """:func:`eg3d.renderer.sample_from_planes` written as explicit gathers (same arguments, same result).

    Each bilinear tap reads one channels-last row of C features, and the corner weights and their order of
    summation are ``grid_sample``'s (bilinear, zeros padding, align_corners=False), so the two agree up to float32
    rounding. Compiled, the whole lookup becomes one gather kernel that fuses with what consumes it.

    Args:
        planes: (B, 3, C, H, W) plane features.
        coordinates: (B, M, 3) world points; the box [-box_warp/2, box_warp/2]^3 maps onto the planes.
        box_warp: side length of the box the planes cover.
    Returns:
        (B, 3, M, C) features, zero for points whose plane coordinates fall outside [-1, 1].
    """
    batch, n_planes, channels, height, width = planes.shape
    rows = planes.permute(0, 1, 3, 4, 2).reshape(-1, channels)  # (B*3*H*W, C): one row per texel
    scaled = (2 / box_warp) * coordinates.to(planes.dtype)
    grid = torch.stack([scaled[..., list(axes)] for axes in PLANE_AXES], dim=1)  # (B, 3, M, 2)
    ix = ((grid[..., 0] + 1) * width - 1) / 2  # (B, 3, M) texel coordinates, half-pixel centres
    iy = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = ix.floor(), iy.floor()
    x1, y1 = x0 + 1, y0 + 1
    first_row = torch.arange(batch * n_planes, device=planes.device).reshape(batch, n_planes, 1) * (height * width)
    taps = ((x0, y0, (x1 - ix) * (y1 - iy)), (x1, y0, (ix - x0) * (y1 - iy)),
            (x0, y1, (x1 - ix) * (iy - y0)), (x1, y1, (ix - x0) * (iy - y0)))
    features = None
    for xs, ys, weight in taps:  # grid_sample's order: nw, ne, sw, se
        inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
        index = first_row + ys.clamp(0, height - 1).long() * width + xs.clamp(0, width - 1).long()  # (B, 3, M)
        tap = rows[index] * torch.where(inside, weight, torch.zeros_like(weight)).unsqueeze(-1)  # (B, 3, M, C)
        features = tap if features is None else features + tap
    return features


class FastRenderer(ImportanceRenderer):
    """The reference :class:`~eg3d.renderer.ImportanceRenderer`, always in float32 (also under autocast), with
    gather lookups (:func:`sample_from_planes_gather`) when ``gather`` and compiled with inductor when
    ``compile``. Same ``forward`` signature and result.
    """

    def __init__(self, *, gather: bool = True, compile: bool = True):
        super().__init__()
        self.gather = gather
        reference_forward = super().forward  # calls self.run_model, below
        self._render = torch.compile(reference_forward) if compile else reference_forward

    def forward(self, planes: torch.Tensor, decoder: nn.Module, ray_origins: torch.Tensor,
                ray_directions: torch.Tensor, rendering_options: dict, *, deterministic: bool = False):
        with torch.autocast(planes.device.type, enabled=False):
            return self._render(planes.float(), decoder, ray_origins.float(), ray_directions.float(),
                                rendering_options, deterministic=deterministic)

    def run_model(self, planes: torch.Tensor, decoder: nn.Module, coordinates: torch.Tensor,
                  directions: torch.Tensor, rendering_options: dict) -> dict[str, torch.Tensor]:
        if not self.gather or rendering_options.get("density_noise", 0) > 0:  # a training option: keep it simple
            return super().run_model(planes, decoder, coordinates, directions, rendering_options)
        features = sample_from_planes_gather(planes, coordinates, box_warp=rendering_options["box_warp"])
        return decoder(features, directions)


@functools.cache
def shared_renderer(*, gather: bool, compile: bool) -> FastRenderer:
    """One FastRenderer per setting for the whole process (it holds no weights), so every generator reuses its
    compiled code instead of compiling again (and running into dynamo's recompile limit)."""
    return FastRenderer(gather=gather, compile=compile)


@contextmanager
def precision_mode(precision: str, device_type: str = "cuda"):
    """Run the body with ``precision`` (see the module docstring); restores the global flags on exit.

    Also turns on cuDNN's autotuner (first calls at a new shape are slower).
    """
    check_choice("precision", precision, PRECISIONS)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.benchmark = True
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = flags


class FastGenerator:
    """Accelerated ``planes`` / ``render_planes`` / ``synthesis`` of a TriPlaneGenerator (see the module docstring).

    Args:
        G: the generator (its weights and ``rendering_kwargs`` are used as they are at each call; configure G,
            e.g. ``G.neural_rendering_resolution`` or ``G.rendering_kwargs``, not this wrapper).
        precision: 'fp32' | 'tf32' | 'bf16'.
        compile: 'none' | 'render' | 'all'.

    Outputs are float32 whatever the precision. Compilation happens at the first call for each input shape.
    """

    def __init__(self, G: nn.Module, *, precision: str = "bf16", compile: str = "render"):
        check_choice("precision", precision, PRECISIONS)
        check_choice("compile", compile, COMPILE_MODES)
        self.generator = G
        self.precision, self.compile = precision, compile
        self.renderer = shared_renderer(gather=compile != "none", compile=compile == "render")
        if compile == "all":
            self._planes, self._render_planes = torch.compile(G.planes), torch.compile(G.render_planes)
        else:
            self._planes, self._render_planes = G.planes, G.render_planes

    def planes(self, ws: torch.Tensor, noise_mode: str = "random", *,
               fused_modconv: bool | str | None = None) -> torch.Tensor:
        """:meth:`TriPlaneGenerator.planes <eg3d.generator.TriPlaneGenerator.planes>`: (B, 3, 32, 256, 256)."""
        with precision_mode(self.precision, ws.device.type):
            return self._planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv).float()

    def render_planes(self, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, *,
                      neural_rendering_resolution: int | None = None, deterministic: bool = False,
                      fused_modconv: bool | str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`TriPlaneGenerator.render_planes <eg3d.generator.TriPlaneGenerator.render_planes>`."""
        with precision_mode(self.precision, ws.device.type):
            out = self._render_planes(planes, ws, c, neural_rendering_resolution=neural_rendering_resolution,
                                      deterministic=deterministic, fused_modconv=fused_modconv,
                                      renderer=self.renderer)
        return {key: value.float() for key, value in out.items()}

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  noise_mode: str = "random", deterministic: bool = False, *,
                  fused_modconv: bool | str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`TriPlaneGenerator.synthesis <eg3d.generator.TriPlaneGenerator.synthesis>`."""
        self.generator._check_inputs(ws, c)  # before the backbone runs
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return self.render_planes(planes, ws, c, neural_rendering_resolution=neural_rendering_resolution,
                                  deterministic=deterministic, fused_modconv=fused_modconv)

    @property
    def rendering_kwargs(self) -> dict:
        return self.generator.rendering_kwargs

    @rendering_kwargs.setter
    def rendering_kwargs(self, value: dict) -> None:
        self.generator.rendering_kwargs = value

    def __getattr__(self, name: str):
        # Everything but the three accelerated methods is the wrapped generator's (mapping, z_dim, num_ws, ...).
        if name == "generator":  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.generator, name)

    def __repr__(self) -> str:
        return f"FastGenerator(precision={self.precision!r}, compile={self.compile!r})"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` with 'auto' resolved: the fastest path within budget on CUDA, exact fp32 on the CPU (where
    only fp32 is accepted)."""
    check_choice("precision", precision, ("auto", *PRECISIONS))
    on_cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        return AUTO_CUDA_PRECISION if on_cuda else "fp32"
    if not on_cuda and precision != "fp32":
        raise ConfigError(f"precision={precision} needs a CUDA device; on the CPU use precision=fp32 (or auto)")
    return precision


def accelerate(G: nn.Module, *, precision: str = "auto", compile: str = "none"):
    """``G`` itself for exact rendering (fp32, no compile), else a :class:`FastGenerator` around it; ``precision``
    'auto' as :func:`resolve_precision` on G's device. Both have the same rendering methods and attributes."""
    check_choice("compile", compile, COMPILE_MODES)
    precision = resolve_precision(precision, next(G.parameters()).device)
    if precision == "fp32" and compile == "none":
        return G
    return FastGenerator(G, precision=precision, compile=compile)
