"""The catalogue of bad inputs to the application: config values of the root and of every task (checked
in-process by ``train.check_config``, the pre-check that runs before torch is imported), checkpoints and the
inference commands' options. Each case asserts the error type, that its one-line message names the key or
file (and the value), and that nothing already on disk changed. A few cases run ``train.py`` end to end.

The data files of each task (archives, text, CSV, WAV, interaction logs) have their catalogue beside the
task's tests (``tests/<task>/test_bad_inputs_<task>.py``); the attention core's is
``tests/mha/test_bad_inputs_mha.py``. They share ``expect_error`` from here.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from tasks.common.schema import ConfigError
from tests.conftest import REPO, run_train
from train import check_config


# -- shared helpers -----------------------------------------------------------------------------------
def snapshot(*roots: Path) -> dict[str, Any]:
    """Every path under ``roots`` with (size, modification time, SHA-1) for files: equal snapshots before
    and after a call prove that it created, changed and deleted nothing there."""
    out: dict[str, Any] = {}
    for root in roots:
        paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root] if root.exists() else []
        for path in paths:
            if path.is_file():
                stat = path.stat()
                out[str(path)] = (stat.st_size, stat.st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
            else:
                out[str(path)] = "folder"
    return out


def expect_error(
    call: Callable[[], Any], error: type[BaseException], *fragments: str, watch: Iterable[Path] = ()
) -> str:
    """``call()`` raises ``error`` (exactly that type or a subclass) with a one-line message that holds
    every fragment, and nothing under ``watch`` changed. Returns the message."""
    watch = list(watch)
    before = snapshot(*watch)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert snapshot(*watch) == before, f"files under {[str(w) for w in watch]} changed"
    return message


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A folder holding what a run may touch (an older run folder, a dataset cache), each with a file."""
    for sub in ("outputs/old/checkpoints", "cache"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "outputs/old/checkpoints/last.ckpt").write_bytes(b"weights")
    (tmp_path / "outputs/old/train.log").write_text("an earlier run\n")
    (tmp_path / "cache/vision-0123.pt").write_bytes(b"decoded")
    return tmp_path


@functools.lru_cache(maxsize=32)
def _composed(groups: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*groups, "paths.output_dir=composed-only"])


def _compose(overrides: list[str], disk: Path) -> DictConfig:
    """The run config of ``overrides``: Hydra composes each choice of task / recipe once; the values are
    parsed by Hydra's override parser and applied as Hydra applies them (``OmegaConf.update``)."""
    groups = tuple(o for o in overrides if o.split("=")[0] in ("task", "experiment"))
    values = [o for o in overrides if o not in groups]
    values += [f"paths.output_dir={disk / 'outputs/new'}", f"paths.cache_dir={disk / 'cache'}"]
    cfg = copy.deepcopy(_composed(groups))
    for override in OverridesParser.create().parse_overrides(values):
        add = override.is_add() or override.is_force_add()
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True, force_add=add)
    return cfg


# -- config values: (id, overrides, fragments of the one-line message) ---------------------------------
ROOT_CASES = [
    ("lr-text", ["optim.lr=abc"], ["optim.lr='abc' is not a number"]),
    ("lr-quoted-number", ["optim.lr='1e-3'"], ["optim.lr='1e-3' is not a number"]),
    ("lr-negative", ["optim.lr=-1"], ["optim.lr=-1 is out of range: it must be > 0"]),
    ("lr-zero", ["optim.lr=0"], ["optim.lr=0 is out of range: it must be > 0"]),
    ("weight-decay-negative", ["optim.weight_decay=-0.1"], ["optim.weight_decay=-0.1 is out of range"]),
    (
        "min-lr-ratio",
        ["optim.min_lr_ratio=2"],
        ["optim.min_lr_ratio=2 is out of range: it must be in [0, 1]"],
    ),
    (
        "beta-above-one",
        ["optim.betas=[0.9,1.5]"],
        ["optim.betas[1]=1.5 is out of range: it must be in [0, 1)"],
    ),
    ("betas-length", ["optim.betas=[0.9]"], ["optim.betas=[0.9] has 1 entry: it must have 2"]),
    ("grad-clip-zero", ["optim.grad_clip=0"], ["optim.grad_clip=0 is out of range: it must be > 0"]),
    (
        "warmup-negative",
        ["optim.warmup=-5"],
        ["optim.warmup=-5 is out of range", "a fraction (< 1) of all steps"],
    ),
    (
        "max-epochs-forever",
        ["trainer.max_epochs=-1"],
        ["trainer.max_epochs=-1 trains forever", "trainer.max_steps"],
    ),
    ("max-epochs-float", ["trainer.max_epochs=2.5"], ["trainer.max_epochs=2.5 is not an integer"]),
    ("max-steps-text", ["trainer.max_steps=many"], ["trainer.max_steps='many' is not an integer"]),
    ("precision", ["trainer.precision=bf17"], ["trainer.precision='bf17' is not one of", "bf16-mixed"]),
    ("devices-zero", ["trainer.devices=0"], ["trainer.devices=0 is not", "auto"]),
    (
        "accelerator",
        ["trainer.accelerator=gpus"],
        ["trainer.accelerator='gpus' is not one of auto, cpu, gpu"],
    ),
    ("max-time", ["+trainer.max_time=5min"], ["trainer.max_time='5min' is not a duration DD:HH:MM:SS"]),
    ("limit-fraction", ["trainer.limit_val_batches=1.5"], ["trainer.limit_val_batches=1.5 is not"]),
    (
        "log-every-zero",
        ["trainer.log_every_n_steps=0"],
        ["trainer.log_every_n_steps=0 is out of range: it must be >= 1"],
    ),
    (
        "progress-bar-text",
        ["trainer.enable_progress_bar=maybe"],
        ["trainer.enable_progress_bar='maybe' is not true or false"],
    ),
    (
        "distributed-sampler",
        ["trainer.use_distributed_sampler=true"],
        ["trainer.use_distributed_sampler=true", "shard their own"],
    ),
    ("trainer-logger", ["+trainer.logger=false"], ["trainer.logger is set by train.py", "metrics.csv"]),
    (
        "trainer-clip",
        ["+trainer.gradient_clip_val=1.0"],
        ["trainer.gradient_clip_val is set by train.py", "optim.grad_clip"],
    ),
    ("seed-text", ["seed=x"], ["seed='x' is not an integer"]),
    ("seed-negative", ["seed=-1"], ["seed=-1 is out of range"]),
    ("cpu-threads-zero", ["cpu_threads=0"], ["cpu_threads=0 is out of range: it must be >= 1"]),
    ("compile-flag", ["compile=yes please"], ["compile='yes please' is not true or false"]),
    (
        "compile-mode-unread",
        ["compile_mode=reduce-overhead"],
        ["compile_mode='reduce-overhead' is not used with compile=false", "compile is true"],
    ),
    (
        "compile-mode-unknown",
        ["compile=true", "compile_mode=fast"],
        ["compile_mode='fast' is not one of", "reduce-overhead"],
    ),
    (
        "matmul-precision",
        ["matmul_precision=low"],
        ["matmul_precision='low' is not one of highest, high, medium"],
    ),
    ("sweep-jobs", ["sweep.jobs=0"], ["sweep.jobs=0 is out of range: it must be >= 1"]),
    ("unknown-root-key", ["+lr=0.1"], ["lr is not a setting of train.py", "conf/config.yaml"]),
    (
        "unknown-optim-key",
        ["+optim.betas2=[0.9,0.99]"],
        ["optim.betas2 is not a setting of train.py", "did you mean optim.betas?"],
    ),
    ("group-given-a-value", ["task.data=5"], ["task.data is a group of settings, not a value"]),
]

