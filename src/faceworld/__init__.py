"""The face world: procedural 3D heads with known attributes, identities, expressions, cameras and captions.

A stand-in for FFHQ/CelebA-Dialog that needs no download: every head is a signed distance function inside EG3D's
box, rendered from EG3D's own camera rays, with ground truth for everything. Modules:

- :mod:`faceworld.params`: identity vectors and the per-head parameter tensors (:class:`HeadParams`);
- :mod:`faceworld.expression`: the 50-d expression code and the fixed maps to six facial controls;
- :mod:`faceworld.heads`: the SDF, the shaded colour and the density field (:func:`field`);
- :mod:`faceworld.render`: sphere-traced images, masks and depth (:func:`faceworld.render.render`; not re-exported
  here, where the name is the module's);
- :mod:`faceworld.cameras`: FFHQ-like camera labels;
- :mod:`faceworld.world`: :class:`FaceWorld`, seeded sampling of heads, captions and cameras;
- :mod:`faceworld.datadir`: datasets on disk (EG3D layout) and a cache; ``python -m faceworld.dataset`` writes one;
- :mod:`faceworld.sheets`: contact sheets and attribute sweeps.
"""
from faceworld.cameras import labels_at, sample_poses
from faceworld.datadir import ensure_dataset, is_dataset, read_image, read_index, write_dataset
from faceworld.expression import CONTROLS, EXPRESSION_DIM, expression_controls
from faceworld.heads import BETA, field, head_sdf, laplace_density, surface
from faceworld.params import IDENTITY_DIM, IDENTITY_FIELDS, HeadParams, identity_from_seeds, make_params
from faceworld.render import BACKGROUND, RAY_END, RAY_START
from faceworld.sheets import attribute_sweep, contact_sheet
from faceworld.world import FaceWorld, Heads

__all__ = [
    "BACKGROUND", "BETA", "CONTROLS", "EXPRESSION_DIM", "IDENTITY_DIM", "IDENTITY_FIELDS", "RAY_END", "RAY_START",
    "FaceWorld", "HeadParams", "Heads", "attribute_sweep", "contact_sheet", "ensure_dataset", "expression_controls",
    "field", "head_sdf", "identity_from_seeds", "is_dataset", "labels_at", "laplace_density", "make_params",
    "read_image", "read_index", "sample_poses", "surface", "write_dataset",
]
