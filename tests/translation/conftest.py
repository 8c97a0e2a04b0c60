"""A tiny translation model trained for a few seconds, shared by the decoding tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from tasks.base import RunContext
from tasks.translation.data import TranslationDataModule
from tasks.translation.model import Seq2SeqTransformer
from tasks.translation.task import TranslationTask

TINY_DATA = {
    "name": "numbers",
    "numbers": {
        "max_digits": 3,
        "train_size": 3000,
        "val_size": 16,
        "test_size": 24,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
    },
    "vocab_size": 300,
    "batch_size": 64,
    "eval_batch_size": 32,
}
TINY_MODEL = {
    "embed_dim": 32,
    "num_heads": 2,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "ffn_dim": 64,
    "dropout": 0.0,
}


@dataclass
class Trained:
    task: TranslationTask
    dm: TranslationDataModule
    model: Seq2SeqTransformer
    losses: list[float]


def train_steps(
    task: TranslationTask, model: torch.nn.Module, dm: TranslationDataModule, steps: int, lr: float = 3e-3
) -> list[float]:
    """Plain AdamW steps on the training loader; returns the losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    model.train()
    while len(losses) < steps:
        for batch in dm.train_dataloader():
            loss = task.training_loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) >= steps:
                break
    model.eval()
    return losses


@pytest.fixture(scope="package")
def trained(tmp_path_factory) -> Trained:
    """Two-digit numbers en->de, d=32, 1+1 layers, 250 steps (a few seconds on one core)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("run")
    task = TranslationTask(
        data=TINY_DATA,
        model=TINY_MODEL,
        decode={"beam_size": 3, "val_sentences": 8},
        run=RunContext("translation", run_dir=out),
    )
    dm = task.build_datamodule()
    model = task.build_model(dm)
    losses = train_steps(task, model, dm, 250)
    return Trained(task, dm, model, losses)
