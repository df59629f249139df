"""Re-PoI encoder speed on the GPU (docs/BENCHMARKS.md): inversion throughput and training steps per second.

Inversion = the whole forward pass (IR-SE50 + mappers, the coarse render, the residual stage, the refined render)
into the shipped world generator, at 256² input. Measured in float32 (TF32 off: the exact path) and with
bf16 autocast + TF32 (the training settings), in the same run. A training step is forward + backward + Adam on
the default objective (mse + identity + depth, coarse and refined). Prints one JSON object.

    python bench/inversion_speed.py [--batch 32] [--train-batch 8] [--iters 20]
"""
import argparse
import json
import time

import torch

from eg3d.checkpoint import build_generator
from faceworld.world import FaceWorld
from inversion.encoder import RePoI
from inversion.module import InversionModule
from inversion.losses import build_identity


def timed(fn, iters: int) -> float:
    """Seconds per call (after two warm-up calls)."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda")
    G = build_generator(preset="world").to(device)
    world = FaceWorld()
    cam = world.sample_cameras(args.batch, seed=0).to(device)
    x = torch.rand(args.batch, 3, 256, 256, device=device) * 2 - 1
    encoder = RePoI().to(device).eval()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch}

    @torch.no_grad()
    def invert():
        encoder(x, cam, G, deterministic=True)

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fp32 = timed(invert, args.iters)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def invert_bf16():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            invert()

    bf16 = timed(invert_bf16, args.iters)
    results.update(invert_fp32_img_s=args.batch / fp32, invert_bf16_img_s=args.batch / bf16,
                   bf16_speedup=fp32 / bf16)

    module = InversionModule(encoder=RePoI(), generator=G, optimizer=lambda params: torch.optim.Adam(params, 1e-4),
                             weights={"mse": 1.0, "id": 0.1, "depth": 1.0}, identity=build_identity("world"))
    module = module.to(device).train()
    optimizer = torch.optim.Adam(module.encoder.parameters(), lr=1e-4)
    n = args.train_batch
    batch = {"image": x[:n], "camera": cam[:n], "mask": (x[:n, :1] > 0).float()}

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = module.encoder(batch["image"], batch["camera"], G)
            terms = module.losses(batch, out)
            loss = sum(module.weights[k] * v for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    results.update(train_batch=n, train_steps_s=1.0 / timed(step, max(5, args.iters // 2)))
    results["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps(results, indent=2), flush=True)


if __name__ == "__main__":
    main()
