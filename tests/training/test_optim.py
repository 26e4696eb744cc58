"""Optimisation (lead.training.optim): the learning-rate schedule, bf16 autocast on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lead.training import optim
from lead.training.optim import linear_schedule


def test_learning_rate_warms_up_then_decays_linearly_to_zero():
    factors = [linear_schedule(step, 2, 10) for step in range(11)]
    assert factors[:3] == [0.0, 0.5, 1.0]
    assert factors[-1] == 0.0
    assert np.allclose(np.diff(factors[2:]), -1 / 8)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_precision_autocasts_on_a_cpu_with_native_bf16_and_is_fp32_elsewhere(
    monkeypatch, caplog, native
):
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: native)
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    with optim.autocast_for(torch.device("cpu"), "bf16")():
        out = layer(x)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("no native bf16" in caplog.text) != native
    with optim.autocast_for(torch.device("cpu"), "fp32")():
        assert layer(x).dtype == torch.float32
