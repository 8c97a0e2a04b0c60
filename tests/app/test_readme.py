"""README.md's and the task READMEs' ``train.py`` commands: every one composes as written (known tasks,
recipes and keys), the recipes that read ``paths.data_dir`` find their files in the team's copy of the
benchmarks, and each runs in some test at tiny size (``test_every_readme_command_is_run_by_a_test`` names
where; the GPU lines are marked ``gpu`` and run only where there are GPUs)."""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.conftest import REPO, TINY_TRANSLATION, run_train
from tests.recommendation.conftest import TINY_RECOMMENDATION
from tests.timeseries.conftest import TINY_TIMESERIES

SHARED_DATA = REPO.parent / "shared" / "data"


def readme_commands() -> list[list[str]]:
    """The overrides of each ``.venv/bin/python train.py ...`` line in README.md's bash blocks (with its
    ``\\`` continuations; comments dropped)."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith(".venv/bin/python train.py"):
                commands.append(shlex.split(cmd)[2:])
    return commands


COMMANDS = readme_commands()


def _compose(args: list[str]):
    """Compose ``args`` (a ``-m`` sweep: each swept key at its first value; ``<placeholders>`` left out)."""
    sweep = "-m" in args
    overrides = [a.split(",")[0] if sweep and "[" not in a else a for a in args if a != "-m" and "<" not in a]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, "paths.output_dir=composed-only"])


def test_readme_has_the_commands():
    assert len(COMMANDS) >= 15 and ["task=audio"] in COMMANDS and ["task=recommendation"] in COMMANDS


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_readme_command_composes(args: list[str]):
    if args == ["task=nope"]:  # the documented failure
        with pytest.raises(ConfigCompositionException, match="task/nope"):
            _compose(args)
        return
    cfg = _compose(args)
    OmegaConf.to_container(cfg.task, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("args", [c for c in COMMANDS if any("paths.data_dir=/path/to/data" in a for a in c)])
def test_readme_recipes_find_the_benchmark_files(args: list[str]):
    """With the team's copies as ``paths.data_dir``, a recipe's data path exists (the data we lack, ML-1M
    and Speech Commands, is skipped)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("no ../shared/data beside the repository")
    args = [f"paths.data_dir={SHARED_DATA}" if a.startswith("paths.data_dir=") else a for a in args]
    cfg = _compose(args)
    root = Path(OmegaConf.select(cfg, "task.data.root", default=None) or "")
    if any(name in str(root) for name in ("ml-1m", "speech_commands")):
        pytest.skip(f"{root.name} is not among the team's copies")
    assert root.exists(), f"{' '.join(args)} reads {root}, which does not exist"


RUN_HERE = [
    ["task=vision"],
    ["task=translation"],
    ["trainer.max_epochs=5", "optim.lr=1e-3", "task.data.batch_size=256"],
]


