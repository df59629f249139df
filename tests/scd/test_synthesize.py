"""`python -m scd.synthesize`: a synthetic style-code dataset on disk, and one-line errors."""
from __future__ import annotations

import torch

from scd.synthesize import main
from scd.synthetic import AttributeWorld
from texface.stylecodes import StyleCodeSet


def test_cli_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main([str(out), "--n", "40", "--seed", "7"]) == 0
    data = StyleCodeSet.load(out)
    assert len(data) == 40 and data.meta["sample_seed"] == 7 and data.meta["world"] == AttributeWorld(0).config
    assert torch.equal(data.codes, AttributeWorld(0).sample(40, seed=7).codes)
    assert "wrote 40 codes" in capsys.readouterr().out
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep")
    assert main([str(tmp_path / "busy"), "--n", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to overwrite") and err.count("\n") == 1
    assert main([str(tmp_path / "zero"), "--n", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --n must be an integer >= 1")
    assert not (tmp_path / "zero").exists()