VISION_CASES = [
    (
        "heads-divide-width",
        ["task.model.num_heads=3"],
        ["task.model.num_heads=3 does not divide task.model.embed_dim=64", "[1, 2, 4, 8, 16, 32, 64]"],
    ),
    (
        "patch-vs-stem",
        ["task.model.patch_size=12"],
        ["task.model.patch_size=12 is not divisible by the conv stem's downsampling 8"],
    ),
    (
        "patch-divides-image",
        ["task.model.stem_channels=[]", "task.model.patch_size=5"],
        ["task.model.patch_size=5 does not divide the embedded 28 px digits", "[1, 2, 4, 7, 14, 28]"],
    ),
    (
        "patch-divides-image-size",
        [
            "task.data.root=/path/to/data",
            "task.data.image_size=30",
            "task.model.stem_channels=[]",
            "task.model.patch_size=4",
        ],
        ["task.model.patch_size=4 does not divide task.data.image_size=30"],
    ),
    (
        "image-size-unread",
        ["task.data.image_size=32"],
        [
            "task.data.image_size=32 is not used with task.data.root=null, task.data.hub=null",
            "task.data.root is set or task.data.hub is set",
        ],
    ),
    ("channels-unread", ["task.data.channels=3"], ["task.data.channels=3 is not used"]),
    (
        "test-fraction-unread",
        ["task.data.root=/path/to/data", "task.data.test_fraction=0.2"],
        [
            "task.data.test_fraction=0.2 is not used with task.data.root='/path/to/data'",
            "task.data.root is null and task.data.hub is null",
        ],
    ),
    (
        "val-fraction-range",
        ["task.data.val_fraction=1.5"],
        ["task.data.val_fraction=1.5 is out of range: it must be in (0, 1)"],
    ),
    (
        "fractions-sum",
        ["task.data.val_fraction=0.5", "task.data.test_fraction=0.5"],
        ["task.data.val_fraction=0.5 + task.data.test_fraction=0.5 = 1 leaves no training data"],
    ),
    (
        "batch-size-zero",
        ["task.data.batch_size=0"],
        ["task.data.batch_size=0 is out of range: it must be >= 1"],
    ),
    ("batch-size-text", ["task.data.batch_size=abc"], ["task.data.batch_size='abc' is not an integer"]),
    (
        "channels-two",
        ["task.data.root=/path/to/data", "task.data.channels=2"],
        ["task.data.channels=2 is not one of 1, 3 (or null)"],
    ),
    (
        "root-and-hub",
        ["task.data.root=/path/to/data", "task.data.hub=uoft-cs/cifar10"],
        ["task.data.root='/path/to/data' and task.data.hub='uoft-cs/cifar10' are both set"],
    ),
    ("pool", ["task.model.pool=cls"], ["task.model.pool='cls' is not one of token, avg"]),
    (
        "dropout-one",
        ["task.model.dropout=1.0"],
        ["task.model.dropout=1.0 is out of range: it must be in [0, 1)"],
    ),
    (
        "crop",
        ["task.augment.crop=bogus"],
        ["task.augment.crop='bogus' is not one of resized, translate, none"],
    ),
    (
        "scale-order",
        ["task.augment.crop=resized", "task.augment.scale=[0.9,0.3]"],
        ["task.augment.scale=[0.9, 0.3] is not a range [low, high]"],
    ),
    (
        "scale-unread",
        ["task.augment.scale=[0.5,1.0]"],
        [
            "task.augment.scale=[0.5, 1.0] is not used with task.augment.crop='translate'",
            "task.augment.crop is resized",
        ],
    ),
    (
        "magnitude-unread",
        ["task.augment.magnitude=2"],
        ["task.augment.magnitude=2 is not used with task.augment.trivial_augment=false"],
    ),
    (
        "mix-prob-unread",
        ["task.augment.mix_prob=0.5"],
        [
            "task.augment.mix_prob=0.5 is not used",
            "task.augment.mixup_alpha > 0 or task.augment.cutmix_alpha > 0",
        ],
    ),
    (
        "mixup-negative",
        ["task.augment.mixup_alpha=-0.2"],
        ["task.augment.mixup_alpha=-0.2 is out of range: it must be >= 0"],
    ),
    (
        "typo-suggested",
        ["+task.model.detph=3"],
        ["task.model.detph is not a setting of task=vision", "did you mean task.model.depth?"],
    ),
]