@pytest.mark.parametrize("args", RUN_HERE, ids=" ".join)
def test_readme_task_commands_train(tmp_path: Path, args: list[str]):
    """``train.py task=<name>`` and the override example as in README, cut to two steps (the other tasks'
    own tests run theirs)."""
    assert args in COMMANDS, "README no longer has this command"
    task = next((a.split("=")[1] for a in args if a.startswith("task=")), "vision")
    tiny = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    proc = run_train([*args, *tiny, f"hydra.run.dir={tmp_path}", "trainer.enable_progress_bar=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{task} (ours)" in proc.stdout


def test_readme_linear_patch_example_builds_the_model():
    """``task.model.stem_channels=[]`` needs a patch that divides the 28-px digits (README says 7)."""
    from hydra.utils import instantiate

    from tasks.vision.data import VisionDataModule

    (args,) = [c for c in COMMANDS if "task.model.stem_channels=[]" in c]
    cfg = _compose(args)
    task = instantiate(cfg.task, _convert_="all")
    dm = VisionDataModule(**{**task.data_cfg, "train_limit": 64})
    dm.setup()
    model = task.build_model(dm)
    images, labels = next(iter(dm.train_dataloader()))
    x, _ = task.on_device_batch((images, labels), training=False)
    assert model(x).shape == (len(labels), 10)


# -- the task READMEs' train.py commands and the options README.md names --------------------------------
def task_readme_commands(task: str) -> list[list[str]]:
    """The overrides of each ``python train.py ...`` line in ``tasks/<task>/README.md``'s code blocks."""
    text = (REPO / "tasks" / task / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S) + re.findall(
        r"\n\n((?:    python .*\n)+)", text
    ):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = cmd.split("  #")[0].strip()
            if cmd.startswith("python train.py"):
                commands.append(shlex.split(cmd)[2:])
    return commands


#: cut to two training steps and one validation / test batch, with models of seconds on one CPU thread
TINY_TASK = {
    "translation": [a for a in TINY_TRANSLATION if not a.startswith(("task=", "task.data.numbers."))]
    + ["task.data.eval_batch_size=8", "task.num_samples=4"],
    "timeseries": [a for a in TINY_TIMESERIES if a != "task=timeseries"],
    "recommendation": [*TINY_RECOMMENDATION],
}
NUMBERS_CUT = [
    "task.data.numbers.max_digits=3",
    "task.data.numbers.train_size=256",
    "task.data.numbers.val_size=8",
    "task.data.numbers.test_size=8",
]
STEPS_CUT = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]


def _write_corpus(folder: Path, names: dict[str, range]) -> None:
    """Aligned English / German number phrases, one a line: ``<name>.en`` and ``<name>.de`` per split."""
    from num2words import num2words

    folder.mkdir(parents=True, exist_ok=True)
    for name, values in names.items():
        for lang in ("en", "de"):
            lines = [num2words(v, lang=lang) for v in values]
            (folder / f"{name}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _merged(*overrides: list[str]) -> list[str]:
    """The overrides of all lists, a key set twice keeping its last value (Hydra refuses a key twice)."""
    out: dict[str, str] = {}
    for arg in (a for group in overrides for a in group):
        out[arg.split("=", 1)[0]] = arg
    return list(out.values())


def _task_readme_runs() -> list[tuple[str, list[str]]]:
    """Task-README commands that no other test runs: not the recipes (``tests/app/test_recipes.py``), not
    the bare defaults (above, and each task's own tests); audio has none left."""
    runs = []
    for task in ("translation", "timeseries", "recommendation"):
        for args in task_readme_commands(task):
            if any(a.startswith("experiment=") for a in args) or args == [f"task={task}"]:
                continue
            if "task.data.name=files" in args:  # README.md's copy: test_readme_files_command_trains
                continue
            runs.append((task, args))
    return runs


@pytest.mark.parametrize(
    "task,args", _task_readme_runs(), ids=[" ".join(a)[:70] for _, a in _task_readme_runs()]
)
def test_task_readme_commands_train(tmp_path: Path, task: str, args: list[str]):
    """Each such command as written, its paths pointing at tiny files of the named format, steps cut."""
    from tests.recommendation.conftest import write_movielens
    from tests.timeseries.conftest import write_series

    args = [a.replace("/path/to/", f"{tmp_path}/") for a in args]
    extra = [*TINY_TASK[task], *STEPS_CUT, f"hydra.run.dir={tmp_path / 'run'}"]
    if task == "recommendation":  # 40 users: 2 batches, one epoch, then a validation
        extra = _merged(extra, ["trainer.val_check_interval=null"])
    if task == "translation" and "task.data.name=files" in args:
        _write_corpus(
            tmp_path / "corpus", {"train": range(20, 276), "dev": range(300, 308), "test": range(400, 408)}
        )
    elif task == "translation":
        extra += NUMBERS_CUT
    if any("series.csv" in a for a in args):
        write_series(tmp_path / "series.csv", 600)
    if any("u.data" in a for a in args):
        write_movielens(tmp_path / "data" / "ml-100k" / "u.data", 40, "\t")
    proc = run_train(_merged(extra, args), cwd=tmp_path)  # the command's own values win
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-3000:]}"
    assert f"{task} (ours)" in (tmp_path / "run" / "results.csv").read_text()


