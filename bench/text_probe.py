"""How readable are the attribute levels in a random text tower's token states? (docs/LEARNING.md)

A supervised probe: one attention read-out per attribute (a learned query over the 77 frozen token states, like
one cross-attention of the denoiser) followed by an MLP classifier, trained with cross-entropy on the levels that
captions of the synthetic world state, and scored on held-out captions. It bounds what the denoiser can take from
the text tower, without any diffusion in the way.

    python bench/text_probe.py --width 64 --layers 2 [--steps 1500]
    python bench/text_probe.py --clip src/faceworld/assets/world_clip      # a trained tower (the world CLIP)

With ``--clip`` it also scores the tower's pooled, projected text embedding without training anything: each
held-out single-attribute caption is given the level whose training centroid is nearest (cosine), which says how
well the embedding alone separates degrees.
"""
import argparse

import torch
from torch import nn

from scd.synthetic import AttributeWorld
from scd.text import TextEncoder
from texface.captions import ATTRIBUTES, NUM_LEVELS, parse


def captions_and_levels(world: AttributeWorld, n: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """All captions of n sampled codes and their stated levels (len, 6), -1 where unstated."""
    captions = [c for caps in world.sample(n, seed=seed).captions for c in caps]
    return captions, torch.tensor([[parse(c).get(a, -1) for a in ATTRIBUTES] for c in captions])


class AttentionProbe(nn.Module):
    def __init__(self, width: int, dim: int = 256, heads: int = 8):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(len(ATTRIBUTES), dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=width, vdim=width)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, NUM_LEVELS[a]))
                                   for a in ATTRIBUTES)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:  # (B, 77, width) -> 6 x (B, levels)
        read, _ = self.attention(self.queries.expand(tokens.shape[0], -1, -1), tokens, tokens)
        return [head(read[:, i]) for i, head in enumerate(self.heads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--clip", default=None, help="a CLIP folder (save_pretrained) instead of a random tower")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.clip:
        encoder = TextEncoder.from_pretrained(args.clip)
        args.width = encoder.config["hidden_size"]
    else:
        encoder = TextEncoder.from_config({"hidden_size": args.width, "intermediate_size": 4 * args.width,
                                           "num_hidden_layers": args.layers,
                                           "num_attention_heads": max(2, args.width // 32)}, seed=0)
    world = AttributeWorld(0)
    train_caps, train_y = captions_and_levels(world, 4000, seed=1)
    test_caps, test_y = captions_and_levels(world, 1000, seed=1000)
    with torch.no_grad():
        train_x, test_x = encoder.encode(train_caps), encoder.encode(test_caps)
    probe = AttentionProbe(args.width)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    for _ in range(args.steps):
        idx = torch.randint(0, len(train_caps), (128,))
        loss = sum(nn.functional.cross_entropy(logits, train_y[idx, i], ignore_index=-1)
                   for i, logits in enumerate(probe(train_x[idx])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = probe(test_x)
    accuracy = {a: float((out.argmax(1) == test_y[:, i])[test_y[:, i] >= 0].float().mean())
                for i, (a, out) in enumerate(zip(ATTRIBUTES, logits))}
    name = args.clip or f"width {args.width}, {args.layers} layers"
    print(f"{name}: held-out accuracy of the stated level (attention probe): "
          + " ".join(f"{a} {v:.2f}" for a, v in accuracy.items()))
    if args.clip:
        print(f"{name}: nearest level centroid of the projected text embedding: "
              + " ".join(f"{a} {v:.2f}" for a, v in centroid_accuracy(args.clip, train_caps, train_y, test_caps,
                                                                     test_y).items()))


def centroid_accuracy(clip_dir, train_caps, train_y, test_caps, test_y) -> dict[str, float]:
    """Per attribute, over captions that state only it: nearest (cosine) training centroid of each level."""
    from transformers import CLIPModel

    from texface.tokenizer import default_tokenizer

    model, tokenize = CLIPModel.from_pretrained(clip_dir).eval(), default_tokenizer()
    with torch.no_grad():
        embed = (lambda caps: nn.functional.normalize(
            model.text_projection(model.text_model(input_ids=tokenize(caps)).pooler_output), dim=-1))
        train_e, test_e = embed(train_caps), embed(test_caps)
    out = {}
    for i, a in enumerate(ATTRIBUTES):
        single = lambda y: (y[:, i] >= 0) & ((y >= 0).sum(1) == 1)
        tr, te = single(train_y), single(test_y)
        levels = sorted(set(train_y[tr, i].tolist()))
        centroids = torch.stack([nn.functional.normalize(train_e[tr][train_y[tr, i] == lv].mean(0), dim=0)
                                 for lv in levels])
        guess = torch.tensor(levels)[(test_e[te] @ centroids.T).argmax(1)]
        out[a] = float((guess == test_y[te, i]).float().mean())
    return out


if __name__ == "__main__":
    main()
