"""eg3d.convert: official EG3D network pickles -> our checkpoints, with no code from the pickle ever run.

The tests build pickles with the official layout: ``pickle.dump`` of the snapshot dict, networks pickled through
``torch_utils.persistence`` as ``_reconstruct_persistent_obj(meta)`` (meta = type, version, module_src, class_name,
state = the module's ``__dict__``), kwargs as ``dnnlib.util.EasyDict``, float gains as numpy scalars, and the
non-persistent helpers (decoder, renderer, ray sampler) as ordinary objects of ``training.*`` classes. Fake
``torch_utils``/``dnnlib``/``training`` modules exist only while pickling.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from eg3d.camera import orbit_labels
from eg3d.checkpoint import build_generator, load_generator
from eg3d.convert import ConvertError, SafeUnpickler, UnsafePickleError, generator_from_pickle, main, \
    state_dict_of
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


@pytest.fixture(scope="module")
def tiny():
    G = build_generator(preset="tiny", seed=3)
    G.neural_rendering_resolution = 32  # not the constructor's default: must come from the pickled state
    return G


@pytest.fixture(scope="module")
def official_pkl(tiny, tmp_path_factory):
    return write_official_pickle(tmp_path_factory.mktemp("pkl") / "network-snapshot.pkl", tiny)


def _render(G):
    z, c = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)), orbit_labels(1)
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7, noise_mode="const", deterministic=True, neural_rendering_resolution=16)


@pytest.mark.parametrize("protocol", [2, 4])
def test_official_pickle_converts_exactly(tiny, tmp_path, protocol):
    pkl = write_official_pickle(tmp_path / "G.pkl", tiny, protocol=protocol)
    init_kwargs, nrr, state = generator_from_pickle(pkl)
    assert init_kwargs == tiny.init_kwargs and nrr == 32
    expected = tiny.state_dict()
    assert list(state) == list(expected)  # same keys, in state_dict order
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key

    assert main([str(pkl), str(tmp_path / "ours")]) == 0
    G = TriPlaneGenerator.load(tmp_path / "ours")
    assert G.neural_rendering_resolution == 32 and G.init_kwargs == tiny.init_kwargs
    for key, value in expected.items():
        assert torch.equal(G.state_dict()[key], value), key
    expected_out, out = _render(tiny), _render(G)
    for key, value in expected_out.items():
        assert torch.equal(out[key], value), key


def test_load_generator_reads_pickles_directly(tiny, official_pkl):
    G = load_generator(official_pkl)
    assert not G.training and G.neural_rendering_resolution == 32
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), tiny.state_dict().values()))


def test_live_rendering_kwargs_win(tiny, tmp_path):
    # Official scripts rebuild G with the pickled attribute, so a changed rendering_kwargs must carry over.
    G = build_generator(preset="tiny", seed=3)
    G.rendering_kwargs["depth_resolution"] = 6
    init_kwargs, _, _ = generator_from_pickle(write_official_pickle(tmp_path / "G.pkl", G))
    assert init_kwargs["rendering_kwargs"]["depth_resolution"] == 6


def test_state_dict_walk_matches_torch():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Softplus(), torch.nn.Linear(4, 2))
            self.register_buffer("kept", torch.arange(3.0))
            self.register_buffer("dropped", torch.ones(2), persistent=False)
            self.register_parameter("unset", None)
            self.head = None

    net = Net()
    with official_modules() as fake:
        data = pickle.dumps(official_layout(net, fake), protocol=4)
    state = state_dict_of(SafeUnpickler(io.BytesIO(data)).load())
    expected = net.state_dict()
    assert list(state) == list(expected) and "dropped" not in state
    assert all(torch.equal(state[k], v) for k, v in expected.items())


# ---- nothing from a hostile pickle may run -------------------------------------------------------------------

class Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _shell_touch(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("make, forbidden", [
    (lambda m: Reduce(os.system, _shell_touch(m)), f"{os.system.__module__}.system"),
    (lambda m: Reduce(eval, f"open({str(m)!r}, 'w')"), "builtins.eval"),
    (lambda m: Reduce(subprocess.call, ["touch", str(m)]), "subprocess.call"),
    (lambda m: Reduce(torch.load, str(m)), "torch.serialization.load"),
    # lower-case names under the module-class prefixes are functions, not classes: refused too
    (lambda m: Reduce(torch.nn.modules.module.register_module_forward_hook, print),
     "torch.nn.modules.module.register_module_forward_hook"),
])
def test_malicious_globals_are_refused(tmp_path, tiny, make, forbidden):
    marker = tmp_path / "pwned"
    # Hidden deep inside an otherwise valid snapshot: the whole file is refused.
    pkl = write_official_pickle(tmp_path / "evil.pkl", tiny, evil={"x": [make(marker)]})
    with pytest.raises(UnsafePickleError, match=f"refusing to load global '{forbidden}'"):
        load_generator(pkl)
    assert not marker.exists()
    rc = main([str(pkl), str(tmp_path / "out")])
    assert rc == 1 and not marker.exists() and not (tmp_path / "out").exists()


def test_persistent_source_is_never_executed(tmp_path, tiny, capfd):
    marker = tmp_path / "pwned"
    evil_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nprint('module source ran')\n"
    with official_modules() as fake:
        # An unknown class at G_ema is refused; a TriPlaneGenerator with hostile source converts without running it.
        evil = Persistent(fake.reconstruct, persistent_meta("Backdoor", {"_modules": {}}, module_src=evil_src))
        (tmp_path / "a.pkl").write_bytes(pickle.dumps({"G_ema": evil}, protocol=4))
        g_ema = official_layout(tiny, fake, official_kwargs(tiny.init_kwargs, fake))
        g_ema.meta["module_src"] = evil_src
        (tmp_path / "b.pkl").write_bytes(pickle.dumps({"G_ema": g_ema}, protocol=4))
    with pytest.raises(ConvertError, match="G_ema is a Backdoor, expected an EG3D TriPlaneGenerator"):
        load_generator(tmp_path / "a.pkl")
    G = load_generator(tmp_path / "b.pkl")
    assert torch.equal(G.backbone.mapping.w_avg, tiny.backbone.mapping.w_avg)
    assert not marker.exists() and "module source ran" not in capfd.readouterr().out


def test_hostile_tensor_payload_is_refused(tmp_path):
    # torch's own _load_from_bytes would torch.load(weights_only=False) this payload; ours reads weights only.
    marker = tmp_path / "pwned"
    payload = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, dict(protocol_version=1001, little_endian=True, type_sizes={}),
        Reduce(os.system, _shell_touch(marker))))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Reduce(torch.storage._load_from_bytes, payload)}))
    with pytest.raises(ConvertError, match="could not be read safely"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


# ---- the command line --------------------------------------------------------------------------------------------

def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "text.pkl").write_text("not a pickle at all")
    (tmp_path / "nog.pkl").write_bytes(pickle.dumps({"G": None, "D": None}))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    cases = {"missing.pkl": "network pickle not found", "text.pkl": "is not a readable network pickle",
             "nog.pkl": "has no 'G_ema' network", "list.pkl": "expected the dict of an EG3D snapshot"}
    for name, message in cases.items():
        assert main([str(tmp_path / name), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_subprocess(official_pkl, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "eg3d.convert", str(official_pkl), str(tmp_path / "ours")],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ours" / "config.json").is_file() and (tmp_path / "ours" / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "eg3d.convert", str(tmp_path / "nope.pkl"), str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "network pickle not found" in bad.stderr
