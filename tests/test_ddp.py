"""Two processes (accelerate launch, gloo on this CPU) take the very updates one process takes on the same global
batch: each process takes half the micro-batches and their gradients are summed (thinkdraw.trainers.common)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_grpo import init  # noqa: F401 (a fixture)

from thinkdraw.policy.model import Policy

SCRIPT = Path(__file__).with_name("ddp_run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["grpo", "dpo"])
def test_two_processes_take_the_updates_one_process_takes(init, tmp_path, kind):  # noqa: F811
    one, two = tmp_path / "one", tmp_path / "two"
    run([sys.executable, str(SCRIPT), kind, str(init), str(one)])
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    run([*launch, str(SCRIPT), kind, str(init), str(two)])
    for a, b in zip(torch.load(one / "first_gradient.pt"), torch.load(two / "first_gradient.pt"), strict=True):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-4)  # the same summed gradient, up to float order
    logs = log_of(one), log_of(two)
    assert len(logs[0]) == len(logs[1]) > 2  # the main process alone logs
    for x, y in zip(*logs, strict=True):
        assert x.keys() == y.keys()
        for key in ("loss", "grad_norm", "reward_mean", "pairs", "kl"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-7), key
    # Adam turns float noise in a near-zero gradient into a full-size step: the weights are compared loosely
    for a, b in zip(
        Policy.load(one / "checkpoint").model.parameters(),
        Policy.load(two / "checkpoint").model.parameters(),
        strict=True,
    ):
        assert torch.allclose(a, b, atol=1e-3)