TRANSLATION_CASES = [
    (
        "corpus",
        ["task.data.name=wmt"],
        ["task.data.name='wmt' is not one of numbers, multi30k, files, bible"],
    ),
    (
        "root-unread",
        ["task.data.root=/path/to/data"],
        [
            "task.data.root='/path/to/data' is not used with task.data.name='numbers'",
            "task.data.name is multi30k or files or bible",
        ],
    ),
    (
        "files-missing",
        ["task.data.name=files"],
        ["task.data.name=files needs task.data.files.train_src=<path>"],
    ),
    (
        "files-unread",
        ["task.data.files.train_src=train.en"],
        ["task.data.files.train_src='train.en' is not used with task.data.name='numbers'"],
    ),
    ("bible-without-root", ["task.data.name=bible"], ["task.data.name=bible needs task.data.root="]),
    (
        "numbers-unread",
        ["task.data.name=bible", "task.data.root=/path/to/bible.jsonl", "task.data.numbers.max_digits=3"],
        ["task.data.numbers.max_digits=3 is not used with task.data.name='bible'"],
    ),
    (
        "hub-name-unread",
        ["task.data.name=multi30k", "task.data.root=/path/to/data", "task.data.multi30k.hub_name=x/y"],
        ["task.data.multi30k.hub_name='x/y' is not used", "task.data.root is null"],
    ),
    (
        "same-languages",
        ["task.data.tgt_lang=en"],
        ["task.data.src_lang and task.data.tgt_lang are both 'en'"],
    ),
    (
        "vocab-small",
        ["task.data.vocab_size=100"],
        ["task.data.vocab_size=100 is out of range: it must be >= 300", "256 bytes"],
    ),
    (
        "max-tokens-below-max-len",
        ["task.data.max_tokens=10"],
        ["task.data.max_tokens=10 is below task.data.max_len=64"],
    ),
    (
        "batch-size-unread",
        ["task.data.max_tokens=4096", "task.data.batch_size=64"],
        ["task.data.batch_size=64 is not used with task.data.max_tokens=4096"],
    ),
    (
        "max-digits",
        ["task.data.numbers.max_digits=12"],
        ["task.data.numbers.max_digits=12 is out of range: it must be in [1, 9]"],
    ),
    (
        "date-fraction",
        ["task.data.numbers.date_fraction=1.2"],
        ["task.data.numbers.date_fraction=1.2 is out of range: it must be in [0, 1]"],
    ),
    (
        "no-decoded-validation",
        ["task.decode.val_sentences=0"],
        ["task.monitor=exact_match needs decoded validation sentences but task.decode.val_sentences=0"],
    ),
    (
        "learned-positions-short",
        ["task.model.positional=learned", "task.model.max_positions=32"],
        ["task.model.max_positions=32 is below task.data.max_len=64"],
    ),
    (
        "max-positions-unread",
        ["task.model.max_positions=256"],
        ["task.model.max_positions=256 is not used with task.model.positional='sinusoidal'"],
    ),
    ("lp-style", ["task.decode.lp_style=wu"], ["task.decode.lp_style='wu' is not one of gnmt, length, none"]),
    ("beam-zero", ["task.decode.beam_size=0"], ["task.decode.beam_size=0 is out of range: it must be >= 1"]),
    ("monitor", ["task.monitor=ter"], ["task.monitor='ter' is not one of bleu, chrf, exact_match, loss"]),
    (
        "heads",
        ["task.model.num_heads=5"],
        ["task.model.num_heads=5 does not divide task.model.embed_dim=128"],
    ),
]

AUDIO_CASES = [
    (
        "source",
        ["task.data.source=librispeech"],
        ["task.data.source='librispeech' is not one of espeak, fsdd, speech_commands"],
    ),
    (
        "root-unread",
        ["task.data.root=/path/to/data"],
        ["task.data.root='/path/to/data' is not used with task.data.source='espeak'"],
    ),
    (
        "fsdd-unread",
        ["task.data.fsdd.protocol=speaker"],
        ["task.data.fsdd.protocol='speaker' is not used with task.data.source='espeak'"],
    ),
    (
        "test-speakers-unread",
        ["task.data.source=fsdd", "task.data.root=/path/to/data", "task.data.fsdd.test_speakers=[jackson]"],
        ["task.data.fsdd.test_speakers=['jackson'] is not used", "task.data.fsdd.protocol is speaker"],
    ),
    (
        "espeak-unread",
        ["task.data.source=fsdd", "task.data.root=/path/to/data", "task.data.espeak.clips_per_variant=2"],
        ["task.data.espeak.clips_per_variant=2 is not used with task.data.source='fsdd'"],
    ),
    (
        "one-word",
        ["task.data.espeak.words=[yes]"],
        ["task.data.espeak.words=['yes'] has 1 entry: it needs at least 2"],
    ),
    (
        "word-twice",
        ["task.data.espeak.words=[yes,no,yes]"],
        ["task.data.espeak.words=['yes', 'no', 'yes'] names 'yes' twice"],
    ),
    (
        "pitch-range",
        ["task.data.espeak.pitch=[15,120]"],
        ["task.data.espeak.pitch[1]=120 is out of range: it must be in [0, 100]"],
    ),
    (
        "sample-rate",
        ["task.data.sample_rate=500"],
        ["task.data.sample_rate=500 is out of range: it must be >= 1000"],
    ),
    (
        "patch-freq",
        ["task.model.patch_freq=7"],
        ["task.model.patch_freq=7 does not divide task.features.n_mels=40"],
    ),
    (
        "f-max-above-nyquist",
        ["task.features.f_max=6000"],
        ["task.features.f_max=6000 is above half the sample rate (4000 Hz"],
    ),
    (
        "hop-longer-than-window",
        ["task.features.hop_ms=40"],
        ["task.features.hop_ms=40 is longer than task.features.win_ms=25.0"],
    ),
    (
        "noise-prob",
        ["task.augment.noise_prob=1.5"],
        ["task.augment.noise_prob=1.5 is out of range: it must be in [0, 1]"],
    ),
    (
        "snr-order",
        ["task.augment.snr_db=[40,15]"],
        ["task.augment.snr_db=[40, 15] is not a range [low, high]"],
    ),
    ("heads", ["task.model.num_heads=3"], ["task.model.num_heads=3 does not divide task.model.embed_dim=64"]),
]

