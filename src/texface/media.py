"""Images and videos: uint8 conversion, grids, and atomic PNG / H.264 MP4 writers.

Writers go through :func:`texface.atomic.atomic_file`, so a crash never leaves a truncated image or video under the
final name.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch

from texface.atomic import atomic_file


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] (C = 3, or 1 for grey such as depth) -> uint8 (B, H, W, 3).

    Uses EG3D's mapping ``x * 127.5 + 128`` clamped to [0, 255] and truncated.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 3 or 1, H, W), got {tuple(images.shape)}")
    images = images.detach().float().cpu().expand(-1, 3, -1, -1)
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def tile(images: np.ndarray, ncols: int) -> np.ndarray:
    """Lay uint8 images (B, H, W, 3) row by row on a grid ``ncols`` wide -> (rows*H, ncols*W, 3); empty cells black."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (B, H, W, 3), got {tuple(images.shape)}")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    b, h, w, _ = images.shape
    nrows = -(-b // ncols)
    grid = np.zeros((nrows * ncols, h, w, 3), dtype=images.dtype)
    grid[:b] = images
    return grid.reshape(nrows, ncols, h, w, 3).transpose(0, 2, 1, 3, 4).reshape(nrows * h, ncols * w, 3)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, 3) image to ``path`` (a .png) atomically."""
    image = _check_frame(image)
    path = Path(path)
    with atomic_file(path) as tmp:
        imageio.imwrite(str(tmp), image, format="PNG")
    return path


def write_mp4(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 30) -> Path:
    """Encode uint8 (H, W, 3) frames as an H.264 (libx264, yuv420p) MP4 at ``path``, atomically.

    yuv420p needs even sizes: frames with an odd height or width get their last row/column repeated.
    """
    return write_mp4s(([frame] for frame in frames), [path], fps=fps)[0]


def write_mp4s(frames: Iterable[Sequence[np.ndarray]], paths: Sequence[str | os.PathLike],
               fps: float = 30) -> list[Path]:
    """Encode several videos from one stream: step k yields one uint8 (H, W, 3) frame per path (each video keeps
    its own size). Every video is written atomically; a failure leaves none of them."""
    paths = [Path(p) for p in paths]
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with ExitStack() as stack:
        tmps = [stack.enter_context(atomic_file(p)) for p in paths]
        # quality 8 = x264 crf 10: close to lossless, the renders are small.
        writers = [imageio.get_writer(str(t), format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                      pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error")
                   for t in tmps]
        shapes: list[tuple | None] = [None] * len(paths)
        try:
            for step in frames:
                if len(step) != len(paths):
                    raise ValueError(f"each step must give {len(paths)} frames, got {len(step)}")
                for k, frame in enumerate(step):
                    frame = _check_frame(frame)
                    if shapes[k] is None:
                        shapes[k] = frame.shape
                    elif frame.shape != shapes[k]:
                        raise ValueError(f"all frames must have the same shape; got {frame.shape} after {shapes[k]}")
                    pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
                    writers[k].append_data(np.pad(frame, pad, mode="edge"))
        finally:
            for writer in writers:
                writer.close()
        if paths and shapes[0] is None:
            raise ValueError("write_mp4 needs at least one frame")
    return paths


def _check_frame(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image
