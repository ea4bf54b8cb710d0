"""Checkpoints: safetensors weights, weights_only-loadable resumable state, random states."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from echo_vlsm.train.checkpoint import (
    BackgroundWriter,
    cpu_copy,
    load_state,
    load_weights,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
)


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.norm = nn.BatchNorm2d(width)


def test_weights_round_trip_and_mismatch_errors(tmp_path):
    torch.manual_seed(0)
    a, b = Net(), Net()
    a.norm.running_mean += 1.5
    path = save_weights(a, tmp_path / "run" / "model.safetensors")
    load_weights(b, path)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model.safetensors"]  # no temp left
    with pytest.raises(ValueError, match="model.safetensors"):
        load_weights(Net(width=5), path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(b, tmp_path / "nope.safetensors")


def test_state_round_trip_restores_every_random_state(tmp_path):
    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.conv.weight.sum().backward()
    opt.step()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
             "history": [{"epoch": 1, "val_dice": 12.5}], "best": {"best_val_dice": -float("inf")},
             "rng": rng_state()}
    expected = (torch.rand(3), np.random.rand(2), random.random())
    save_state(tmp_path / "state.pt", cpu_copy(state))
    loaded = load_state(tmp_path / "state.pt")  # weights_only=True inside
    set_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    opt2 = torch.optim.AdamW(Net().parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert loaded["epoch"] == 3 and loaded["history"][0]["val_dice"] == 12.5


def test_damaged_state_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="(?s)state.pt.*delete it"):
        load_state(tmp_path / "state.pt")


def test_cpu_copy_is_a_snapshot_and_writer_reraises():
    t = torch.ones(3)
    snap = cpu_copy({"a": [t, (t, 1)], "b": "x"})
    t += 1
    assert snap["a"][0].tolist() == [1, 1, 1] and snap["a"][1][1] == 1 and snap["b"] == "x"
    writer = BackgroundWriter()
    done = []
    writer.submit(done.append, 1)
    writer.submit(done.append, 2)
    writer.wait()
    assert done == [1, 2]

    def fail():
        raise OSError("disk full")

    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
