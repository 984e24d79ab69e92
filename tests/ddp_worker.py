"""Run by tests/test_train.py under torchrun: train a config with the Trainer and save this
process's final weights as rank<R>.safetensors beside the run, so the test can compare the
processes' models (data-parallel training must keep them equal)."""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from talkmotion.config import load
from talkmotion.train import TrainConfig, Trainer


def main(config: str) -> None:
    cfg = load(TrainConfig, config)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.distributed.init_process_group("gloo")
    try:
        trainer = Trainer(cfg, rank, world)
        trainer.fit()
        weights = {k: v.contiguous() for k, v in trainer.objective.state_dict().items()}
        save_file(weights, str(Path(cfg.out_dir) / f"rank{rank}.safetensors"))
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
