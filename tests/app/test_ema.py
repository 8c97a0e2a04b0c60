"""``optim.ema_decay``: TaskModule's moving average of the weights (in-process fits of a tiny ViT on CPU)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from tasks.common.checkpoint import model_state_dict
from tasks.lit import TaskModule
from tasks.vision.task import VisionTask

DECAY = 0.9


def _task() -> VisionTask:
    return VisionTask(
        data={"batch_size": 16, "eval_batch_size": 100, "train_limit": 16 * 6},
        model={"patch_size": 7, "stem_channels": [], "embed_dim": 32, "depth": 1, "num_heads": 2},
    )


class _Record(Callback):
    """The model's weights before training and after every optimizer step, and the weights that every
    validation batch ran with."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, module):
        self.steps.append({k: v.clone() for k, v in module.model.state_dict().items()})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({k: v.clone() for k, v in module.model.state_dict().items()})

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        self.validated.append({k: v.clone() for k, v in module.model.state_dict().items()})


def _fit(tmp_path: Path, ema_decay: float | None, max_steps: int = 6):
    L.seed_everything(0, verbose=False)
    task = _task()
    datamodule = task.build_datamodule()
    optim = {"lr": 3e-3, "weight_decay": 0.05, "warmup": 1, "ema_decay": ema_decay}
    module = TaskModule(task, task.build_model(datamodule), optim)
    record = _Record()
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "checkpoints", monitor="val/acc", mode="max", save_last=True
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        val_check_interval=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[record, checkpoint],
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    return module, trainer, record, checkpoint, datamodule


def _expected_average(steps: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The average after each step, computed here: a_{t+1} = a_t + (1 - d_t) (w_{t+1} - a_t),
    d_t = min(DECAY, (1 + t) / (10 + t)), a_0 = the initial weights."""
    average = dict(steps[0])
    out = [average]
    for t, weights in enumerate(steps[1:]):
        d = min(DECAY, (1 + t) / (10 + t))
        average = {k: a + (1 - d) * (weights[k] - a) for k, a in average.items()}
        out.append(average)
    return out


def test_average_validation_and_checkpoints(tmp_path: Path):
    module, trainer, record, checkpoint, _ = _fit(tmp_path, DECAY)
    assert len(record.steps) == 7
    expected = _expected_average(record.steps)
    # the first step's decay is 1/10: the average moves most of the way to the new weights
    for k, a in module.ema.state_dict().items():
        torch.testing.assert_close(a, expected[-1][k], rtol=1e-5, atol=1e-6)
    # validation (after steps 3 and 6) ran with the average, and training went on with the trained weights
    assert len(record.validated) == 2
    for seen, step in zip(record.validated, (3, 6), strict=True):
        for k, v in seen.items():
            torch.testing.assert_close(v, expected[step][k], rtol=1e-5, atol=1e-6)
        assert not all(torch.equal(v, record.steps[step][k]) for k, v in seen.items())
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, record.steps[-1][k]), f"{k}: the trained weights were not put back"
    # checkpoints hold both; inference reads the average
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    step = state["global_step"]
    assert step in (3, 6)
    for k, v in record.steps[step].items():
        assert torch.equal(state["state_dict"][f"model.{k}"], v)
        torch.testing.assert_close(state["state_dict"][f"ema.{k}"], expected[step][k], rtol=1e-5, atol=1e-6)
        assert torch.equal(model_state_dict(state)[k], state["state_dict"][f"ema.{k}"])


def test_test_runs_on_the_average_and_keeps_it(tmp_path: Path):
    module, trainer, _, _, datamodule = _fit(tmp_path, DECAY)
    average = {k: v.clone() for k, v in module.ema.state_dict().items()}
    (with_average,) = trainer.test(module, datamodule=datamodule, verbose=False)
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, average[k])
    # the same test on a module without an average, given the averaged weights, gives the same numbers
    optim = {"lr": 1e-3, "weight_decay": 0.0, "warmup": 1}
    plain = TaskModule(module.task, module.task.build_model(datamodule), optim)
    plain.model.load_state_dict(average)
    (reference,) = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).test(
        plain, datamodule=datamodule, verbose=False
    )
    assert with_average == pytest.approx(reference, rel=1e-6)


def test_without_decay_there_is_no_average(tmp_path: Path):
    module, _, record, checkpoint, _ = _fit(tmp_path, None, max_steps=3)
    assert module.ema is None
    state = torch.load(checkpoint.last_model_path, weights_only=True)
    assert not any(k.startswith("ema.") for k in state["state_dict"])
    for k, v in record.validated[0].items():
        assert torch.equal(v, record.steps[3][k])  # validation ran with the trained weights


def test_checkpoint_with_an_average_needs_the_decay(tmp_path: Path):
    _, _, _, checkpoint, datamodule = _fit(tmp_path, DECAY, max_steps=3)
    task = _task()
    module = TaskModule(task, task.build_model(datamodule), {"lr": 1e-3, "weight_decay": 0.0, "warmup": 1})
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="optim.ema_decay"):
        trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.last_model_path, weights_only=True)


def test_a_checkpoint_saved_during_evaluation_holds_the_trained_weights(tmp_path: Path):
    """SIGTERM mid-validation saves a checkpoint while the average is swapped in: ``model.*`` must still be
    the trained weights, or the resumed run would go on from the average."""
    module, trainer, record, _, _ = _fit(tmp_path, DECAY, max_steps=3)
    trained = {k: v.clone() for k, v in module.model.state_dict().items()}
    module._swap_in_average()
    assert not all(torch.equal(v, trained[k]) for k, v in module.model.state_dict().items())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    module._swap_back()
    state = torch.load(tmp_path / "mid.ckpt", weights_only=True)["state_dict"]
    for k, v in trained.items():
        assert torch.equal(state[f"model.{k}"], v)
        assert torch.equal(state[f"ema.{k}"], module.ema.state_dict()[k])
