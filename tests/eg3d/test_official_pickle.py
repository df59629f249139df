"""eg3d.official_pickle: official EG3D network pickles read with no code from them ever run (pickles built by
tests/official_eg3d.py)."""
from __future__ import annotations

import io
import os
import pickle
import subprocess

import pytest
import torch

from eg3d.checkpoint import build_generator, load_generator
from eg3d.convert import main
from eg3d.official_pickle import SafeUnpickler, generator_from_pickle, state_dict_of
from official_eg3d import Persistent, Reduce, official_kwargs, official_layout, official_modules, persistent_meta, \
    shell_touch, write_official_pickle
from texface.errors import ConvertError, UnsafePickleError


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


@pytest.mark.parametrize("make, forbidden", [
    (lambda m: Reduce(os.system, shell_touch(m)), f"{os.system.__module__}.system"),
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
    assert rc == 2 and not marker.exists() and not (tmp_path / "out").exists()


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
        Reduce(os.system, shell_touch(marker))))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Reduce(torch.storage._load_from_bytes, payload)}))
    with pytest.raises(ConvertError, match="could not be read safely"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()
