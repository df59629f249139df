"""Rendering speed of the FFHQ-512 generator: the exact reference vs plane reuse vs eg3d.fast's variants.

    PYTHONPATH=src python bench/render_speed.py [--batch 1 4] [--frames 30] [--repeats 5] [--json results.json]

Random weights of the ffhq512 preset (``build_generator(preset='ffhq512', seed=0)``: the real model's shapes, so
the timings are the real model's), style codes of seeds 0..B-1 at psi 0.7, noise 'const', deterministic rendering
(so differences between variants are arithmetic, not sampling). Two workloads per batch size B:

- ``image``: one ``synthesis(ws, c)`` of B codes from B cameras;
- ``orbit``: a video of the same B codes from ``--frames`` orbit cameras (``eg3d.camera.orbit_labels``): the
  reference calls ``synthesis`` per frame (the backbone runs every frame), every other row computes the planes
  once and calls ``render_planes`` per frame.

Times are CUDA-event medians over ``--repeats`` runs after ``--warmup`` runs (compilation happens during the
warm-up; its wall time is printed). ``max|d|`` is the largest absolute difference of the final images from the
reference's (images in [-1, 1]); PSNR is over that range (peak-to-peak 2). TF32 is off except in the tf32 row.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

from eg3d.camera import orbit_labels
from eg3d.checkpoint import build_generator
from eg3d.fast import FastGenerator

# (name, FastGenerator kwargs or None for the reference generator itself)
VARIANTS = {
    "fp32 reference": None,
    "tf32": dict(precision="tf32", compile="none"),
    "bf16": dict(precision="bf16", compile="none"),
    "fp32 + compiled renderer": dict(precision="fp32", compile="render"),
    "bf16 + compiled renderer": dict(precision="bf16", compile="render"),
    "bf16 + compiled all": dict(precision="bf16", compile="all"),
}


def cuda_time(fn, *, warmup: int, repeats: int) -> tuple[float, float, object]:
    """(median ms, warm-up wall seconds, last result) of ``fn()``."""
    start_wall = time.perf_counter()
    for _ in range(warmup):
        result = fn()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - start_wall
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), warm_s, result


def image_fn(G, ws, c):
    return lambda: G.synthesis(ws, c, noise_mode="const", deterministic=True)["image"]


def orbit_fn(G, ws, labels, *, reuse: bool):
    batch = ws.shape[0]

    def run():
        if not reuse:
            return torch.stack([G.synthesis(ws, c.expand(batch, 25), noise_mode="const", deterministic=True)["image"]
                                for c in labels])
        planes = G.planes(ws, noise_mode="const")
        return torch.stack([G.render_planes(planes, ws, c.expand(batch, 25), deterministic=True)["image"]
                            for c in labels])
    return run


def compare(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, PSNR in dB over the [-1, 1] range)."""
    diff = (actual.double() - expected.double())
    mse = diff.square().mean().item()
    return diff.abs().max().item(), (math.inf if mse == 0 else 10 * math.log10(4.0 / mse))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the image workload")
    parser.add_argument("--orbit-repeats", type=int, default=3, help="timed runs of the orbit workload")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of the image workload (compiles)")
    parser.add_argument("--orbit-warmup", type=int, default=1, help="untimed runs of the orbit workload")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # the exact reference
    torch.set_float32_matmul_precision("highest")

    device = torch.device("cuda")
    G = build_generator(preset="ffhq512", seed=0).to(device)
    labels = orbit_labels(args.frames).to(device)  # (F, 25)
    print(f"# {torch.cuda.get_device_name()} | torch {torch.__version__} | ffhq512 random weights | "
          f"R={G.neural_rendering_resolution} | {G.rendering_kwargs['depth_resolution']}+"
          f"{G.rendering_kwargs['depth_resolution_importance']} samples/ray | {args.frames}-frame orbit", flush=True)

    results = []

    def save():  # after every row, so a run cut short keeps what it measured
        if args.json:
            with open(args.json, "w") as file:
                json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, args=vars(args),
                               results=results), file, indent=1)

    for batch in args.batch:
        z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(batch)]))
        z = z.float().to(device)  # seeds 0..B-1, as eg3d.frames.seed_latents
        with torch.no_grad():
            ws = G.mapping(z, labels[:1].expand(batch, 25), truncation_psi=0.7)
        c = labels[:batch] if batch <= len(labels) else labels[:1].expand(batch, 25)
        reference = {}
        for name in args.variants:
            fast_kwargs = VARIANTS[name]
            model = G if fast_kwargs is None else FastGenerator(G, **fast_kwargs)
            rows = [("image", image_fn(model, ws, c), args.warmup, args.repeats)]
            if fast_kwargs is None:
                rows.append(("orbit", orbit_fn(model, ws, labels, reuse=False), args.orbit_warmup,
                             args.orbit_repeats))
            rows.append(("orbit, plane reuse", orbit_fn(model, ws, labels, reuse=True), args.orbit_warmup,
                         args.orbit_repeats))
            for workload, fn, warmup, repeats in rows:
                try:
                    with torch.no_grad():
                        ms, warm_s, out = cuda_time(fn, warmup=warmup, repeats=repeats)
                except Exception as err:  # report and go on: one broken variant must not hide the others
                    print(f"B={batch} {name} {workload}: FAILED {type(err).__name__}: {err}", flush=True)
                    results.append(dict(batch=batch, variant=name, workload=workload, error=repr(err)))
                    save()
                    continue
                base = workload.split(",")[0]
                if fast_kwargs is None and workload in ("image", "orbit"):
                    reference[base] = (ms, out)
                ref_ms, ref_out = reference[base]
                max_diff, db = compare(out, ref_out)
                row = dict(batch=batch, variant=name, workload=workload, ms=ms, speedup=ref_ms / ms,
                           max_abs_diff=max_diff, psnr_db=db, warmup_s=warm_s,
                           ms_per_frame=ms / (args.frames if base == "orbit" else 1))
                results.append(row)
                save()
                print(f"B={batch} {name:26s} {workload:19s} {ms:9.1f} ms  x{row['speedup']:5.2f}  "
                      f"max|d| {max_diff:.2e}  {db:6.1f} dB  (warm-up {warm_s:.1f} s)", flush=True)
                del out
            torch.cuda.empty_cache()
        del reference

    print("\n| B | workload | variant | ms | ms/frame | speedup | max abs diff | PSNR (dB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "error" in r:
            print(f"| {r['batch']} | {r['workload']} | {r['variant']} | failed | | | | |")
            continue
        print(f"| {r['batch']} | {r['workload']} | {r['variant']} | {r['ms']:.1f} | {r['ms_per_frame']:.1f} | "
              f"{r['speedup']:.2f}x | {r['max_abs_diff']:.1e} | {r['psnr_db']:.1f} |")
    print(f"\nPeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