def test_readme_files_command_trains(tmp_path: Path):
    """README's aligned-files command as written (``task.data.root=corpus/`` relative to the working folder),
    on a tiny corpus of number phrases, steps cut: the model is trained and tested on those files."""
    (args,) = [c for c in COMMANDS if "task.data.name=files" in c]
    _write_corpus(
        tmp_path / "corpus", {"train": range(20, 276), "dev": range(300, 308), "test": range(400, 408)}
    )
    proc = run_train(_merged(TINY_TASK["translation"], STEPS_CUT, args, ["hydra.run.dir=run"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "samples.tsv", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    assert [r[0] for r in rows] == (tmp_path / "corpus" / "test.en").read_text().splitlines()[: len(rows)]
    assert len(rows) == 8


@pytest.mark.slow
def test_compile_true_trains(tmp_path: Path):
    """``compile=true`` (README: ``trainer=gpu compile=true``) on the CPU: inductor compiles the model, and
    the run's test loss is the eager run's (2 steps: fused kernels round differently, and AdamW's first steps
    move each weight by about lr * sign(grad), so a gradient near zero that rounds to the other sign moves its
    weight 2 * lr the other way: 1.3e-4 relative was measured, 5e-4 is allowed). 40-60 s on 2 CPU cores,
    most of it compiling."""
    from tests.conftest import TINY_VISION, train_command

    results = {}
    for compiled in (False, True):
        run_dir = tmp_path / f"compile_{compiled}"
        cmd, env = train_command([*TINY_VISION, "trainer.max_steps=2", f"compile={str(compiled).lower()}"])
        env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / f"inductor_{compiled}")
        proc = subprocess.run(
            [*cmd, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(run_dir / "results.csv") as f:
            results[compiled] = {r["model"]: r for r in csv.DictReader(f)}["vision (ours)"]
    assert not any((tmp_path / "inductor_False").rglob("*.py")), "the eager run compiled"
    assert any((tmp_path / "inductor_True").rglob("*.py")), "inductor generated no code"
    assert float(results[True]["loss"]) == pytest.approx(float(results[False]["loss"]), rel=5e-4)


#: README's GPU lines that need nothing but GPUs (the hub one needs the network too)
GPU_COMMANDS = [
    c
    for c in COMMANDS
    if any(a in ("trainer=gpu", "trainer=ddp") for a in c)
    and all(a.startswith(("trainer", "compile")) for a in c)
]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("args", GPU_COMMANDS, ids=" ".join)
def test_readme_gpu_commands_run(tmp_path: Path, args: list[str]):
    """README's one-GPU, compile and DDP commands on the vision default, cut to a few steps (DDP on every
    visible GPU: at least two)."""
    import torch

    needed = 2 if "trainer=ddp" in args else 1
    if torch.cuda.device_count() < needed:
        pytest.skip(f"needs {needed} CUDA device(s)")
    tiny = ["trainer.max_steps=4", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    proc = run_train(
        [*args, *tiny, f"hydra.run.dir={tmp_path}", "trainer.enable_progress_bar=false"], timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vision (ours)" in proc.stdout


#: where each README.md train.py command runs (first matching rule): a test of this file or another's
RUN_BY = [
    (["task=nope"], "tests/app/test_readme.py::test_every_readme_command_composes"),  # fails at once
    (["task=audio"], "tests/audio/test_audio_train.py::trained_run"),
    (["task=timeseries"], "tests/timeseries/test_task.py::trained_run"),
    (["task=recommendation"], "tests/recommendation/conftest.py::trained_run"),
    (
        ["task.model.stem_channels=[]"],
        "tests/app/test_readme.py::test_readme_linear_patch_example_builds_the_model",
    ),
    (["ckpt_path="], "tests/app/test_train.py::test_train_few_steps_then_resume"),
    (["-m"], "tests/app/test_sweeps.py::test_readme_sweep_commands_run"),
    (["task.data.hub="], "tests/vision/test_data.py::test_hub_offline_is_a_clear_error"),  # needs the network
    (["trainer=gpu"], "tests/app/test_readme.py::test_readme_gpu_commands_run"),
    (["trainer=ddp"], "tests/app/test_readme.py::test_readme_gpu_commands_run"),
    (["experiment="], "tests/app/test_recipes.py::test_recipe_runs_on_a_tiny_stand_in"),
    (["task.data.name=files"], "tests/app/test_readme.py::test_readme_files_command_trains"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_every_readme_command_is_run_by_a_test(args: list[str]):
    """A new README command needs a test that runs it (or a rule here naming the test that does)."""
    if args in RUN_HERE:
        return
    for needles, test in RUN_BY:
        if any(
            a == n or (n.endswith(("=", "=[]")) and a.startswith(n.rstrip("[]")))
            for n in needles
            for a in args
        ):
            path, name = test.split("::")
            assert re.search(rf"def {re.escape(name)}\(", (REPO / path).read_text()), f"{test} is gone"
            return
    pytest.fail(f"no test runs README's `train.py {' '.join(args)}`: add one (or a RUN_BY rule)")
