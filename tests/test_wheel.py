"""The built wheel works on its own: installed into a fresh virtual environment, its commands run from any folder.

The wheel is built from this checkout; the fresh environment gets it without dependencies and borrows the test
environment's installed packages through a path file (not its editable install of this checkout, which path
files in an added folder do not reach), so the commands can only find texface's code and configs in the wheel.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding the texface wheel."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(root / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next((root / "dist").glob("texface-*.whl"))
    venv.create(root / "env", with_pip=True)
    python = root / "env" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    env_site = next((root / "env" / "lib").glob("python*/site-packages"))
    (env_site / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def run(python: Path, *args: str, cwd: Path, script: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    command = [str(python.parent / script), *args] if script else [str(python), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_code_comes_from_the_wheel(installed, tmp_path):
    out = run(installed, "-c", "import scd, texface.config as c; print(scd.__file__); print(c.config_dir())",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    code, conf = out.stdout.split()
    assert str(ROOT) not in code and str(ROOT) not in conf and conf.endswith("texface/conf")


def test_generate_from_any_folder(installed, tmp_path):
    out = run(installed, "-m", "scd.generate", "num_samples=1", "steps=2", "progress=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.glob("outputs/generate/runs/*/grid.png"))


def test_train_demo_from_any_folder(installed, tmp_path):
    tiny = ["data.train_size=16", "data.val_size=8", "data.batch_size=8", "model.denoiser.dim=32",
            "model.denoiser.heads=2", "model.denoiser.ff_dim=32", "model.text_encoder.config.hidden_size=16",
            "model.text_encoder.config.intermediate_size=16", "model.text_encoder.config.num_hidden_layers=1",
            "model.val_sampling.num_samples=4", "model.val_sampling.steps=2", "trainer.max_epochs=1",
            "trainer.check_val_every_n_epoch=1", "trainer.enable_progress_bar=false", "~callbacks.sample_images"]
    out = run(installed, "-m", "scd.train", "experiment=demo", *tiny, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.glob("outputs/demo/runs/*/export/config.json"))


def test_render_and_the_console_scripts(installed, tmp_path):
    out = run(installed, "-m", "eg3d.render", "render=fast", "render.orbit.frames=2", "progress=false",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.glob("outputs/render/runs/*/orbit.mp4"))
    script = run(installed, "num_samples=1", "steps=2", "progress=false", f"out_dir={tmp_path / 'script'}",
                 cwd=tmp_path, script="texface-generate")
    assert script.returncode == 0, script.stderr[-2000:]
    assert (tmp_path / "script" / "grid.png").is_file()
    bad = run(installed, str(tmp_path / "missing.pkl"), str(tmp_path / "x"), cwd=tmp_path, script="texface-convert-eg3d")
    assert bad.returncode == 2 and bad.stderr.startswith("error: network pickle not found")