TIMESERIES_CASES = [
    (
        "lookback-zero",
        ["task=timeseries", "task.lookback=0"],
        ["task.lookback=0 is out of range: it must be >= 1"],
    ),
    (
        "horizon-negative",
        ["task=timeseries", "task.horizon=-24"],
        ["task.horizon=-24 is out of range: it must be >= 1"],
    ),
    (
        "period-longer",
        ["task=timeseries", "task.period=500"],
        ["task.period=500 is longer than task.lookback=336"],
    ),
    (
        "patch-longer",
        ["task=timeseries", "task.model.patch_len=400"],
        ["task.model.patch_len=400 is longer than task.lookback=336"],
    ),
    (
        "stride-longer",
        ["task=timeseries", "task.model.stride=32"],
        ["task.model.stride=32 is longer than task.model.patch_len=16"],
    ),
    (
        "heads",
        ["task=timeseries", "task.model.num_heads=5"],
        ["task.model.num_heads=5 does not divide task.model.d_model=32"],
    ),
    (
        "split-sum",
        ["task=timeseries", "task.data.split=[0.7,0.2,0.2]"],
        ["task.data.split=[0.7, 0.2, 0.2] sums to 1.1"],
    ),
    (
        "split-fraction",
        ["task=timeseries", "task.data.split=[0.7,0.3,0.0]"],
        ["task.data.split[2]=0.0 is out of range: it must be in (0, 1)"],
    ),
    (
        "borders-order",
        ["task=timeseries", "task.data.borders=[100,50,200]"],
        ["task.data.borders=[100, 50, 200] must be three increasing row counts"],
    ),
    (
        "split-unread",
        ["experiment=timeseries_etth1", "task.data.split=[0.6,0.2,0.2]"],
        ["task.data.split=[0.6, 0.2, 0.2] is not used with task.data.borders=[8640, 11520, 14400]"],
    ),
    (
        "date-column-unread",
        ["task=timeseries", "task.data.date_column=time"],
        ["task.data.date_column='time' is not used with task.data.root=null"],
    ),
    ("loss", ["task=timeseries", "task.loss=rmse"], ["task.loss='rmse' is not one of mse, mae, huber"]),
    (
        "dlinear-unread",
        ["task=timeseries", "task.dlinear.epochs=0", "task.dlinear.lr=0.01"],
        ["task.dlinear.lr=0.01 is not used with task.dlinear.epochs=0"],
    ),
    (
        "channels-empty",
        ["task=timeseries", "task.data.channels=[]"],
        ["task.data.channels=[] has 0 entries: it needs at least 1"],
    ),
    (
        "lookback-derived",
        ["task=timeseries", "+task.model.lookback=96"],
        ["task.model.lookback is not a setting of task=timeseries"],
    ),
]

RECOMMENDATION_CASES = [
    ("loss", ["task=recommendation", "task.loss=bpr"], ["task.loss='bpr' is not one of ce, bce"]),
    (
        "negatives-unread",
        ["task=recommendation", "task.num_train_negatives=5"],
        ["task.num_train_negatives=5 is not used with task.loss='ce'", "task.loss is bce"],
    ),
    (
        "ks-empty",
        ["task=recommendation", "task.ks=[]"],
        ["task.ks=[] has 0 entries: it needs at least 1"],
    ),
    ("ks-zero", ["task=recommendation", "task.ks=[0,10]"], ["task.ks[0]=0 is out of range: it must be >= 1"]),
    (
        "monitor",
        ["task=recommendation", "task.monitor=full/ndcg@50"],
        ["task.monitor='full/ndcg@50' is not a reported metric", "full/ndcg@10"],
    ),
    (
        "sampled-monitor-without-negatives",
        ["task=recommendation", "task.data.num_negatives=0", "task.monitor=s100/hr@10"],
        ["task.monitor='s100/hr@10' is not a reported metric"],
    ),
    (
        "min-interactions",
        ["task=recommendation", "task.data.min_interactions=2"],
        ["task.data.min_interactions=2 is out of range: it must be >= 3", "leave-one-out"],
    ),
    (
        "heads",
        ["task=recommendation", "task.model.num_heads=3"],
        ["task.model.num_heads=3 does not divide task.model.embed_dim=64"],
    ),
    (
        "activation",
        ["task=recommendation", "task.model.activation=swish"],
        ["task.model.activation='swish' is not one of relu, gelu"],
    ),
    (
        "typo-suggested",
        ["task=recommendation", "+task.data.max_length=20"],
        ["task.data.max_length is not a setting of task=recommendation", "did you mean task.data.max_len?"],
    ),
]

CONFIG_CASES = [
    *[pytest.param(o, f, id=f"root-{i}") for i, o, f in ROOT_CASES],
    *[pytest.param(o, f, id=f"vision-{i}") for i, o, f in VISION_CASES],
    *[pytest.param(["task=translation", *o], f, id=f"translation-{i}") for i, o, f in TRANSLATION_CASES],
    *[pytest.param(["task=audio", *o], f, id=f"audio-{i}") for i, o, f in AUDIO_CASES],
    *[pytest.param(o, f, id=f"timeseries-{i}") for i, o, f in TIMESERIES_CASES],
    *[pytest.param(o, f, id=f"recommendation-{i}") for i, o, f in RECOMMENDATION_CASES],
]


