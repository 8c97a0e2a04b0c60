"""Every benchmark recipe (``conf/experiment/*.yaml``) runs through ``train.py`` with its steps cut, on the
CPU: on a tiny stand-in written in the recipe's own data format (every run, CI included; the recipe's own
model and settings, a few batches), and on the team's copy of the benchmark in ``../shared/data`` beside
the repository when it is there (the real files through the recipe's loader; smaller models where the
recipe's would take minutes on a CPU)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import REPO, run_train

RECIPES = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
#: the team's copies of the benchmarks (README: ``paths.data_dir=../shared/data``)
SHARED_DATA = REPO.parent / "shared" / "data"

#: recipes whose stand-in run lives in the task's own tests (the file that runs it)
RUN_ELSEWHERE = {"timeseries_etth1": "tests/timeseries/test_task.py"}

#: a recipe cut to a few batches on the CPU: one epoch of two training batches, one validation batch (the
#: best checkpoint), one test batch; fp32 and no torch.compile (``test_compile_true_trains`` covers it)
CUT = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32-true",
    "compile=false",
    "compile_mode=null",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.check_val_every_n_epoch=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]

#: per task: smaller batches (and fewer decoded sentences / plotted items) than the recipe's GPU values
TASK_CUT = {
    "vision": ["task.data.batch_size=16", "task.data.eval_batch_size=32", "task.num_attention_images=2"],
    "translation": [
        "task.data.max_tokens=512",
        "task.data.eval_batch_size=4",
        "task.data.num_workers=0",
        "task.decode.val_sentences=4",
        "task.num_samples=4",
        "task.num_attention_plots=1",
    ],
    "audio": ["task.data.batch_size=8", "task.data.eval_batch_size=16", "task.num_plot_clips=2"],
    "recommendation": [
        "task.data.batch_size=16",
        "task.data.eval_batch_size=64",
        "task.data.num_workers=0",
        "task.num_attention_plots=2",
    ],
    "timeseries": [
        "task.data.batch_size=16",
        "task.data.eval_batch_size=64",
        "task.dlinear.epochs=1",
        "task.dlinear.batch_size=1024",
    ],
}

#: on the team's full data: models small enough for seconds per step on one CPU thread (the stand-in
#: runs train the recipe's own model)
TINY_MODEL = {
    "translation": [
        "task.model.embed_dim=64",
        "task.model.num_heads=2",
        "task.model.encoder_layers=1",
        "task.model.decoder_layers=1",
        "task.model.ffn_dim=128",
    ],
}


def _task_of(recipe: str) -> str:
    return recipe.split("_")[0]


def _run(recipe: str, data_dir: Path, run_dir: Path, cache_dir: Path, extra: list[str] = ()) -> Path:
    """``train.py experiment=<recipe> paths.data_dir=<data_dir>`` cut to a few batches; its results."""
    args = [
        f"experiment={recipe}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        *CUT,
        *TASK_CUT[_task_of(recipe)],
        *extra,
    ]
    proc = run_train(args, timeout=420)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stderr[-3000:]}"
    with open(run_dir / "results.csv") as f:
        rows = {row["model"]: row for row in csv.DictReader(f)}
    assert f"{_task_of(recipe)} (ours)" in rows, rows
    assert (run_dir / "checkpoints" / "best.ckpt").is_file(), "the validation picked no best checkpoint"
    return run_dir


# -- tiny stand-ins in each benchmark's format --------------------------------------------------------------
def _numbers(lang: str, values: range) -> list[str]:
    from num2words import num2words

    return [num2words(v, lang=lang) for v in values]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_cifar10(data: Path) -> list[str]:
    """``cifar10-jpg.tar.gz``: 10 classes of random 32x32 JPEGs, 50 training and 5 test images each (the
    recipe holds out 2% of the training images per class for validation: one)."""
    from torchvision.io import encode_jpeg

    gen = torch.Generator().manual_seed(0)
    data.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data / "cifar10-jpg.tar.gz", "w:gz") as tar:
        for c in range(10):
            for split, count in (("train", 50), ("test", 5)):
                for i in range(count):
                    image = torch.randint(0, 256, (3, 32, 32), generator=gen, dtype=torch.uint8)
                    payload = encode_jpeg(image).numpy().tobytes()
                    info = tarfile.TarInfo(f"cifar10/{split}/class{c}/{i}.jpg")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return []


def write_multi30k(data: Path) -> list[str]:
    """``multi30k/{train,val,test_2016_flickr}.{en,de}.gz`` of number phrases (300 / 12 / 12 pairs)."""
    for stem, values in (
        ("train", range(20, 320)),
        ("val", range(400, 412)),
        ("test_2016_flickr", range(500, 512)),
    ):
        for lang in ("en", "de"):
            _write_lines(data / "multi30k" / f"{stem}.{lang}.gz", _numbers(lang, values))
    return []


def write_bible(data: Path) -> list[str]:
    """``bible-en-es/web_rv1909_en_es.jsonl``: number phrases as verses of the recipe's held-out books
    (Judges, Mark, Ephesians for validation; Ezra, Daniel, John, Romans for test) and of Genesis."""
    books = {"Genesis": range(20, 320)}
    for n, book in enumerate(("Judges", "Mark", "Ephesians", "Ezra", "Daniel", "John", "Romans")):
        books[book] = range(400 + 10 * n, 404 + 10 * n)
    path = data / "bible-en-es" / "web_rv1909_en_es.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "w", encoding="utf-8") as f:
        for book, values in books.items():
            for verse, (en, es) in enumerate(
                zip(_numbers("en", values), _numbers("es", values), strict=True)
            ):
                f.write(json.dumps({"ref": f"{book} 1:{verse + 1}", "en": en, "es": es}) + "\n")
    return []


def write_fsdd(data: Path) -> list[str]:
    from tests.audio.conftest import write_fsdd as write

    write(data / "fsdd" / "recordings")
    return []


def write_speech_commands(data: Path) -> list[str]:
    from tests.audio.conftest import write_speech_commands as write

    write(data / "speech_commands")
    return ['task.data.speech_commands.words=["yes","no"]']  # the stand-in's two keywords


def write_ml1m(data: Path) -> list[str]:
    """``ml-1m/ratings.dat`` (``user::item::rating::time``, 40 users of MovieLens-100k) and ``movies.dat``."""
    from tests.recommendation.conftest import write_movielens

    ratings = write_movielens(data / "ml-1m" / "ratings.dat", 40, "::")
    items = sorted({int(line.split("::")[1]) for line in ratings.read_text().splitlines()})
    (data / "ml-1m" / "movies.dat").write_text(
        "".join(f"{i}::Movie {i} (1995)::Drama\n" for i in items), encoding="latin-1"
    )
    return []


STAND_INS: dict[str, Callable[[Path], list[str]]] = {
    "vision_cifar10": write_cifar10,
    "vision_cifar10_linear": write_cifar10,
    "translation_multi30k": write_multi30k,
    "translation_bible": write_bible,
    "audio_fsdd": write_fsdd,
    "audio_speech_commands": write_speech_commands,
    "recommendation_ml1m": write_ml1m,
}


def test_every_recipe_has_a_run():
    """A new recipe needs a stand-in here (or a run in its task's tests), so that it is run at all."""
    assert sorted([*STAND_INS, *RUN_ELSEWHERE]) == RECIPES
    for recipe, test_file in RUN_ELSEWHERE.items():
        assert f"experiment={recipe}" in (REPO / test_file).read_text(), (
            f"{test_file} no longer runs {recipe}"
        )


@pytest.mark.parametrize("recipe", sorted(STAND_INS))
def test_recipe_runs_on_a_tiny_stand_in(recipe: str, tmp_path: Path):
    extra = STAND_INS[recipe](tmp_path / "data")
    _run(recipe, tmp_path / "data", tmp_path / "run", tmp_path / "cache", extra)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset cache for the whole test run: CIFAR-10 is decoded once for both vision recipes."""
    return tmp_path_factory.mktemp("recipe_cache")


def _recipe_data(recipe: str, data_dir: Path) -> Path:
    """The file or folder ``recipe`` reads under ``paths.data_dir=<data_dir>``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"experiment={recipe}",
                f"paths.data_dir={data_dir}",
                "paths.output_dir=composed-only",
            ],
        )
    data = OmegaConf.to_container(cfg.task.data, resolve=True)
    return Path(data.get("root") or data["path"])


@pytest.mark.slow  # ~15 s each, 1.5 min in all: the stand-ins above run the same code in CI
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_on_the_team_data(recipe: str, tmp_path: Path, shared_cache: Path):
    if not SHARED_DATA.is_dir():
        pytest.skip("no ../shared/data beside the repository (the team's copies of the benchmarks)")
    source = _recipe_data(recipe, SHARED_DATA)
    if not source.exists():
        pytest.skip(f"{source.relative_to(SHARED_DATA)} is not among the team's copies in ../shared/data")
    _run(recipe, SHARED_DATA, tmp_path / "run", shared_cache, TINY_MODEL.get(_task_of(recipe), []))
