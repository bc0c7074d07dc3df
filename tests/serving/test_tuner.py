"""The thread tuner, timing a real forward pass: it tries each thread count, then keeps one per
range of batch sizes."""

import os

import pytest
import torch

from nbserve.serving.tuner import Tuner


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to choose")
def test_each_size_range_is_measured_then_decided():
    model = torch.nn.Linear(256, 256)
    tuner = Tuner(trials=2)
    seen = {1: set(), 4: set()}
    for _ in range(12):
        for items in (1, 4):
            with tuner.timing(items):
                seen[items].add(torch.get_num_threads())
                with torch.inference_mode():
                    model(torch.randn(items, 256))
    assert seen[1] == seen[4] == {1, os.cpu_count()}  # both tried, per range
    # Ranges by bit length: 1 item is range 1, 4 items range 3; each decided on its own.
    assert set(tuner._chosen) == {1, 3} and set(tuner._chosen.values()) <= {1, os.cpu_count()}
    with tuner.timing(1):
        assert torch.get_num_threads() == tuner._chosen[1] == tuner.threads


def test_off_on_a_gpu_worker_or_one_core():
    tuner = Tuner(enabled=False)
    before = torch.get_num_threads()
    with tuner.timing(8):
        pass
    assert tuner.candidates == [] and torch.get_num_threads() == before == tuner.threads
