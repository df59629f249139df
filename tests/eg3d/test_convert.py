"""eg3d.convert: official EG3D network pickles -> our checkpoints (pickles built by tests/official_eg3d.py)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
import torch

from eg3d.camera import orbit_labels
from eg3d.checkpoint import load_generator
from eg3d.convert import main
from eg3d.official_pickle import generator_from_pickle
from official_eg3d import write_official_pickle


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
    G = load_generator(tmp_path / "ours")
    assert G.neural_rendering_resolution == 32 and G.init_kwargs == tiny.init_kwargs
    for key, value in expected.items():
        assert torch.equal(G.state_dict()[key], value), key
    expected_out, out = _render(tiny), _render(G)
    for key, value in expected_out.items():
        assert torch.equal(out[key], value), key


# ---- the command line --------------------------------------------------------------------------------------------

def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "text.pkl").write_text("not a pickle at all")
    (tmp_path / "nog.pkl").write_bytes(pickle.dumps({"G": None, "D": None}))
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    cases = {"missing.pkl": "network pickle not found", "text.pkl": "is not a readable network pickle",
             "nog.pkl": "has no 'G_ema' network", "list.pkl": "expected the dict of an EG3D snapshot"}
    for name, message in cases.items():
        assert main([str(tmp_path / name), str(tmp_path / "out")]) == 2
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
