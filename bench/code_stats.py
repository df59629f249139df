"""Where a checkpoint's samples put their variance, in the synthetic world's coordinates (docs/LEARNING.md).

Draws 512 unconditional codes and 512 true codes and prints the standard deviation along the world's attribute,
expression, identity and probe directions, and the per-coordinate residual off the world's 120-d subspace (true
codes: the 0.02 noise; a sampler that leaves noise behind shows much more).

    python bench/code_stats.py CKPT_DIR
"""
import sys

from scd.pipeline import SCDPipeline
from scd.synthetic import AttributeWorld
from texface.captions import ATTRIBUTES
from texface.stylecodes import EXP_DIM

model = SCDPipeline.from_pretrained(sys.argv[1], generator=None)
world = AttributeWorld(**model.config["extra"]["world"])
true_codes = world.sample(512, seed=5).codes
samples = model.sample(None, None, num_samples=512, cond_scale=1.0, steps=50, seed=1).cpu()
# Rows of world.basis, in order: attributes | expression | identity | probes.
sizes = dict(attribute=len(ATTRIBUTES), expression=EXP_DIM, identity=world.identity_rank, probe=world.probe_dims)
groups, start = {}, 0
for name, size in sizes.items():
    groups[name], start = slice(start, start + size), start + size
for name, codes in (("true codes", true_codes), ("samples", samples)):
    features = world.features(codes)
    residual = codes.flatten(1).double() - features @ world.basis
    print(f"{name:10s}: std along " + ", ".join(f"{g} {features[:, s].std(0).mean():.3f}" for g, s in groups.items())
          + f"; off-subspace residual per coordinate {residual.std():.4f}")
