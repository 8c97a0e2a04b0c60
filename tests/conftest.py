"""Shared pytest setup: offline hub, quiet plotting, a tiny vision config for end-to-end runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent

#: a vision run that takes seconds on CPU: tiny ViT, few images, one val / test batch
TINY_VISION = [
    "task=vision",
    "task.model.patch_size=7",
    "task.model.stem_channels=[]",
    "task.model.embed_dim=32",
    "task.model.depth=1",
    "task.model.num_heads=2",
    "task.data.batch_size=32",
    "task.data.eval_batch_size=100",
    "task.data.train_limit=256",
    "task.num_attention_images=2",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=2",  # validate (and save best.ckpt) every 2 steps
    "trainer.log_every_n_steps=1",
    "trainer.limit_test_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


#: a tiny translation run on the embedded number phrases (a few seconds of CPU), for end-to-end tests
TINY_TRANSLATION = [
    "task=translation",
    "task.data.numbers.max_digits=3",
    "task.data.vocab_size=300",
    "task.model.embed_dim=32",
    "task.model.num_heads=2",
    "task.model.encoder_layers=1",
    "task.model.decoder_layers=1",
    "task.model.ffn_dim=64",
    "task.decode.beam_size=2",
    "task.num_attention_plots=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def train_command(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``python train.py *args`` and its environment (1 torch thread: the CI box has 2 shared cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONWARNINGS="ignore")
    return [sys.executable, str(REPO / "train.py"), *args], env


def run_train(args: list[str], cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python train.py *args`` in a subprocess (``train_command``)."""
    cmd, env = train_command(args)
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh dataset cache folder."""
    return tmp_path / "cache"
