"""Photos -> 3D faces: ``python -m inversion.invert ckpt=ENCODER image=face.png camera=face.npy``.

Inverts each image with a Re-PoI encoder into W+ codes of its frozen generator (deterministic: eval mode,
``noise_mode=const``, evenly spaced depth samples) and writes, into the run folder (or ``out_dir=``):

- ``codes.safetensors``: ``codes`` (1, 14, 512) the refined W+ codes, ``codes_coarse`` the first stage's, and
  ``camera`` (1, 25) the input camera, float32, with the encoder, the image and the generator build call in the
  file's metadata;
- ``input.png``: the image as the encoder sees it (resized to its input size);
- ``reconstruction.png``: input | coarse | refined render at the input camera, side by side;
- ``novel_views.png``: the refined codes rendered from the input camera turned by each of ``yaws`` (radians)
  about the generator's camera pivot (:func:`eg3d.camera.rotate_about_pivot`);
- ``orbit.mp4`` (unless ``video=false``): ``frames`` frames of the official gen_videos orbit.

``image`` may be a folder of ``*.png``, each with its ``<stem>.npy`` camera (the official test layout,
:class:`inversion.data.CameraFolder`): then every image gets these files in its own subfolder ``<stem>/``.

Cameras are required: EG3D labels of 25 numbers (the row-major 4x4 cam2world, then the 3x3 intrinsics normalised
by the image size), with the face cropped and aligned the same way. In-the-wild photos need EG3D's preprocessing
first (``dataset_preprocessing/ffhq`` in NVlabs/eg3d), which is not shipped here.

Every input is checked before anything is inverted (a bad request ends with a one-line error, nothing written).
Outputs appear complete or not at all: a single image's files move into ``out_dir`` once all are written; in
folder mode each ``<stem>/`` appears in one rename when it is complete (a rerun replaces it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from eg3d.camera import rotate_about_pivot
from eg3d.frames import FrameRenderer
from inversion.checkpoint import encoder_generator, load_encoder
from inversion.data import CAMERA_DIM, CameraFolder, load_image
from inversion.data import load_camera as read_camera
from texface.atomic import atomic_directory, staging
from texface.cli import hydra_command
from texface.device import resolve_device
from texface.errors import ConfigError, DataFormatError
from texface.media import save_png, tile, to_uint8
from texface.options import check_int, check_number

CODES_FILE = "codes.safetensors"
CAMERA_HELP = (f"EG3D-format cameras are needed ({CAMERA_DIM} numbers: the row-major 4x4 cam2world, then the 3x3 "
               f"intrinsics normalised by the image size, in a .npy); in-the-wild photos need EG3D's preprocessing "
               f"first (dataset_preprocessing/ffhq in NVlabs/eg3d: face detection, Deep3DFaceRecon pose, crop), "
               f"which texface does not ship")


# ----------------------------------------------------------------------------------------------- inputs

def check_options(cfg: DictConfig) -> dict:
    yaws = OmegaConf.to_container(cfg.yaws) if OmegaConf.is_list(cfg.yaws) else cfg.yaws
    if not isinstance(yaws, list) or not yaws:
        raise ConfigError(f"yaws must be a non-empty list of angles in radians, got {yaws!r}")
    return {"yaws": [check_number("yaws entry", y) for y in yaws], "frames": check_int("frames", cfg.frames, 1),
            "fps": check_number("fps", cfg.fps, minimum=1.0), "video": bool(cfg.video),
            "progress": bool(cfg.progress)}


def load_camera(path: Path) -> torch.Tensor:
    """The camera (25,) float32 in the .npy at ``path`` (:func:`inversion.data.load_camera`, with the help on
    where cameras come from)."""
    if not path.is_file():
        raise ConfigError(f"camera file not found: {path}; {CAMERA_HELP}")
    try:
        return read_camera(path)
    except DataFormatError as err:
        raise DataFormatError(f"camera {err}; {CAMERA_HELP}") from None


def check_sources(cfg: DictConfig) -> Path | None:
    """The camera file of a single image, None for a folder (its <stem>.npy files); checks only that the files
    are there: no model is needed yet."""
    image = Path(cfg.image)
    if image.is_dir():
        if cfg.camera is not None:
            raise ConfigError(f"camera= is for a single image; the images of the folder {image} take their cameras "
                              f"from <stem>.npy files next to them")
        lacking = [p.name for p in sorted(image.glob("*.png")) if not p.with_suffix(".npy").is_file()]
        if lacking:
            more = f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else ""
            raise ConfigError(f"{image}/{lacking[0]} has no camera {Path(lacking[0]).stem}.npy next to it{more}; "
                              f"{CAMERA_HELP}")
        return None
    if not image.is_file():
        raise ConfigError(f"image not found: {image} (a square RGB image, or a folder of *.png with <stem>.npy "
                          f"cameras)")
    if cfg.camera is None:
        raise ConfigError(f"camera= is required for image={image}; {CAMERA_HELP}")
    return Path(cfg.camera)


# ----------------------------------------------------------------------------------------------- invert

@torch.no_grad()
def invert(cfg: DictConfig) -> dict:
    """Invert ``cfg.image`` as ``cfg`` says (conf/invert.yaml, module docstring).

    Returns ``{'out_dir': Path, 'files': list[Path], 'codes': Tensor (N, 14, 512) on the CPU, 'names': list of N
    image names}``. A bad request raises ConfigError, DataFormatError or CheckpointError before anything is
    written.
    """
    opts = check_options(cfg)
    camera_file = check_sources(cfg)
    device = resolve_device(cfg.device)
    encoder = load_encoder(cfg.ckpt, map_location=device)
    size = encoder.image_resolution
    if camera_file is not None:                         # one image, one camera file
        paths, cameras = [Path(cfg.image)], torch.stack([load_camera(camera_file)])
    else:                                               # a folder: CameraFolder checks the cameras
        folder = CameraFolder(cfg.image, resolution=size)
        paths, cameras = folder.paths, folder.cameras
    for path in paths:                                  # every image is checked before any is inverted
        load_image(path, str(path), size)
    G = encoder_generator(cfg.ckpt, cfg.get("generator")).to(device)
    renderer = FrameRenderer(G, deterministic=True, progress=opts["progress"])
    meta = {"source": "inversion.invert", "encoder": str(Path(cfg.ckpt).resolve()),
            "generator": json.dumps(G.build_config)}
    pivot = G.rendering_kwargs["avg_camera_pivot"]

    out_dir, single = Path(cfg.out_dir), camera_file is not None
    files, codes = [], []
    for path, camera in tqdm(list(zip(paths, cameras)), desc="invert", unit="img",
                             disable=not opts["progress"] or single):
        x, cam = load_image(path, str(path), size)[None].to(device), camera[None].to(device)
        out = encoder(x, cam, G, deterministic=True)
        codes.append(out["codes"].float().cpu())
        dest = out_dir if single else out_dir / path.stem
        with (staging if single else atomic_directory)(dest) as tmp:
            tensors = {"codes": codes[-1], "codes_coarse": out["codes_coarse"].float().cpu(), "camera": camera[None]}
            (tmp / CODES_FILE).write_bytes(safetensors_bytes({k: v.contiguous() for k, v in tensors.items()},
                                                             metadata={**meta, "image": str(path)}))
            save_png(to_uint8(x)[0], tmp / "input.png")
            save_png(tile(to_uint8(torch.cat([x, out["coarse"], out["refine"]])), 3), tmp / "reconstruction.png")
            views = torch.cat([rotate_about_pivot(cam, yaw, pivot) for yaw in opts["yaws"]])
            save_png(tile(renderer.render(out["codes"].expand(len(views), -1, -1), views), len(views)),
                     tmp / "novel_views.png")
            if opts["video"]:
                renderer.orbit_video(out["codes"], tmp / "orbit.mp4", fps=opts["fps"], cameras=opts["frames"])
            names = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
        files += [dest / name for name in names]
    where = out_dir.resolve() if single else f"{out_dir.resolve()}/<stem>/ for {len(paths)} images"
    print(f"outputs in {where}: {', '.join(names)}", flush=True)
    return {"out_dir": out_dir, "files": files, "codes": torch.cat(codes), "names": [p.name for p in paths]}


main = hydra_command("invert", invert)

if __name__ == "__main__":
    main()
