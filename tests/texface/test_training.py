"""texface.training: the shared learning-rate schedule (fit itself runs in every training test)."""
from __future__ import annotations

import pytest
import torch

from texface.training import warmup_cosine


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, total_steps=110, warmup_steps=10, final_lr_ratio=0.1)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.0 * 1 / 10)
    assert lrs[9] == pytest.approx(2.0)
    assert lrs[10] == pytest.approx(2.0)                        # cosine starts at the peak
    assert lrs[60] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))     # half way: cos(pi/2) = 0
    assert lrs[110] == pytest.approx(2.0 * 0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    with pytest.raises(ValueError):
        warmup_cosine(opt, total_steps=10, final_lr_ratio=1.5)
