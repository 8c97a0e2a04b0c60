"""The task end to end: train.py on the embedded year, baselines on known series, artefacts, the forecast
command and its errors, and the ETTh1 recipe on a tiny stand-in file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.base import RunContext
from tasks.timeseries.forecast import Forecaster, main
from tasks.timeseries.task import MODEL_FILE, TimeSeriesTask, evaluate
from tests.conftest import run_train
from tests.timeseries.conftest import TINY_TIMESERIES, write_series


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python train.py task=timeseries`` with the tiny settings: the run folder."""
    run_dir = tmp_path_factory.mktemp("run")
    proc = run_train([*TINY_TIMESERIES, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_train_py_prints_the_model_beside_the_baselines(trained_run: Path):
    with open(trained_run / "results.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["timeseries (ours)", "last value", "seasonal naive (period 24)", "DLinear"]
    for row in rows.values():
        assert 0 < float(row["mse"]) < 5 and 0 < float(row["mae"]) < 2
    for name in ("forecasts.png", "attention.png", "loss.png"):
        assert (trained_run / "plots" / name).stat().st_size > 5000, name
    card = json.loads((trained_run / MODEL_FILE).read_text())
    assert (
        card["model"]["lookback"] == 48
        and card["model"]["horizon"] == 12
        and card["model"]["num_channels"] == 8
    )
    assert card["channels"][0] == "ghi" and card["step_seconds"] == 3600 and len(card["mean"]) == 8


def test_baselines_score_known_series_exactly(tmp_path: Path):
    """On an exactly daily-periodic series seasonal naive is perfect; last value's MSE is the closed form."""
    path = tmp_path / "daily.csv"
    t = np.arange(600)
    frame = pd.DataFrame(
        {"date": pd.date_range("2020", periods=600, freq="h"), "a": np.sin(2 * np.pi * t / 24), "b": t % 24}
    )
    frame.to_csv(path, index=False)
    task = TimeSeriesTask(
        data={"root": str(path), "split": [0.6, 0.2, 0.2]},
        lookback=48,
        horizon=24,
        dlinear={"epochs": 10, "lr": 0.02},
    )
    dm = task.build_datamodule()
    dm.setup()
    rows = task.baselines(dm)
    assert rows["seasonal naive (period 24)"]["mse"] == pytest.approx(0, abs=1e-10)
    x, y = dm.dataset("test").__getitems__(list(range(len(dm.dataset("test")))))
    err = x[:, -1:] - y
    assert rows["last value"]["mse"] == pytest.approx(float(err.square().mean()), rel=1e-5)
    assert rows["last value"]["mae"] == pytest.approx(float(err.abs().mean()), rel=1e-5)
    assert rows["DLinear"]["mse"] < 0.05 * rows["last value"]["mse"]  # a linear map learns the cycle


def test_evaluate_counts_every_element():
    batches = [
        (torch.zeros(3, 4, 2), torch.ones(3, 2, 2)),
        (torch.zeros(1, 4, 2), torch.full((1, 2, 2), 3.0)),
    ]
    scores = evaluate(lambda x: x[:, :2], batches, torch.device("cpu"))
    assert scores == {"mse": pytest.approx((12 * 1 + 4 * 9) / 16), "mae": pytest.approx((12 + 12) / 16)}


def test_task_settings_are_checked():
    with pytest.raises(ValueError, match=r"task.horizon=0 must be >= 1"):
        TimeSeriesTask(horizon=0)
    with pytest.raises(ValueError, match=r"task.period=400 must be between 1 and task.lookback=336"):
        TimeSeriesTask(period=400)
    with pytest.raises(ValueError, match=r"task.loss='l3'; pick one of mse, mae, huber"):
        TimeSeriesTask(loss="l3")
    with pytest.raises(ValueError, match=r"unknown task.dlinear keys \['epoch'\]"):
        TimeSeriesTask(dlinear={"epoch": 3})
    with pytest.raises(ValueError, match=r"task.model.horizon is set from the data / task.horizon"):
        TimeSeriesTask(model={"horizon": 12})
    task = TimeSeriesTask(lookback=48, horizon=12, model={"patch_len": 64})
    with pytest.raises(ValueError, match=r"task.model.patch_len=64 must be between 1 and task.lookback=48"):
        task.build_model(task.build_datamodule())


def test_model_card_is_written_only_with_a_run_folder(tmp_path: Path, series_csv: Path):
    data = {"root": str(series_csv)}
    small = {"patch_len": 12, "stride": 12, "d_model": 8, "num_heads": 2, "num_layers": 1}
    task = TimeSeriesTask(data=data, model=small, lookback=48, horizon=12)
    task.build_model(task.build_datamodule())
    assert not list(tmp_path.glob("*.json"))
    run = RunContext(name="timeseries", run_dir=tmp_path / "run")
    task = TimeSeriesTask(data=data, model=small, lookback=48, horizon=12, run=run)
    dm = task.build_datamodule()
    task.build_model(dm)
    card = json.loads((tmp_path / "run" / MODEL_FILE).read_text())
    np.testing.assert_allclose(card["mean"], dm.mean)
    assert card["channels"] == ["c0", "c1", "c2"] and card["date_column"] == "date"


def test_forecast_command_writes_csv_and_png(trained_run: Path, tmp_path: Path, capsys):
    """The forecast continues the CSV's dates and equals the model on the scaled last look-back rows."""
    from tasks.timeseries.data import load_tmy3

    series = load_tmy3()
    frame = pd.DataFrame(series.values[:500], columns=series.channels)
    frame.insert(0, "date", pd.to_datetime(series.dates[:500]))
    frame["ignored"] = "text"  # other columns are ignored
    csv_path = tmp_path / "weather.csv"
    frame.to_csv(csv_path, index=False)
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    assert main([f"ckpt={ckpt}", "--csv", str(csv_path)]) == 0
    assert "forecast of 12 rows written to" in capsys.readouterr().out
    assert main([f"ckpt={ckpt}", "--csv", str(csv_path), f"out={tmp_path / 'f.csv'}", "device=cpu"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "f.csv"), pd.read_csv(tmp_path / "weather_forecast.csv")
    )
    out = pd.read_csv(tmp_path / "weather_forecast.csv")
    assert list(out.columns) == ["date", *series.channels] and len(out) == 12
    assert out["date"].iloc[0] == str(pd.Timestamp(series.dates[499]) + pd.Timedelta(hours=1))
    assert (tmp_path / "weather_forecast.png").stat().st_size > 5000
    forecaster = Forecaster(ckpt)
    card = forecaster.card
    x = (series.values[500 - 48 : 500] - card["mean"]) / card["std"]
    with torch.no_grad():
        y = (
            forecaster.model(torch.tensor(x, dtype=torch.float32)[None])[0].numpy() * card["std"]
            + card["mean"]
        )
    np.testing.assert_allclose(out[series.channels].to_numpy(), y, rtol=1e-4, atol=1e-3)


def test_forecast_errors_are_one_line_and_write_nothing(trained_run: Path, tmp_path: Path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    short = tmp_path / "short.csv"
    write_series(short, 30, channels=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"short.csv has no date column 'date'|task.data.channels \['ghi'"):
        main([f"ckpt={ckpt}", "--csv", str(short)])
    frame = pd.DataFrame({"date": pd.date_range("2020", periods=30, freq="h")})
    for c in json.loads((trained_run / MODEL_FILE).read_text())["channels"]:
        frame[c] = np.arange(30.0)
    frame.to_csv(short, index=False)
    with pytest.raises(ValueError, match=r"short.csv has 30 rows; the model reads the last 48"):
        main([f"ckpt={ckpt}", "--csv", str(short)])
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope.ckpt does not exist"):
        main([f"ckpt={tmp_path / 'nope.ckpt'}", "--csv", str(short)])
    with pytest.raises(SystemExit, match=r"give --csv series.csv"):
        main([f"ckpt={ckpt}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    other = torch.load(ckpt, weights_only=True)
    other["mha_suite"]["task"] = "vision"
    torch.save(other, tmp_path / "vision.ckpt")
    with pytest.raises(ValueError, match=r"written by task=vision, not task=timeseries"):
        Forecaster(tmp_path / "vision.ckpt", run_dir=trained_run)


def test_etth1_recipe_sweep_runs_on_a_tiny_stand_in(tmp_path: Path):
    """The README's ETTh1 sweep (``-m task.horizon=...``), steps cut, on a random file of ETTh1's shape
    (never the real data), from another working folder so that the recipe's paths are exercised."""
    path = tmp_path / "data" / "ett-small" / "ETTh1.csv"
    frame = write_series(path, 14400, channels=7)
    frame.columns = ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    frame.to_csv(path, index=False)
    proc = run_train(
        [
            "-m",
            "experiment=timeseries_etth1",
            f"paths.data_dir={tmp_path / 'data'}",
            "task.horizon=24",
            "trainer=default",
            "trainer.max_steps=2",
            "trainer.max_epochs=1",
            "trainer.val_check_interval=2",  # a validation: the sweep summary needs val/mse
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "trainer.enable_progress_bar=false",
            "task.data.batch_size=16",
            "task.data.eval_batch_size=64",
            "task.dlinear.epochs=1",
            "task.dlinear.batch_size=1024",
            "save_artifacts=false",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = (tmp_path / "multirun" / "timeseries").glob("*/0")
    assert "ok" in (job.parent / "sweep.csv").read_text()
    rows = pd.read_csv(job / "results.csv")
    assert list(rows["model"]) == ["timeseries (ours)", "last value", "seasonal naive (period 24)", "DLinear"]
    card = json.loads((job / MODEL_FILE).read_text())
    assert card["model"]["lookback"] == 336 and card["model"]["horizon"] == 24 and len(card["channels"]) == 7


def test_a_checkpoint_of_another_horizon_is_refused_in_one_line():
    """Look-back and horizon are recorded with task.model in checkpoints, so a resume or a test with another
    horizon names the setting instead of listing mismatched tensors."""
    from tasks.common.checkpoint import TASK_KEY, check_checkpoint_matches

    saved = {TASK_KEY: {"task": "timeseries", "model": TimeSeriesTask(horizon=96).model_cfg}}
    with pytest.raises(ValueError, match=r"task.model.horizon=96 \(this run: 192\)"):
        check_checkpoint_matches(saved, "timeseries", TimeSeriesTask(horizon=192).model_cfg, "last.ckpt")


def test_train_py_bad_csv_is_one_line_and_exit_2(tmp_path: Path, series_csv: Path):
    """Through train.py: a text cell stops the run before training, one line naming file, line, column."""
    frame = pd.read_csv(series_csv, dtype=str)
    frame.loc[7, "c1"] = "n/a?"
    frame.to_csv(series_csv, index=False)
    before = series_csv.read_bytes()
    proc = run_train(["task=timeseries", f"task.data.root={series_csv}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {series_csv} line 9: column 'c1' holds 'n/a?', not a number; fix the file or leave the "
        "column out of task.data.channels"
    )
    assert series_csv.read_bytes() == before and not (tmp_path / "run" / "checkpoints").exists()