@pytest.mark.parametrize(("overrides", "fragments"), CONFIG_CASES)
def test_a_bad_setting_fails_the_pre_check(disk: Path, overrides: list[str], fragments: list[str]):
    """One line naming the key, the value and the fix, before any data or model (in-process, no torch)."""
    cfg = _compose(overrides, disk)
    started = time.perf_counter()
    expect_error(lambda: check_config(cfg), ConfigError, *fragments, watch=[disk])
    assert time.perf_counter() - started < 0.5


def _stand_ins(cfg: DictConfig, under: Path) -> None:
    """An empty file or folder at each path the config names (``kind`` of its :class:`OnDisk` entry)."""
    from tasks.common.schema import ROOT, TASKS, OnDisk

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key, default=None)

    for key, spec in {**ROOT.keys, **TASKS[cfg.task._target_].keys}.items():
        if isinstance(spec, OnDisk) and get(key):
            path = Path(get(key))
            assert path.is_relative_to(under), f"{key}={path} is not under paths.data_dir"
            if (spec.kind(get) if callable(spec.kind) else spec.kind) == "folder":
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def test_every_shipped_config_passes_the_pre_check(disk: Path):
    """The defaults of every task and every recipe are valid (the catalogue's cases are all changes); a
    recipe's benchmark files are empty stand-ins under ``paths.data_dir`` (the pre-check only looks that
    they exist)."""
    choices = [f"task={p.stem}" for p in sorted((REPO / "conf/task").glob("*.yaml"))]
    choices += [f"experiment={p.stem}" for p in sorted((REPO / "conf/experiment").glob("*.yaml"))]
    for choice in choices:
        cfg = _compose([choice, f"paths.data_dir={disk / 'data'}"], disk)
        _stand_ins(cfg, disk / "data")
        check_config(cfg)


def test_an_unknown_experiment_fails_composition(disk: Path):
    with pytest.raises(ConfigCompositionException, match="Could not find 'experiment/vision_cifar1'"):
        _composed(("experiment=vision_cifar1",))


def test_a_missing_or_folder_checkpoint_fails_the_pre_check(disk: Path):
    cfg = _compose([f"ckpt_path={disk / 'outputs/old'}"], disk)
    expect_error(lambda: check_config(cfg), ConfigError, f"ckpt_path={disk / 'outputs/old'} is a folder",
                 "checkpoints/last.ckpt", watch=[disk])  # fmt: skip
    cfg = _compose([f"ckpt_path={disk / 'nope.ckpt'}"], disk)
    expect_error(lambda: check_config(cfg), ConfigError, f"ckpt_path={disk / 'nope.ckpt'} does not exist",
                 watch=[disk])  # fmt: skip


# -- data paths: a file or folder a key names must exist, checked before torch is imported -----------------
# (id, overrides, fragments); {d} is the ``disk`` fixture's folder, which holds outputs/old/train.log (a
# file), outputs/old/checkpoints/last.ckpt and cache/ (a folder)
PATH_CASES = [
    (
        "vision-root-missing",
        ["task.data.root={d}/cifar10.tar.gz"],
        ["task.data.root={d}/cifar10.tar.gz does not exist", "ImageFolder folder", ".tar.gz of one"],
    ),
    (
        "vision-root-relative",
        ["task.data.root=no-such-cifar10.tar.gz"],
        ["task.data.root=no-such-cifar10.tar.gz (resolved to ", "/no-such-cifar10.tar.gz) does not exist"],
    ),
    (
        "vision-recipe-data-dir",
        ["experiment=vision_cifar10", "paths.data_dir={d}/data"],
        [
            "task.data.root={d}/data/cifar10-jpg.tar.gz does not exist",
            "set paths.data_dir=/path/to/data, the folder that holds cifar10-jpg.tar.gz",
        ],
    ),
    (
        "timeseries-root-folder",
        ["task=timeseries", "task.data.root={d}/cache"],
        ["task.data.root={d}/cache is a folder, not a file", "a CSV with a date column"],
    ),
    (
        "timeseries-recipe-data-dir",
        ["experiment=timeseries_etth1", "paths.data_dir={d}/data"],
        ["task.data.root={d}/data/ett-small/ETTh1.csv does not exist", "holds ett-small/ETTh1.csv"],
    ),
    (
        "audio-root-file",
        ["task=audio", "task.data.source=fsdd", "task.data.root={d}/outputs/old/train.log"],
        ["task.data.root={d}/outputs/old/train.log is a file, not a folder", "FSDD recordings folder"],
    ),
    (
        "audio-speech-commands-missing",
        ["task=audio", "task.data.source=speech_commands", "task.data.root={d}/speech_commands"],
        ["task.data.root={d}/speech_commands does not exist", "validation_list.txt"],
    ),
    (
        "translation-bible-folder",
        ["task=translation", "task.data.name=bible", "task.data.root={d}/cache"],
        ["task.data.root={d}/cache is a folder, not a file", "the bible JSON-lines file"],
    ),
    (
        "translation-multi30k-missing",
        ["task=translation", "task.data.name=multi30k", "task.data.root={d}/multi30k"],
        ["task.data.root={d}/multi30k does not exist", "upstream Multi30k files", "null for the hub"],
    ),
    (
        "translation-file-under-root",
        [
            "task=translation",
            "task.data.name=files",
            "task.data.root={d}",
            *[f"task.data.files.{k}=outputs/old/train.log" for k in ("train_tgt", "val_src", "val_tgt")],
            *[f"task.data.files.{k}=outputs/old/train.log" for k in ("test_src", "test_tgt")],
            "task.data.files.train_src=train.en",
        ],
        ["task.data.files.train_src=train.en (in task.data.root: {d}/train.en) does not exist"],
    ),
    (
        "translation-tokenizer-missing",
        ["task=translation", "task.data.tokenizer={d}/tokenizer.json"],
        ["task.data.tokenizer={d}/tokenizer.json does not exist", "null to train a new one"],
    ),
    (
        "recommendation-log-missing",
        ["task=recommendation", "task.data.path={d}/ratings.dat"],
        ["task.data.path={d}/ratings.dat does not exist", "interaction log", "embedded MovieLens-100k"],
    ),
    (
        "recommendation-titles-folder",
        ["task=recommendation", "task.data.titles={d}/cache"],
        ["task.data.titles={d}/cache is a folder, not a file", "movies.dat"],
    ),
    (
        "checkpoint-run-folder",
        ["ckpt_path={d}/outputs/old"],
        ["ckpt_path={d}/outputs/old is a folder", "ckpt_path={d}/outputs/old/checkpoints/last.ckpt"],
    ),
    (
        "a-bad-value-is-named-first",
        ["task=timeseries", "task.data.root={d}/gone.csv", "task.lookback=0"],
        ["task.lookback=0 is out of range"],
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), [pytest.param(o, f, id=i) for i, o, f in PATH_CASES])
def test_a_missing_data_path_fails_the_pre_check(disk: Path, overrides: list[str], fragments: list[str]):
    """One line naming the key, the path (where a relative one was looked for) and what it should be."""
    cfg = _compose([o.replace("{d}", str(disk)) for o in overrides], disk)
    started = time.perf_counter()
    expect_error(
        lambda: check_config(cfg),
        ConfigError,
        *[f.replace("{d}", str(disk)) for f in fragments],
        watch=[disk],
    )
    assert time.perf_counter() - started < 0.5


