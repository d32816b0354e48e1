"""A tiny GRPO or DPO run for tests/test_ddp.py, in one process (`python tests/ddp_run.py KIND INIT OUT`) or in
several (`accelerate launch --multi_gpu --num_processes 2 tests/ddp_run.py KIND INIT OUT`). The main process
writes OUT/first_gradient.pt: the summed gradient the first optimizer update steps on."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import PartialState
from test_dpo import config_for as dpo_config
from test_grpo import RECORDS, config_for, quiet, words

from thinkdraw.trainers.dpo import train_dpo
from thinkdraw.trainers.grpo import train_grpo


def record_first_gradient(out: Path) -> None:
    step = torch.optim.AdamW.step

    def recording(self, *args, **kwargs):
        target = out / "first_gradient.pt"
        if PartialState().is_main_process and not target.exists():
            out.mkdir(parents=True, exist_ok=True)
            torch.save([p.grad.clone() for group in self.param_groups for p in group["params"]], target)
        return step(self, *args, **kwargs)

    torch.optim.AdamW.step = recording


def main() -> None:
    kind, init, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    record_first_gradient(out)
    if kind == "grpo":
        train_grpo(config_for(init, out, steps=3, accumulation=2, kl_beta=0.1, save_every=10), RECORDS, words, quiet)
    else:
        config = dpo_config(init, out, rounds=2, steps_per_round=2, save_every=2, accumulation=2)
        train_dpo(config, RECORDS, words, quiet)


if __name__ == "__main__":
    main()
