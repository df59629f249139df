"""texface.cli: one runner for every command: one-line errors with the documented exit codes, device resolution,
provenance in the run folder, the elapsed time."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import ROOT
from texface.cli import run_main, user_error
from texface.errors import CheckpointError, ConfigError, DataFormatError, RunError


def test_run_main_reports_bad_input_in_one_line(capsys):
    def bad():
        raise CheckpointError("checkpoint not found: x\n(second line)")

    assert run_main(bad) == 2
    out, err = capsys.readouterr()
    assert err == "error: checkpoint not found: x (second line)\n" and out == ""


def test_run_main_exit_codes_and_success_line(capsys):
    assert run_main(lambda: print("hi")) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("hi\ndone in ") and out.endswith(" s\n")

    def failed():
        raise RunError("training diverged at step 3")

    def interrupted():
        raise KeyboardInterrupt

    assert run_main(failed) == 1 and run_main(interrupted) == 130
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_main(lambda: 1 / 0)


def test_user_errors_are_ours_config_values_and_paths():
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    ours = DataFormatError("bad dataset")
    assert user_error(ours) is ours
    wrapped = InstantiationException("Error in call to target")
    wrapped.__cause__ = ValueError("Invalid learning rate: -1")
    assert isinstance(user_error(wrapped), ConfigError) and "Invalid learning rate" in str(user_error(wrapped))
    missing = user_error(MissingMandatoryValue("Missing mandatory value: ckpt\n    full_key: ckpt"))
    assert isinstance(missing, ConfigError) and str(missing) == "Missing mandatory value: ckpt"
    denied = user_error(PermissionError(13, "Permission denied", "/root/out"))
    assert str(denied) == "Permission denied: /root/out"
    assert user_error(ValueError("a bug")) is None  # outside an instantiation, a ValueError is ours to fix


def test_a_command_writes_provenance_and_resolves_the_device(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "scd.generate", f"hydra.run.dir={run}", "num_samples=1",
                             "steps=2", "progress=false", "device=auto", f"out_dir={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("done in ")
    record = json.loads((run / "provenance.json").read_text())
    assert record["command"].startswith("python -m scd.generate hydra.run.dir=")
    assert record["status"] == "ok" and record["exit_code"] == 0 and record["elapsed_s"] > 0
    assert record["git"]["commit"] and isinstance(record["git"]["dirty"], bool)
    assert record["config"]["device"] == "cpu"  # 'auto' resolved before the task ran
    assert record["config"]["out_dir"] == str(tmp_path / "out")  # interpolations resolved
    assert OmegaConf.load(run / ".hydra" / "config.yaml").device == "auto"  # Hydra's own copy is unresolved


def test_a_failed_command_records_its_error(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "eg3d.render", f"hydra.run.dir={run}", "device=tpu"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("error: device must be auto, cpu or cuda[:N]")
    assert len(result.stderr.strip().splitlines()) == 1
    record = json.loads((run / "provenance.json").read_text())
    assert record["exit_code"] == 2 and record["status"].startswith("error: device must be")