# -- end to end: the same line from train.py, in well under the seconds torch takes to import ---------
E2E = {
    "vision": ["task.model.stem_channels=[]", "task.model.patch_size=5"],
    "translation": ["task.data.root=/path/to/data"],
    "audio": ["task.model.patch_freq=7"],
    "timeseries": ["task.data.split=[0.7,0.2,0.2]"],
    "recommendation": ["task.num_train_negatives=5"],
}


@pytest.mark.parametrize("task", sorted(E2E))
def test_train_py_refuses_a_bad_task_setting_at_once(tmp_path: Path, disk: Path, task: str):
    run = tmp_path / "run"
    before = snapshot(disk / "outputs", disk / "cache")
    started = time.perf_counter()
    proc = run_train(
        [f"task={task}", *E2E[task], f"hydra.run.dir={run}", f"paths.cache_dir={disk / 'cache'}"]
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert E2E[task][-1].split("=")[0] in errors[0]
    assert elapsed < 5, f"{task}: refused after {elapsed:.1f} s"
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "train.log"], "the run did work"
    assert errors[0].removeprefix("error: ") in (run / "train.log").read_text().splitlines()[-1]
    assert snapshot(disk / "outputs", disk / "cache") == before


def test_train_py_refuses_a_missing_recipe_file_at_once(tmp_path: Path, disk: Path):
    """A recipe's benchmark file missing under ``paths.data_dir``: one line naming the key, the path and the
    folder to set, before torch is imported (well under the seconds its import takes)."""
    run, data = tmp_path / "run", tmp_path / "data"
    started = time.perf_counter()
    proc = run_train(["experiment=timeseries_etth1", f"paths.data_dir={data}", f"hydra.run.dir={run}"])
    elapsed = time.perf_counter() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"task.data.root={data}/ett-small/ETTh1.csv does not exist" in errors[0]
    assert "set paths.data_dir=/path/to/data, the folder that holds ett-small/ETTh1.csv" in errors[0]
    assert elapsed < 5, f"refused after {elapsed:.1f} s"
    assert not data.exists() and sorted(p.name for p in run.iterdir()) == [".hydra", "train.log"]


# -- checkpoints -----------------------------------------------------------------------------------------
def _checkpoint(path: Path, task: str = "vision", model: dict | None = None) -> Path:
    state = {"state_dict": {"model.w": torch.ones(64, 64)}, "mha_suite": {"task": task, "model": model or {}}}
    torch.save(state, path)
    return path


class _Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _truncated(folder: Path) -> Path:
    path = _checkpoint(folder / "last.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _text(folder: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("epoch 3: loss 0.12\n")
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.ckpt"
    path.write_bytes(b"")
    return path


def _crafted(folder: Path) -> Path:
    path = folder / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(folder / "pwned")}, path)
    return path


def _no_state(folder: Path) -> Path:
    path = folder / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    return path


