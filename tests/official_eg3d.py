"""Official EG3D network pickles for tests, built with the official layout.

``pickle.dump`` of the snapshot dict, networks pickled through ``torch_utils.persistence`` as
``_reconstruct_persistent_obj(meta)`` (meta = type, version, module_src, class_name, state = the module's
``__dict__``), kwargs as ``dnnlib.util.EasyDict``, float gains as numpy scalars, and the non-persistent helpers
(decoder, renderer, ray sampler) as ordinary objects of ``training.*`` classes. Fake ``torch_utils``/``dnnlib``/
``training`` modules exist only while pickling. :class:`Reduce` builds hostile payloads.
"""
from __future__ import annotations

import collections
import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from eg3d.generator import TriPlaneGenerator

# Our helper modules that official EG3D does not make persistent, and where its classes live.
PLAIN_CLASSES = {"OSGDecoder": "training.triplane",
                 "ImportanceRenderer": "training.volumetric_rendering.renderer",
                 "RaySampler": "training.volumetric_rendering.ray_sampler"}
OFFICIAL_NAMES = {"StyleGAN2Backbone": "Generator"}
MODULE_SRC = "import torch\nfrom torch_utils import persistence\n# (the whole defining module's source)\n"


@contextmanager
def official_modules():
    """Fake ``torch_utils.persistence``, ``dnnlib.util`` and ``training.*`` modules, present only inside the block."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # referenced by name only; the converter must never call it
        raise AssertionError("the real reconstructor must not be reached")

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = _reconstruct_persistent_obj.__name__
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = type("EasyDict", (dict,), {"__module__": util.__name__})
    modules = {"torch_utils": types.ModuleType("torch_utils"), persistence.__name__: persistence,
               "dnnlib": types.ModuleType("dnnlib"), util.__name__: util}
    for name, module_name in PLAIN_CLASSES.items():
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the parent packages too
            modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        setattr(modules[module_name], name, type(name, (), {"__module__": module_name}))
    with mock.patch.dict(sys.modules, modules):
        yield types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=util.EasyDict,
                                    plain={name: getattr(modules[m], name) for name, m in PLAIN_CLASSES.items()})


class Persistent:
    """Pickles exactly like an object of a ``persistence.persistent_class``."""

    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def persistent_meta(class_name: str, state: dict, module_src: str = MODULE_SRC) -> dict:
    return dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)


def official_layout(module: torch.nn.Module, fake, init_kwargs: dict | None = None):
    """The object graph official EG3D pickles for ``module`` (see the module docstring)."""
    state = {k: (np.float64(v) if isinstance(v, float) else v) for k, v in module.__dict__.items()}
    state["_modules"] = collections.OrderedDict(
        (k, None if m is None else official_layout(m, fake)) for k, m in module._modules.items())
    name = type(module).__name__
    if name in PLAIN_CLASSES:
        obj = object.__new__(fake.plain[name])
        obj.__dict__.update(state)
        return obj
    if type(module).__module__.startswith("torch.nn"):
        obj = type(module).__new__(type(module))
        obj.__dict__.update(state)
        return obj
    state.pop("init_kwargs", None)
    state["_init_args"] = ()
    state["_init_kwargs"] = fake.EasyDict(init_kwargs or {})
    return Persistent(fake.reconstruct, persistent_meta(OFFICIAL_NAMES.get(name, name), state))


def official_kwargs(init_kwargs: dict, fake) -> dict:
    """The generator's kwargs as train.py builds them: mapping_kwargs and sr_kwargs are EasyDicts."""
    kwargs = dict(init_kwargs)
    for key in ("mapping_kwargs", "sr_kwargs"):
        kwargs[key] = fake.EasyDict(kwargs[key])
    return kwargs


def write_official_pickle(path: Path, G: TriPlaneGenerator, *, protocol: int = 4, **extra) -> Path:
    with official_modules() as fake:
        g_ema = official_layout(G, fake, official_kwargs(G.init_kwargs, fake))
        other = Persistent(fake.reconstruct, persistent_meta("DualDiscriminator", {
            "_parameters": collections.OrderedDict(w=torch.ones(2)), "_buffers": collections.OrderedDict(),
            "_modules": collections.OrderedDict(), "_init_args": (), "_init_kwargs": fake.EasyDict(c_dim=25)}))
        snapshot = dict(training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", resolution=128),
                        G=g_ema, D=other, G_ema=g_ema, augment_pipe=None, **extra)
        path.write_bytes(pickle.dumps(snapshot, protocol=protocol))
    return path


class Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def shell_touch(marker: Path) -> str:
    return f"touch {marker}"
