"""ArcFace IR-SE50 (InsightFace, in the pSp / TreB1eN ``model_ir_se50.pth`` layout): the identity network of
the ID loss and of identity-similarity metrics.

The network is the IR-SE50 trunk of :mod:`texface.irse` followed by ``output_layer`` = BN2d(512), Dropout,
flatten (C, H, W), Linear(512*7*7 -> 512), BN1d(512); its output is L2-normalised. State-dict names are those of
the official ``Backbone(112, 50, 'ir_se')`` (``input_layer.*``, ``body.*``, ``output_layer.{0,3,4}.*``), so the
published file loads strictly.

:func:`texface.checkpoint.read_state_dict` reads such weight files (torch weights-only pickles or safetensors).
"""
from __future__ import annotations

import os

from torch import Tensor, nn

from texface.checkpoint import load_state_strict, read_state_dict
from texface.errors import ConfigError
from texface.irse import IRTrunk

# pSp's face crop for 256x256 FFHQ-aligned images (rows 35:223, columns 32:220), reused by TEx-Face on EG3D crops.
CROP_ROWS, CROP_COLS = slice(35, 223), slice(32, 220)
INPUT_SIZE = 112
EMBEDDING_DIM = 512
WEIGHTS_FILE = "model_ir_se50.pth (pSp / TreB1eN InsightFace_Pytorch)"


def face_crop(images: Tensor) -> Tensor:
    """The ArcFace input (B, 3, 112, 112) of images (B, 3, 256, 256) in [-1, 1]: pSp's crop, then an adaptive
    average pool 188 -> 112."""
    if tuple(images.shape[-2:]) != (256, 256):
        raise ConfigError(f"the ArcFace ID crop is defined for 256x256 EG3D/FFHQ crops, got "
                          f"{tuple(images.shape[-2:])}; resize the images to 256x256 first")
    return nn.functional.adaptive_avg_pool2d(images[:, :, CROP_ROWS, CROP_COLS], INPUT_SIZE)


class ArcFace(IRTrunk):
    """IR-SE50 ArcFace: faces (B, 3, 112, 112) in [-1, 1] -> unit embeddings (B, 512).

    A frozen metric network: gradients flow to the input, never to the weights, and it always runs in eval mode.
    """

    def __init__(self):
        super().__init__()
        self.output_layer = nn.Sequential(nn.BatchNorm2d(EMBEDDING_DIM), nn.Dropout(0.6), nn.Flatten(),
                                          nn.Linear(EMBEDDING_DIM * 7 * 7, EMBEDDING_DIM),
                                          nn.BatchNorm1d(EMBEDDING_DIM))
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> ArcFace:
        # Always eval: a parent's .train() (Lightning calls it every epoch) must not switch BatchNorm to batch
        # statistics or turn dropout on.
        return super().train(False)

    def forward(self, face: Tensor) -> Tensor:
        """Unit embeddings (B, 512) of faces (B, 3, 112, 112) (L2 normalisation without eps, as the official)."""
        if tuple(face.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"ArcFace takes 112x112 faces, got {tuple(face.shape[-2:])}; use embed() for "
                             "256x256 images")
        x = self.output_layer(super().forward(face)[-1])
        return x / x.norm(dim=1, keepdim=True)

    def embed(self, images: Tensor) -> Tensor:
        """Unit embeddings (B, 512) of 256x256 images (B, 3, 256, 256) in [-1, 1] (:func:`face_crop`, then
        forward)."""
        return self(face_crop(images))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ArcFace:
        """ArcFace with the weights of a local ``model_ir_se50.pth`` (a state dict, possibly saved from
        DataParallel with a ``module.`` prefix), loaded strictly."""
        state = read_state_dict(path, what="ArcFace IR-SE50 weights", expected=WEIGHTS_FILE)
        if all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        model = cls()
        load_state_strict(model, state, source=path, kind="ArcFace IR-SE50 network")
        return model