CHECKPOINT_CASES = [
    pytest.param(_truncated, ValueError, ["cannot be read safely", "truncated"], id="truncated"),
    pytest.param(_text, ValueError, ["cannot be read safely"], id="text-file"),
    pytest.param(_empty, ValueError, ["cannot be read safely"], id="empty-file"),
    pytest.param(_crafted, ValueError, ["cannot be read safely", "no code is run"], id="code-inside"),
    pytest.param(_no_state, ValueError, ["is not a checkpoint written by train.py"], id="no-state-dict"),
    pytest.param(lambda f: f / "gone.ckpt", FileNotFoundError, ["does not exist"], id="missing"),
    pytest.param(
        lambda f: _checkpoint(f / "t.ckpt", task="translation"),
        ValueError,
        ["was written by task=translation, not task=vision"],
        id="another-task",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CHECKPOINT_CASES)
def test_a_bad_checkpoint_is_refused_naming_the_file(tmp_path: Path, make, error, fragments):
    from tasks.common import load_checkpoint

    path = make(tmp_path)
    expect_error(lambda: load_checkpoint(path, task="vision"), error, str(path), *fragments, watch=[tmp_path])
    assert not (tmp_path / "pwned").exists(), "the checkpoint's payload ran"


def test_a_checkpoint_of_other_model_settings_names_the_key(tmp_path: Path):
    from tasks.common.checkpoint import check_checkpoint_matches

    path = _checkpoint(tmp_path / "last.ckpt", model={"depth": 3, "embed_dim": 64})
    state = torch.load(path, weights_only=True)
    expect_error(
        lambda: check_checkpoint_matches(state, "vision", {"depth": 2, "embed_dim": 64}, path),
        ValueError,
        str(path),
        "task.model.depth=3 (this run: 2)",
        watch=[tmp_path],
    )


# -- inference commands: options, files and checkpoints -------------------------------------------------
#: ``python -m tasks.<module>``; each case runs its ``main`` through ``tasks.common.cli.run_command`` (what
#: ``python -m`` runs) in-process: exit status 2 and one ``error:`` line on standard error
COMMANDS = {
    "predict": "audio.predict",
    "forecast": "timeseries.forecast",
    "recommend": "recommendation.recommend",
}


def _command_files(d: Path) -> None:
    """What the cases name: a corrupt checkpoint, a checkpoint of task=vision, a clip and a CSV."""
    (d / "best.ckpt").write_bytes(b"weights")
    _checkpoint(d / "vision.ckpt", task="vision")
    (d / "clip.wav").write_bytes(b"RIFF")
    (d / "series.csv").write_text("date,a\n2020-01-01 00:00,1.0\n2020-01-01 01:00,2.0\n")


def _run_command(command: str, argv: list[str], capsys) -> tuple[int, str]:
    """``python -m tasks.<module> *argv`` in-process: its exit status and standard error."""
    import importlib

    from tasks.common import cli

    main = importlib.import_module(f"tasks.{COMMANDS[command]}").main
    capsys.readouterr()
    status = cli.run_command(lambda: main(argv))
    return status, capsys.readouterr().err


COMMAND_CASES = [
    ("predict", ["clip.wav"], ["give the checkpoint as ckpt="], "no-ckpt"),
    ("predict", ["ckpt={d}/best.ckpt"], ["no WAV files"], "no-clips"),
    ("predict", ["ckpt={d}/best.ckpt", "{d}/gone.wav"], ["{d}/gone.wav: no such file"], "missing-clip"),
    (
        "predict",
        ["ckpt={d}/best.ckpt", "{d}/clip.wav", "topk=5"],
        ["unknown option 'topk=5'"],
        "unknown-option",
    ),
    (
        "predict",
        ["ckpt={d}/best.ckpt", "{d}/clip.wav", "top=three"],
        ["top='three' is not a whole number"],
        "top-text",
    ),
    (
        "predict",
        ["ckpt={d}/best.ckpt", "{d}/clip.wav", "device=gpu"],
        ["device='gpu' is not a device"],
        "device",
    ),
    (
        "predict",
        ["ckpt={d}/gone.ckpt", "{d}/clip.wav"],
        ["checkpoint {d}/gone.ckpt does not exist"],
        "missing-ckpt",
    ),
    (
        "predict",
        ["ckpt={d}/best.ckpt", "{d}/clip.wav"],
        ["checkpoint {d}/best.ckpt cannot be read safely"],
        "corrupt-ckpt",
    ),
    (
        "predict",
        ["ckpt={d}/vision.ckpt", "{d}/clip.wav"],
        ["checkpoint {d}/vision.ckpt was written by task=vision, not task=audio"],
        "other-task-ckpt",
    ),
    ("forecast", ["ckpt={d}/best.ckpt", "--csv"], ["--csv needs a path"], "csv-without-path"),
    ("forecast", ["ckpt={d}/best.ckpt", "horizon=48"], ["unknown argument 'horizon=48'"], "unknown-option"),
    ("forecast", ["--csv", "{d}/series.csv"], ["give ckpt="], "no-ckpt"),
    (
        "forecast",
        ["ckpt={d}/best.ckpt", "--csv", "{d}/gone.csv"],
        ["--csv {d}/gone.csv: no such file"],
        "missing-csv",
    ),
    ("forecast", ["ckpt={d}/best.ckpt", "--csv", "{d}"], ["--csv {d}: is a folder"], "folder-as-csv"),
    (
        "forecast",
        ["ckpt={d}/best.ckpt", "--csv", "{d}/series.csv", "device=gpu"],
        ["device='gpu' is not a device"],
        "device",
    ),
    (
        "forecast",
        ["ckpt={d}/gone.ckpt", "--csv", "{d}/series.csv"],
        ["checkpoint {d}/gone.ckpt does not exist"],
        "missing-ckpt",
    ),
    (
        "forecast",
        ["ckpt={d}/best.ckpt", "--csv", "{d}/series.csv"],
        ["checkpoint {d}/best.ckpt cannot be read safely"],
        "corrupt-ckpt",
    ),
    (
        "forecast",
        ["ckpt={d}/vision.ckpt", "--csv", "{d}/series.csv"],
        ["checkpoint {d}/vision.ckpt was written by task=vision, not task=timeseries"],
        "other-task-ckpt",
    ),
    (
        "recommend",
        ["ckpt={d}/best.ckpt", "items=12", "user=3"],
        ["give exactly one of items="],
        "items-and-user",
    ),
    (
        "recommend",
        ["ckpt={d}/best.ckpt", "topk=5", "items=1"],
        ["unknown argument 'topk=5'"],
        "unknown-option",
    ),
    ("recommend", ["items=1"], ["give the checkpoint as ckpt="], "no-ckpt"),
    (
        "recommend",
        ["ckpt={d}/best.ckpt", "items=1", "device=gpu"],
        ["device='gpu' is not a device"],
        "device",
    ),
    (
        "recommend",
        ["ckpt={d}/gone.ckpt", "items=1"],
        ["checkpoint {d}/gone.ckpt does not exist"],
        "missing-ckpt",
    ),
    (
        "recommend",
        ["ckpt={d}/best.ckpt", "items=1"],
        ["checkpoint {d}/best.ckpt cannot be read safely"],
        "corrupt-ckpt",
    ),
    (
        "recommend",
        ["ckpt={d}/vision.ckpt", "items=1"],
        ["checkpoint {d}/vision.ckpt was written by task=vision, not task=recommendation"],
        "other-task-ckpt",
    ),
]


@pytest.mark.parametrize(
    ("command", "argv", "fragments"),
    [pytest.param(c, a, f, id=f"{c}-{i}") for c, a, f, i in COMMAND_CASES],
)
def test_an_inference_command_refuses_bad_input_in_one_line(tmp_path: Path, capsys, command, argv, fragments):
    _command_files(tmp_path)
    before = snapshot(tmp_path)
    status, err = _run_command(command, [a.replace("{d}", str(tmp_path)) for a in argv], capsys)
    err = err.strip()
    assert status == 2 and err.startswith("error: ") and "\n" not in err, (status, err)
    for fragment in fragments:
        assert fragment.replace("{d}", str(tmp_path)) in err, (fragment, err)
    assert snapshot(tmp_path) == before, "the command changed files"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_inference_command_shows_the_traceback_with_hydra_full_error(
    tmp_path: Path, capsys, monkeypatch, command: str
):
    """``HYDRA_FULL_ERROR=1``: the project's own error propagates (Python prints its traceback)."""
    _command_files(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    argv = {"predict": [f"{tmp_path}/clip.wav"], "forecast": ["--csv", f"{tmp_path}/series.csv"]}
    with pytest.raises(ValueError, match="cannot be read safely"):
        _run_command(command, [f"ckpt={tmp_path}/best.ckpt", *argv.get(command, ["items=1"])], capsys)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_inference_command_keeps_the_traceback_of_an_unexpected_error(
    tmp_path: Path, capsys, monkeypatch, command: str
):
    """A ``ValueError`` raised inside a library (here ``json`` on a broken file) is not one of ours: it
    propagates with its traceback instead of being shortened to a line."""
    import importlib
    import json

    _command_files(tmp_path)
    module = importlib.import_module(f"tasks.{COMMANDS[command]}")
    monkeypatch.setattr(module, "load_checkpoint", lambda *a, **k: json.loads("{"))
    argv = {"predict": [f"{tmp_path}/clip.wav"], "forecast": ["--csv", f"{tmp_path}/series.csv"]}
    with pytest.raises(json.JSONDecodeError):
        _run_command(command, [f"ckpt={tmp_path}/best.ckpt", *argv.get(command, ["items=1"])], capsys)


def test_a_checkpoint_and_model_card_of_different_runs_are_named(tmp_path: Path, capsys):
    """``run_dir=`` of another run: the card's model does not take the checkpoint's weights (one line naming
    both files, not the state-dict listing of every tensor)."""
    import json

    from tasks.timeseries.model import PatchTST

    _command_files(tmp_path)
    model = {"num_channels": 1, "lookback": 8, "horizon": 2, "patch_len": 4, "stride": 4, "d_model": 8}
    weights = {f"model.{k}": v for k, v in PatchTST(**{**model, "d_model": 16}).state_dict().items()}
    torch.save(
        {"state_dict": weights, "mha_suite": {"task": "timeseries", "model": {}}}, tmp_path / "ts.ckpt"
    )
    card = {"model": model, "mean": [0.0], "std": [1.0], "channels": ["a"], "date_column": "date"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "timeseries.json").write_text(json.dumps(card))
    before = snapshot(tmp_path)
    argv = [f"ckpt={tmp_path}/ts.ckpt", f"run_dir={tmp_path}/other", "--csv", f"{tmp_path}/series.csv"]
    status, err = _run_command("forecast", argv, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert (
        f"checkpoint {tmp_path}/ts.ckpt does not fit the model card {tmp_path}/other/timeseries.json" in err
    )
    assert "size mismatch" in err and snapshot(tmp_path) == before


def test_python_m_prints_one_line_and_exits_2(tmp_path: Path):
    """The ``__main__`` wiring (``raise SystemExit(cli.run_command(main))`` in each command): ``python -m
    tasks.timeseries.forecast`` with a corrupt checkpoint, in a subprocess: no traceback, status 2."""
    import os
    import subprocess
    import sys

    _command_files(tmp_path)
    before = snapshot(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONPATH=str(REPO))
    argv = ["tasks.timeseries.forecast", "ckpt=best.ckpt", "--csv", "series.csv"]
    proc = subprocess.run(
        [sys.executable, "-m", *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: checkpoint ") and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert snapshot(tmp_path) == before
    for module in COMMANDS.values():  # the other commands end the same way
        source = (REPO / "tasks" / f"{module.replace('.', '/')}.py").read_text()
        assert source.rstrip().endswith("raise SystemExit(cli.run_command(main))"), module


def _translate(argv: list[str]):
    from tasks.translation.translate import main

    return lambda: main(argv)


TRANSLATE_CASES = [
    pytest.param(
        ["ckpt={d}/best.ckpt", "beam_size=4", "three"], ["unknown option 'beam_size=4'"], id="unknown-option"
    ),
    pytest.param(
        ["ckpt={d}/best.ckpt", "--file", "{d}/gone.txt"],
        ["--file {d}/gone.txt: no such file"],
        id="missing-file",
    ),
    pytest.param(["ckpt={d}/best.ckpt"], ["no sentences"], id="no-sentences"),
]


@pytest.mark.parametrize(("argv", "fragments"), TRANSLATE_CASES)
def test_a_bad_translate_option_exits_with_one_line(tmp_path: Path, argv, fragments):
    (tmp_path / "best.ckpt").write_bytes(b"weights")
    fill = [a.replace("{d}", str(tmp_path)) for a in argv]
    message = expect_error(
        _translate(fill),
        SystemExit,
        *[f.replace("{d}", str(tmp_path)) for f in fragments],
        watch=[tmp_path],
    )
    assert message.startswith("error: ")


@pytest.mark.parametrize("text", ['{"num_channels": 3', "[1, 2]", "\xff\xfe"])
def test_a_corrupt_model_card_is_one_line_naming_it(tmp_path: Path, text: str):
    from tasks.common.checkpoint import read_model_card

    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"")
    card = tmp_path / "model_card.json"
    card.write_bytes(text.encode("latin-1"))
    before = card.read_bytes()
    with pytest.raises(ValueError, match="model card") as info:
        read_model_card(ckpt, "model_card.json", "timeseries")
    assert str(card) in str(info.value) and "\n" not in str(info.value)
    assert card.read_bytes() == before
