"""The typed settings of every config: one declarative table for the root and one per task, checked by
``train.py`` before torch is imported, so a bad value costs no start-up and builds no data or model.

Each table maps a dotted key (``task.model.num_heads``) to what it must hold -- a type, a range, a choice,
the length of a list, whether null is allowed -- and, for a key that only some data sources or options
read, the condition under which it is read (``when``). Rules across keys (heads dividing the width, a
patch dividing the image, fractions summing below one) are small functions beside each table. A failure
is one line that names the key, the value and the fix (:class:`ConfigError`, a ``ValueError``):

* a key no table knows (a typo, a ``+key=`` override): the nearest known key is suggested;
* a wrong type or an impossible value: the expected type and range;
* a key the chosen data source or option does not read, changed from its default in
  ``conf/task/<name>.yaml``: which setting would read it (silence would train on something else than asked);
* a broken rule across keys;
* a data file, folder or checkpoint that a key names and that does not exist, or is a folder where a file
  is needed (or the other way round): the path, what it should hold, and for a recipe's path under
  ``${paths.data_dir}`` the folder to set (:class:`OnDisk`; null, the embedded data, is not a path).

Why tables and not structured configs (dataclasses in Hydra's ConfigStore): the task configs are built with
``_target_`` and ``instantiate``, and their keys are the constructors' keyword arguments; typed dataclass
nodes would need a second copy of every default, turn each bad value into OmegaConf's validation error (type
only, no ranges, no cross-key rules, no fix), and would not express "only read when the source is fsdd".
The tables hold no defaults (the YAML files stay their one home) and need nothing but OmegaConf.

A new task without a table here still runs (the root settings are checked, its own constructor checks
the rest); ``tests/app/test_config.py`` asserts that every shipped task has one covering each key of its
YAML file.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tasks.common.hub import HUB_NAME

CONF = Path(__file__).resolve().parents[2] / "conf"

#: ``get(key)``: the resolved value of a dotted key, ``None`` when absent
Getter = Callable[[str], Any]


class ConfigError(ValueError):
    """A setting that cannot work: the message is one line naming the key, the value and the fix."""


def show(value: Any) -> str:
    """A value as the command line writes it (strings quoted, so that ``'1e-3'`` shows it is text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def _plain(value: Any) -> str:
    """A value as in a YAML file (strings unquoted)."""
    return value if isinstance(value, str) else show(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


# -- what a key may hold ------------------------------------------------------------------------------
@dataclass(frozen=True)
class When:
    """A condition on other settings under which a key is read (``is_``, ``given``, ``absent``,
    ``positive``; combined with ``&`` and ``|``)."""

    keys: tuple[str, ...]
    test: Callable[[Getter], bool]
    text: str

    def __and__(self, other: When) -> When:
        return When(
            self.keys + other.keys,
            lambda get: self.test(get) and other.test(get),
            f"{self.text} and {other.text}",
        )

    def __or__(self, other: When) -> When:
        return When(
            self.keys + other.keys,
            lambda get: self.test(get) or other.test(get),
            f"{self.text} or {other.text}",
        )


def is_(key: str, *values: Any) -> When:
    """``key`` holds one of ``values``."""
    return When(
        (key,),
        lambda get: get(key) in values,
        f"{key} is {' or '.join(_plain(v) for v in values)}",
    )


def given(key: str) -> When:
    """``key`` is set (not null)."""
    return When((key,), lambda get: get(key) is not None, f"{key} is set")


def absent(key: str) -> When:
    """``key`` is null."""
    return When((key,), lambda get: get(key) is None, f"{key} is null")


def positive(key: str) -> When:
    """``key`` is a number > 0."""
    return When((key,), lambda get: (get(key) or 0) > 0, f"{key} > 0")


@dataclass(frozen=True)
class Spec:
    """What one key may hold. ``null``: null is allowed; ``when``: the key is read only under this
    condition; ``hint``: the fix, appended to a failure."""

    null: bool = field(default=False, kw_only=True)
    when: When | None = field(default=None, kw_only=True)
    hint: str = field(default="", kw_only=True)

    def describe(self) -> str:
        raise NotImplementedError

    def _check(self, key: str, value: Any) -> str | None:
        raise NotImplementedError

    def check(self, key: str, value: Any) -> str | None:
        """The failure message for ``value`` at ``key``, or ``None`` when it fits."""
        if value is None:
            if self.null:
                return None
            message = f"{key}=null is not allowed: it must be {self.describe()}"
        else:
            message = self._check(key, value)
        if message is not None and self.hint:
            message += f"; {self.hint}"
        return message

    def expected(self) -> str:
        return self.describe() + (" (or null)" if self.null else "")


@dataclass(frozen=True)
class Number(Spec):
    """An integer (``integer=True``) or a number, optionally within ``[low, high]`` (``*_open``: strict)."""

    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return (
                f"in {'(' if self.low_open else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.high_open else ']'}"
            )
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return ""

    def describe(self) -> str:
        return f"{'an integer' if self.integer else 'a number'} {self.bounds()}".rstrip()

    def _check(self, key: str, value: Any) -> str | None:
        kinds = int if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or math.isnan(value):
            return f"{key}={show(value)} is not {'an integer' if self.integer else 'a number'}" + (
                f" ({self.bounds()})" if self.bounds() else ""
            )
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if low_bad or high_bad:
            return f"{key}={show(value)} is out of range: it must be {self.bounds()}"
        return None


def Int(low: float | None = None, high: float | None = None, **kw: Any) -> Number:
    """An integer in ``[low, high]``."""
    return Number(integer=True, low=low, high=high, **kw)


def Float(low: float | None = None, high: float | None = None, **kw: Any) -> Number:
    """A number (an integer is fine) in ``[low, high]`` (``low_open`` / ``high_open``: strict bounds)."""
    return Number(integer=False, low=low, high=high, **kw)


def Fraction(**kw: Any) -> Number:
    """A share strictly between 0 and 1."""
    return Number(low=0.0, high=1.0, low_open=True, high_open=True, **kw)


def Rate(**kw: Any) -> Number:
    """A probability such as dropout: in [0, 1)."""
    return Number(low=0.0, high=1.0, high_open=True, **kw)


@dataclass(frozen=True)
class Choice(Spec):
    """One of ``values``."""

    values: tuple[Any, ...] = ()

    def describe(self) -> str:
        return "one of " + ", ".join(_plain(v) for v in self.values)

    def _check(self, key: str, value: Any) -> str | None:
        same = [v for v in self.values if v == value and isinstance(v, bool) == isinstance(value, bool)]
        if not same:
            return f"{key}={show(value)} is not {self.expected()}"
        return None


def One(*values: Any, **kw: Any) -> Choice:
    """One of ``values``."""
    return Choice(values=values, **kw)


@dataclass(frozen=True)
class Text(Spec):
    """A string; ``empty``: the empty string is allowed; ``pattern``: a regular expression it must match
    (``form`` says it in words)."""

    empty: bool = False
    pattern: str | None = None
    form: str = ""

    def describe(self) -> str:
        return self.form or ("a string" if self.empty else "a non-empty string")

    def _check(self, key: str, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"{key}={show(value)} is not a string"
        if not value and not self.empty:
            return f"{key} is empty: it must be {self.expected()}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{key}={show(value)} is not {self.expected()}"
        return None


@dataclass(frozen=True)
class Flag(Spec):
    """true or false."""

    def describe(self) -> str:
        return "true or false"

    def _check(self, key: str, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"{key}={show(value)} is not {self.expected()}"


@dataclass(frozen=True)
class Seq(Spec):
    """A list of ``item``; ``length``: exactly that many entries; ``min_length``: at least that many."""

    item: Spec = field(default_factory=lambda: Anything())
    length: int | None = None
    min_length: int = 0

    def describe(self) -> str:
        size = f"{self.length} " if self.length else f"{self.min_length}+ " if self.min_length > 1 else ""
        return f"a list of {size}entries, each {self.item.describe()}"

    def _check(self, key: str, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"{key}={show(value)} is not a list: it must be {self.expected()}"
        has = f"{key}={show(value)} has {len(value)} {'entry' if len(value) == 1 else 'entries'}"
        if self.length is not None and len(value) != self.length:
            return f"{has}: it must have {self.length}"
        if len(value) < self.min_length:
            return f"{has}: it needs at least {self.min_length}"
        for i, item in enumerate(value):
            message = self.item.check(f"{key}[{i}]", item)
            if message is not None:
                return message
        return None


def List(item: Spec, length: int | None = None, min_length: int = 0, **kw: Any) -> Seq:
    """A list of ``item``."""
    return Seq(item=item, length=length, min_length=min_length, **kw)


@dataclass(frozen=True)
class Either(Spec):
    """Any of ``options`` (e.g. an integer >= 1 or ``auto``)."""

    options: tuple[Spec, ...] = ()

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def _check(self, key: str, value: Any) -> str | None:
        if any(o.check(key, value) is None for o in self.options):
            return None
        return f"{key}={show(value)} is not {self.expected()}"


def AnyOf(*options: Spec, **kw: Any) -> Either:
    return Either(options=options, **kw)


@dataclass(frozen=True)
class Anything(Spec):
    """Passed on as it is (its consumer checks it), e.g. a Lightning ``Trainer`` argument."""

    null: bool = field(default=True, kw_only=True)

    def describe(self) -> str:
        return "any value"

    def _check(self, key: str, value: Any) -> str | None:
        return None


@dataclass(frozen=True)
class OnDisk(Text):
    """A path that must exist when its key is read: ``kind`` is ``file``, ``folder`` or ``any`` (either),
    or a function of the other settings that returns one (a key whose meaning depends on the data source);
    ``holds`` says what it should be and how to write it (text, or such a function); ``base``: a key whose
    folder a relative path is read from when that key is set. ``~`` is expanded; other relative paths are
    read from the working folder, as the data modules read them (``train.py`` does not change folder).

    Checked after every other rule (a wrong setting is named before a missing file), and only for a value
    that is a concrete path: null and the empty string (the embedded data, or a file key left unset) pass."""

    kind: str | Callable[[Getter], str] = "any"
    holds: str | Callable[[Getter], str] = ""
    base: str | None = None

    def describe(self) -> str:
        return "a path" + (f" to a {self.kind}" if self.kind in ("file", "folder") else "")

    def missing(self, key: str, value: Any, get: Getter, raw: Any) -> str | None:
        """The failure message when ``value`` (``raw``: as written, before interpolation) is not on disk
        as this key needs it, else ``None``."""
        if not isinstance(value, str) or not value:
            return None
        kind = self.kind(get) if callable(self.kind) else self.kind
        holds = self.holds(get) if callable(self.holds) else self.holds
        path = Path(value).expanduser()
        base = get(self.base) if self.base else None
        if base:
            path = Path(base).expanduser() / path
        where = f"{key}={value}"
        if not Path(value).is_absolute():  # say where a relative (or ~) path was looked for
            where += f" (in {self.base}: {path})" if base else f" (resolved to {path.resolve()})"
        if path.is_dir() and kind == "file":
            state = "is a folder, not a file"
        elif path.exists() and not path.is_dir() and kind == "folder":
            state = "is a file, not a folder"
        elif not path.exists():
            state = "does not exist"
        else:
            return None
        fix = f"pass {holds}" if holds else f"pass an existing {kind}"
        if isinstance(raw, str) and raw.startswith("${paths.data_dir}/"):  # a recipe's path
            rest = raw.removeprefix("${paths.data_dir}/")
            fix = f"set paths.data_dir=/path/to/data, the folder that holds {rest}, or {fix}"
        return f"{where} {state}: {fix}"


def File(holds: str | Callable[[Getter], str] = "", **kw: Any) -> OnDisk:
    """A path to an existing file (null allowed with ``null=True``)."""
    return OnDisk(kind="file", holds=holds, **kw)


def Folder(holds: str | Callable[[Getter], str] = "", **kw: Any) -> OnDisk:
    """A path to an existing folder."""
    return OnDisk(kind="folder", holds=holds, **kw)


def FileOrFolder(holds: str | Callable[[Getter], str] = "", **kw: Any) -> OnDisk:
    """A path to an existing file or folder (e.g. an ImageFolder folder or its archive)."""
    return OnDisk(kind="any", holds=holds, **kw)


Rule = Callable[[Getter], "str | None"]


@dataclass(frozen=True)
class Schema:
    """The settings of one task (or the root): ``keys`` and the ``rules`` across them; ``file``: the YAML
    file under ``conf/`` that holds the defaults (what an unread key must be left at)."""

    keys: Mapping[str, Spec]
    rules: tuple[Rule, ...] = ()
    file: str = "config.yaml"


# -- rules shared by the tasks ------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def heads_divide(width: str, heads: str) -> Rule:
    """The attention heads split the width evenly."""

    def rule(get: Getter) -> str | None:
        w, h = get(width), get(heads)
        if w is not None and h is not None and w % h:
            fits = [d for d in _divisors(w) if d <= 64]
            return (
                f"{heads}={h} does not divide {width}={w}: each head needs an equal share of the width; "
                f"pick {heads} from {fits} or a {width} divisible by {h}"
            )
        return None

    return rule


def ordered_pair(key: str) -> Rule:
    """A ``[low, high]`` range with low <= high."""

    def rule(get: Getter) -> str | None:
        pair = get(key)
        if pair is not None and len(pair) == 2 and pair[0] > pair[1]:
            return f"{key}={show(pair)} is not a range [low, high]: low > high; write [{pair[1]}, {pair[0]}]"
        return None

    return rule


def shares_below_one(*keys: str, when: When | None = None) -> Rule:
    """Held-out shares leave something to train on."""

    def rule(get: Getter) -> str | None:
        if when is not None and not when.test(get):
            return None
        values = [get(k) for k in keys]
        if all(v is not None for v in values) and sum(values) >= 1:
            given_ = " + ".join(f"{k}={show(v)}" for k, v in zip(keys, values, strict=True))
            return f"{given_} = {_num(sum(values))} leaves no training data: their sum must be < 1"
        return None

    return rule


def unique(key: str) -> Rule:
    def rule(get: Getter) -> str | None:
        values = get(key)
        if values:
            seen = [v for i, v in enumerate(values) if v in values[:i]]
            if seen:
                return f"{key}={show(values)} names {show(seen[0])} twice: each entry must be unique"
        return None

    return rule


# -- the root: conf/config.yaml, conf/trainer/*.yaml --------------------------------------------------
PRECISIONS = (
    "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
    "transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64", 32, 16, 64,
)  # fmt: skip
#: Lightning ``Trainer`` arguments the YAML files leave at Lightning's defaults (passed on unchecked)
TRAINER_EXTRAS = (
    "num_nodes", "fast_dev_run", "min_epochs", "min_steps", "limit_predict_batches", "overfit_batches",
    "gradient_clip_algorithm", "inference_mode", "profiler", "detect_anomaly", "barebones",
    "reload_dataloaders_every_n_epochs", "enable_autolog_hparams", "model_registry",
)  # fmt: skip
#: Trainer arguments that train.py sets itself: as a config key they would clash
TRAINER_OWN = {
    "logger": "train.py writes metrics.csv itself",
    "callbacks": "train.py adds the checkpoint, SIGTERM and learning-rate callbacks itself",
    "plugins": "train.py writes checkpoints atomically through its own plugin",
    "default_root_dir": "the run folder is hydra.run.dir",
    "gradient_clip_val": "set optim.grad_clip instead",
    "enable_checkpointing": "every run writes last.ckpt and best.ckpt",
}
BATCHES = AnyOf(Int(0), Float(0, 1), null=True)  # a number of batches or a fraction of them


def _checkpoint_example(get: Getter) -> str:
    """What ``ckpt_path`` should name: inside a run folder given instead, its ``last.ckpt``."""
    folder = Path(get("ckpt_path") or ".").expanduser()
    inside = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    example = inside / "last.ckpt" if folder.is_dir() else "<run>/checkpoints/last.ckpt"
    return f"the checkpoint file, e.g. ckpt_path={example}"


ROOT = Schema(
    {
        "seed": Int(0, 2**32 - 1),
        "ckpt_path": File(_checkpoint_example, null=True),
        "compile": Flag(),
        "compile_mode": One(
            "default",
            "reduce-overhead",
            "max-autotune",
            "max-autotune-no-cudagraphs",
            null=True,
            when=is_("compile", True),
        ),  # fmt: skip
        "matmul_precision": One("highest", "high", "medium"),
        "cpu_threads": Int(1, null=True),
        "run_test": Flag(),
        "save_artifacts": Flag(),
        "progress_every": Int(1),
        "sweep.jobs": Int(1),
        "sweep.jobs_per_gpu": Int(1),
        "sweep.gpus": List(AnyOf(Int(0), Text()), null=True),
        "sweep.storage": Text(null=True),
        "paths.output_dir": Text(),
        "paths.cache_dir": Text(null=True),
        "paths.data_dir": Text(),
        "optim.lr": Float(0, low_open=True),
        "optim.weight_decay": Float(0),
        "optim.betas": List(Float(0, 1, high_open=True), length=2),
        "optim.eps": Float(0, low_open=True),
        "optim.warmup": Float(0, hint="a fraction (< 1) of all steps, or a number of steps (>= 1)"),
        "optim.min_lr_ratio": Float(0, 1),
        "optim.grad_clip": Float(0, low_open=True, null=True),
        "trainer._target_": Text(),
        "trainer.accelerator": One("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
        "trainer.devices": AnyOf(Int(1), Int(-1, -1), One("auto"), List(Int(0), min_length=1)),
        "trainer.strategy": Text(),
        "trainer.sync_batchnorm": Flag(),
        "trainer.use_distributed_sampler": One(
            False, hint="the data modules shard their own loaders (tasks/common/distributed.py)"
        ),
        "trainer.precision": One(*PRECISIONS, null=True),
        "trainer.max_epochs": Int(-1, null=True),
        "trainer.max_steps": Int(-1),
        "trainer.max_time": Text(
            null=True, pattern=r"\d+:\d\d:\d\d:\d\d", form="a duration DD:HH:MM:SS such as 00:04:30:00"
        ),
        "trainer.val_check_interval": AnyOf(Int(1), Float(0, 1, low_open=True), null=True),
        "trainer.check_val_every_n_epoch": Int(1, null=True),
        "trainer.log_every_n_steps": Int(1),
        "trainer.num_sanity_val_steps": Int(-1),
        "trainer.enable_progress_bar": Flag(),
        "trainer.enable_model_summary": Flag(),
        "trainer.accumulate_grad_batches": Int(1),
        "trainer.deterministic": AnyOf(Flag(), One("warn"), null=True),
        "trainer.benchmark": Flag(null=True),
        "trainer.limit_train_batches": BATCHES,
        "trainer.limit_val_batches": BATCHES,
        "trainer.limit_test_batches": BATCHES,
        **{f"trainer.{name}": Anything() for name in TRAINER_EXTRAS},
    },
    rules=(
        lambda get: (
            "trainer.max_epochs=-1 trains forever: set trainer.max_epochs >= 1 or trainer.max_steps >= 1"
            if get("trainer.max_epochs") == -1 and get("trainer.max_steps") in (None, -1)
            else None
        ),
    ),
)


# -- vision -------------------------------------------------------------------------------------------
EMBEDDED_MNIST = absent("task.data.root") & absent("task.data.hub")
VISION_FILES = given("task.data.root") | given("task.data.hub")
MNIST_SIDE = 28  # the embedded digits: 28x28 px


def _vision_patches(get: Getter) -> str | None:
    """The patch (after the conv stem) divides the image side, where the side is known before decoding."""
    side = MNIST_SIDE if EMBEDDED_MNIST.test(get) else get("task.data.image_size")
    patch, stem = get("task.model.patch_size"), get("task.model.stem_channels") or []
    down = 2 ** len(stem)
    if patch % down:
        return (
            f"task.model.patch_size={patch} is not divisible by the conv stem's downsampling {down} "
            f"(task.model.stem_channels={show(stem)}): use a multiple of {down} or fewer stem stages"
        )
    if side is None:
        return None

    def fits(p: int) -> bool:
        s = side
        for _ in stem:
            s = (s + 1) // 2  # max-pool 3x3, stride 2, padding 1 rounds up
        return p % down == 0 and s % (p // down) == 0

    if not fits(patch):
        good = [p for p in range(down, side + 1, down) if fits(p)]
        where = "the embedded 28 px digits" if EMBEDDED_MNIST.test(get) else f"task.data.image_size={side}"
        return (
            f"task.model.patch_size={patch} does not divide {where} into whole patches "
            f"(task.model.stem_channels={show(stem)}); pick task.model.patch_size from {good}"
        )
    return None


VISION = Schema(
    {
        "task._target_": Text(),
        "task.label_smoothing": Rate(),
        "task.tta_flip": Flag(),
        "task.num_attention_images": Int(0),
        "task.data.root": FileOrFolder(
            "an ImageFolder folder holding train/ and test/ (<class>/*.jpg inside) or a .tar.gz of one, e.g. "
            "task.data.root=/path/to/cifar10-jpg.tar.gz; or null for the embedded MNIST digits",
            null=True,
        ),
        "task.data.hub": Text(null=True),
        "task.data.batch_size": Int(1),
        "task.data.eval_batch_size": Int(1, null=True),
        "task.data.val_fraction": Fraction(),
        "task.data.test_fraction": Fraction(when=EMBEDDED_MNIST),
        "task.data.image_size": Int(1, null=True, when=VISION_FILES),
        "task.data.channels": One(1, 3, null=True, when=VISION_FILES),
        "task.data.seed": Int(0),
        "task.data.num_workers": Int(0),
        "task.data.pin_memory": Flag(),
        "task.data.cache_dir": Text(null=True),
        "task.data.train_limit": Int(1, null=True),
        "task.model.patch_size": Int(1),
        "task.model.stem_channels": List(Int(1)),
        "task.model.stem_depth": Int(1),
        "task.model.embed_dim": Int(1),
        "task.model.depth": Int(1),
        "task.model.num_heads": Int(1),
        "task.model.num_kv_heads": Int(1, null=True),
        "task.model.mlp_ratio": Float(0, low_open=True),
        "task.model.pool": One("token", "avg"),
        "task.model.dropout": Rate(),
        "task.model.attn_dropout": Rate(),
        "task.model.drop_path": Rate(),
        "task.model.qk_norm": Flag(),
        "task.model.layer_norm_eps": Float(0, low_open=True),
        "task.model.layer_scale": Float(0, low_open=True, null=True),
        "task.model.image_size": Int(1),  # normally from the data; must then agree with it
        "task.model.in_chans": One(1, 3),
        "task.augment.crop": One("resized", "translate", "none"),
        "task.augment.pad": Float(0, when=is_("task.augment.crop", "translate")),
        "task.augment.scale": List(
            Float(0, 1, low_open=True), length=2, when=is_("task.augment.crop", "resized")
        ),
        "task.augment.ratio": List(
            Float(0, low_open=True), length=2, when=is_("task.augment.crop", "resized")
        ),
        "task.augment.flip": Flag(),
        "task.augment.rotate": Float(0, 180),
        "task.augment.trivial_augment": Flag(),
        "task.augment.magnitude": Float(0, when=is_("task.augment.trivial_augment", True)),
        "task.augment.mixup_alpha": Float(0),
        "task.augment.cutmix_alpha": Float(0),
        "task.augment.mix_prob": Float(
            0, 1, when=positive("task.augment.mixup_alpha") | positive("task.augment.cutmix_alpha")
        ),
    },
    rules=(
        lambda get: (
            f"task.data.root={show(get('task.data.root'))} and task.data.hub="
            f"{show(get('task.data.hub'))} are both set: give one source (the other null)"
            if get("task.data.root") is not None and get("task.data.hub") is not None
            else None
        ),
        heads_divide("task.model.embed_dim", "task.model.num_heads"),
        _vision_patches,
        shares_below_one("task.data.val_fraction", "task.data.test_fraction", when=EMBEDDED_MNIST),
        ordered_pair("task.augment.scale"),
        ordered_pair("task.augment.ratio"),
    ),
    file="task/vision.yaml",
)


# -- translation --------------------------------------------------------------------------------------
def _corpus(*names: str) -> When:
    return is_("task.data.name", *names)


#: what task.data.root holds for each corpus that reads it
TRANSLATION_ROOTS = {
    "multi30k": "the folder of the upstream Multi30k files (train.en.gz, val.en.gz, test_2016_flickr.en.gz, "
    "...); or null for the hub copy",
    "files": "the folder the task.data.files paths are read from; or null (the paths as given)",
    "bible": "the bible JSON-lines file, e.g. task.data.root=/path/to/web_rv1909_en_es.jsonl",
}
FILE_KEYS = ("train_src", "train_tgt", "val_src", "val_tgt", "test_src", "test_tgt")


def _translation_sources(get: Getter) -> str | None:
    name, root = get("task.data.name"), get("task.data.root")
    if get("task.data.src_lang") == get("task.data.tgt_lang"):
        return (
            f"task.data.src_lang and task.data.tgt_lang are both {show(get('task.data.src_lang'))}: "
            "pick two different languages"
        )
    if name == "bible" and root is None:
        return (
            "task.data.name=bible needs task.data.root=/path/to/web_rv1909_en_es.jsonl (the JSON-lines file)"
        )
    if name == "files":
        missing = [k for k in FILE_KEYS if not get(f"task.data.files.{k}")]
        if missing:
            return (
                f"task.data.name=files needs task.data.files.{missing[0]}=<path> (missing: "
                f"{', '.join(missing)}); one sentence a line, relative to task.data.root if that is set"
            )
    if name == "bible":
        both = sorted(set(get("task.data.bible.val_books")) & set(get("task.data.bible.test_books")))
        if both:
            return f"task.data.bible.val_books and test_books both hold {both}: a book is held out once"
    return None


def _translation_lengths(get: Getter) -> str | None:
    max_len, max_tokens = get("task.data.max_len"), get("task.data.max_tokens")
    if max_tokens is not None and max_tokens < max_len:
        return (
            f"task.data.max_tokens={max_tokens} is below task.data.max_len={max_len}: a batch must hold the "
            f"longest sentence; raise task.data.max_tokens to >= {max_len}"
        )
    monitor, val = get("task.monitor"), get("task.decode.val_sentences")
    if monitor != "loss" and val == 0:
        return (
            f"task.monitor={monitor} needs decoded validation sentences but task.decode.val_sentences=0; "
            "set task.decode.val_sentences > 0 or task.monitor=loss"
        )
    if get("task.model.positional") == "learned" and get("task.model.max_positions") < max_len:
        return (
            f"task.model.max_positions={get('task.model.max_positions')} is below task.data.max_len="
            f"{max_len}: the learned position table must cover every token; set it >= {max_len}"
        )
    return None


TRANSLATION = Schema(
    {
        "task._target_": Text(),
        "task.label_smoothing": Rate(),
        "task.monitor": One("bleu", "chrf", "exact_match", "loss"),
        "task.num_attention_plots": Int(0),
        "task.num_samples": Int(0),
        "task.data.name": One("numbers", "multi30k", "files", "bible"),
        "task.data.src_lang": Text(),
        "task.data.tgt_lang": Text(),
        "task.data.root": OnDisk(
            kind=lambda get: "file" if get("task.data.name") == "bible" else "folder",
            holds=lambda get: TRANSLATION_ROOTS.get(get("task.data.name"), ""),
            null=True,
            when=_corpus("multi30k", "files", "bible"),
        ),
        "task.data.numbers.max_digits": Int(1, 9, when=_corpus("numbers")),
        "task.data.numbers.train_size": Int(1, when=_corpus("numbers")),
        "task.data.numbers.val_size": Int(1, when=_corpus("numbers")),
        "task.data.numbers.test_size": Int(1, when=_corpus("numbers")),
        "task.data.numbers.date_fraction": Float(0, 1, when=_corpus("numbers")),
        "task.data.numbers.val_fraction": Fraction(when=_corpus("numbers")),
        "task.data.numbers.test_fraction": Fraction(when=_corpus("numbers")),
        "task.data.numbers.train_only_below": Int(0, when=_corpus("numbers")),
        "task.data.numbers.seed": Int(0, when=_corpus("numbers")),
        "task.data.multi30k.hub_name": Text(when=_corpus("multi30k") & absent("task.data.root")),
        **{
            f"task.data.files.{k}": File(
                "a text file of one sentence a line (relative to task.data.root when that is set)",
                empty=True,
                base="task.data.root",
                when=_corpus("files"),
            )
            for k in FILE_KEYS
        },
        "task.data.bible.val_books": List(Text(), min_length=1, when=_corpus("bible")),
        "task.data.bible.test_books": List(Text(), min_length=1, when=_corpus("bible")),
        "task.data.vocab_size": Int(300, hint="byte-level BPE needs the 256 bytes and the special tokens"),
        "task.data.shared_vocab": Flag(),
        "task.data.tokenizer": FileOrFolder(
            "the tokenizer.json a run wrote, or that run's folder; or null to train a new one", null=True
        ),
        "task.data.max_len": Int(2),
        "task.data.batch_size": Int(1, when=absent("task.data.max_tokens")),
        "task.data.max_tokens": Int(1, null=True),
        "task.data.eval_batch_size": Int(1),
        "task.data.num_workers": Int(0),
        "task.data.seed": Int(0),
        "task.model.embed_dim": Int(1),
        "task.model.num_heads": Int(1),
        "task.model.num_kv_heads": Int(1, null=True),
        "task.model.encoder_layers": Int(1),
        "task.model.decoder_layers": Int(1),
        "task.model.ffn_dim": Int(1, null=True),
        "task.model.dropout": Rate(),
        "task.model.attn_dropout": Rate(),
        "task.model.drop_path": Rate(),
        "task.model.activation": One("relu", "gelu"),
        "task.model.norm_first": Flag(),
        "task.model.qk_norm": Flag(),
        "task.model.positional": One("sinusoidal", "learned"),
        "task.model.max_positions": Int(1, when=is_("task.model.positional", "learned")),
        "task.model.share_embeddings": Flag(),
        "task.model.tie_output": Flag(),
        "task.decode.beam_size": Int(1),
        "task.decode.alpha": Float(0),
        "task.decode.lp_style": One("gnmt", "length", "none"),
        "task.decode.max_len_a": Float(0),
        "task.decode.max_len_b": Int(0),
        "task.decode.val_sentences": Int(0),
        "task.decode.static": Flag(null=True),
        "task.decode.use_cache": Flag(),
    },
    rules=(
        heads_divide("task.model.embed_dim", "task.model.num_heads"),
        _translation_sources,
        _translation_lengths,
        shares_below_one(
            "task.data.numbers.val_fraction", "task.data.numbers.test_fraction", when=_corpus("numbers")
        ),
    ),
    file="task/translation.yaml",
)


# -- audio --------------------------------------------------------------------------------------------
def _source(*names: str) -> When:
    return is_("task.data.source", *names)


#: what task.data.root holds for each source that reads it
AUDIO_ROOTS = {
    "fsdd": "the FSDD recordings folder (<digit>_<speaker>_<n>.wav), e.g. "
    "task.data.root=/path/to/data/fsdd/recordings",
    "speech_commands": "the unpacked Speech Commands folder (<word>/*.wav, validation_list.txt, "
    "testing_list.txt), e.g. task.data.root=/path/to/data/speech_commands; or task.data.root=null "
    "task.data.speech_commands.hub=google/speech_commands",
}
AUDIO_HUB = "task.data.speech_commands.hub"


def _audio_sources(get: Getter) -> str | None:
    """speech_commands reads task.data.root or a hub dataset: one of them, not both."""
    source, root, hub = get("task.data.source"), get("task.data.root"), get(AUDIO_HUB)
    if source == "speech_commands" and root is not None and hub is not None:
        return (
            f"task.data.root={show(root)} and {AUDIO_HUB}={show(hub)} are both set: give one source, the "
            "other null (task.data.root=null to load from the hub)"
        )
    if source == "speech_commands" and root is None and hub is None:
        return (
            "task.data.source='speech_commands' needs task.data.root=/path/to/speech_commands (the unpacked "
            f"folder) or {AUDIO_HUB}=google/speech_commands (needs network or a datasets cache)"
        )
    return None


def _audio_features(get: Getter) -> str | None:
    n_mels, patch_freq = get("task.features.n_mels"), get("task.model.patch_freq")
    if patch_freq is not None and n_mels % patch_freq:
        return (
            f"task.model.patch_freq={patch_freq} does not divide task.features.n_mels={n_mels}; pick it from "
            f"{_divisors(n_mels)} or null (all mel bins in one patch)"
        )
    nyquist = get("task.data.sample_rate") / 2
    f_min, f_max = get("task.features.f_min"), get("task.features.f_max")
    top = nyquist if f_max is None else f_max
    if f_max is not None and f_max > nyquist:
        return (
            f"task.features.f_max={show(f_max)} is above half the sample rate ({_num(nyquist)} Hz at "
            f"task.data.sample_rate={get('task.data.sample_rate')}): set it <= {_num(nyquist)} or null"
        )
    if f_min >= top:
        return f"task.features.f_min={show(f_min)} is not below the top frequency {_num(top)} Hz: lower it"
    if get("task.features.hop_ms") > get("task.features.win_ms"):
        return (
            f"task.features.hop_ms={show(get('task.features.hop_ms'))} is longer than task.features.win_ms="
            f"{show(get('task.features.win_ms'))}: frames would skip samples; use hop_ms <= win_ms"
        )
    return None


AUDIO = Schema(
    {
        "task._target_": Text(),
        "task.label_smoothing": Rate(),
        "task.num_plot_clips": Int(0),
        "task.data.source": One("espeak", "fsdd", "speech_commands"),
        "task.data.root": Folder(
            lambda get: AUDIO_ROOTS.get(get("task.data.source"), ""),
            null=True,
            when=_source("fsdd", "speech_commands"),
        ),
        "task.data.sample_rate": Int(1000),
        "task.data.clip_seconds": Float(0, low_open=True),
        "task.data.batch_size": Int(1),
        "task.data.eval_batch_size": Int(1, null=True),
        "task.data.seed": Int(0),
        "task.data.num_workers": Int(0),
        "task.data.pin_memory": Flag(),
        "task.data.cache_dir": Text(null=True),
        "task.data.train_limit": Int(1, null=True),
        "task.data.espeak.words": List(Text(), min_length=2, when=_source("espeak")),
        "task.data.espeak.clips_per_variant": Int(1, when=_source("espeak")),
        "task.data.espeak.accents": List(Text(), min_length=1, null=True, when=_source("espeak")),
        "task.data.espeak.rate": List(Int(80, 450), length=2, when=_source("espeak")),
        "task.data.espeak.pitch": List(Int(0, 100), length=2, when=_source("espeak")),
        "task.data.espeak.pitch_range": List(Int(0, 100), length=2, when=_source("espeak")),
        "task.data.espeak.val_fraction": Fraction(when=_source("espeak")),
        "task.data.espeak.test_fraction": Fraction(when=_source("espeak")),
        "task.data.fsdd.protocol": One("official", "speaker", when=_source("fsdd")),
        "task.data.fsdd.test_speakers": List(
            Text(), min_length=1, when=_source("fsdd") & is_("task.data.fsdd.protocol", "speaker")
        ),
        "task.data.speech_commands.words": List(Text(), min_length=1, when=_source("speech_commands")),
        "task.data.speech_commands.unknown_percentage": Float(0, when=_source("speech_commands")),
        "task.data.speech_commands.silence_percentage": Float(0, when=_source("speech_commands")),
        AUDIO_HUB: Text(
            null=True,
            pattern=HUB_NAME,
            form="a hub dataset name (owner/name), e.g. google/speech_commands",
            when=_source("speech_commands"),
        ),
        "task.data.speech_commands.hub_config": Text(
            null=True, when=_source("speech_commands") & given(AUDIO_HUB)
        ),
        "task.data.speech_commands.hub_revision": Text(
            null=True, when=_source("speech_commands") & given(AUDIO_HUB)
        ),
        "task.features.n_mels": Int(1),
        "task.features.win_ms": Float(0, low_open=True),
        "task.features.hop_ms": Float(0, low_open=True),
        "task.features.f_min": Float(0),
        "task.features.f_max": Float(0, low_open=True, null=True),
        "task.augment.shift_ms": Float(0),
        "task.augment.gain_db": Float(0),
        "task.augment.noise_prob": Float(0, 1),
        "task.augment.snr_db": List(Float(), length=2, when=positive("task.augment.noise_prob")),
        "task.augment.freq_masks": Int(0),
        "task.augment.freq_width": Int(0, when=positive("task.augment.freq_masks")),
        "task.augment.time_masks": Int(0),
        "task.augment.time_width": Int(0, when=positive("task.augment.time_masks")),
        "task.model.patch_freq": Int(1, null=True),
        "task.model.patch_time": Int(1),
        "task.model.embed_dim": Int(1),
        "task.model.depth": Int(1),
        "task.model.num_heads": Int(1),
        "task.model.mlp_ratio": Float(0, low_open=True),
        "task.model.pool": One("token", "avg"),
        "task.model.dropout": Rate(),
        "task.model.attn_dropout": Rate(),
        "task.model.drop_path": Rate(),
    },
    rules=(
        _audio_sources,
        heads_divide("task.model.embed_dim", "task.model.num_heads"),
        _audio_features,
        ordered_pair("task.augment.snr_db"),
        ordered_pair("task.data.espeak.rate"),
        ordered_pair("task.data.espeak.pitch"),
        ordered_pair("task.data.espeak.pitch_range"),
        unique("task.data.espeak.words"),
        unique("task.data.speech_commands.words"),
        shares_below_one(
            "task.data.espeak.val_fraction", "task.data.espeak.test_fraction", when=_source("espeak")
        ),
    ),
    file="task/audio.yaml",
)


# -- time series --------------------------------------------------------------------------------------
def _timeseries_windows(get: Getter) -> str | None:
    lookback, period = get("task.lookback"), get("task.period")
    patch_len, stride = get("task.model.patch_len"), get("task.model.stride")
    if period > lookback:
        return (
            f"task.period={period} is longer than task.lookback={lookback}: the seasonal-naive baseline "
            f"repeats the last period of the input; set task.period <= {lookback}"
        )
    if patch_len > lookback:
        return (
            f"task.model.patch_len={patch_len} is longer than task.lookback={lookback}: use a patch of at "
            f"most {lookback} rows or a longer look-back"
        )
    if stride > patch_len:
        return (
            f"task.model.stride={stride} is longer than task.model.patch_len={patch_len}: patches would "
            f"skip rows; set task.model.stride <= {patch_len}"
        )
    split, borders = get("task.data.split"), get("task.data.borders")
    if borders is None:
        if split is None:
            return (
                "task.data.split=null and task.data.borders=null: give one, e.g. "
                "task.data.split=[0.7,0.1,0.2]"
            )
        if abs(sum(split) - 1) > 1e-6:
            return (
                f"task.data.split={show(split)} sums to {_num(round(sum(split), 6))}: the train / val / test "
                "fractions must sum to 1, e.g. [0.7, 0.1, 0.2]"
            )
    elif not borders[0] < borders[1] < borders[2]:
        return (
            f"task.data.borders={show(borders)} must be three increasing row counts [train_end, val_end, "
            "test_end], e.g. [8640, 11520, 14400] for ETTh"
        )
    return None


DLINEAR = positive("task.dlinear.epochs")
TIMESERIES = Schema(
    {
        "task._target_": Text(),
        "task.lookback": Int(1),
        "task.horizon": Int(1),
        "task.period": Int(1),
        "task.loss": One("mse", "mae", "huber"),
        "task.num_plot_windows": Int(0),
        "task.num_plot_channels": Int(1),
        "task.dlinear.kernel_size": Int(1, when=DLINEAR),
        "task.dlinear.epochs": Int(0),
        "task.dlinear.lr": Float(0, low_open=True, when=DLINEAR),
        "task.dlinear.batch_size": Int(1, when=DLINEAR),
        "task.data.root": File(
            "a CSV with a date column and numeric channels, e.g. task.data.root=/path/to/series.csv; or null "
            "for the embedded TMY3 year",
            null=True,
        ),
        "task.data.date_column": Text(when=given("task.data.root")),
        "task.data.channels": List(Text(), min_length=1, null=True),
        "task.data.split": List(Fraction(), length=3, null=True, when=absent("task.data.borders")),
        "task.data.borders": List(Int(1), length=3, null=True),
        "task.data.batch_size": Int(1),
        "task.data.eval_batch_size": Int(1, null=True),
        "task.data.seed": Int(0),
        "task.data.num_workers": Int(0),
        "task.data.pin_memory": Flag(),
        "task.model.patch_len": Int(1),
        "task.model.stride": Int(1),
        "task.model.d_model": Int(1),
        "task.model.num_heads": Int(1),
        "task.model.num_layers": Int(1),
        "task.model.ffn_dim": Int(1),
        "task.model.dropout": Rate(),
        "task.model.attn_dropout": Rate(),
        "task.model.head_dropout": Rate(),
        "task.model.norm_first": Flag(),
        "task.model.norm": One("layer", "batch"),
        "task.model.revin": Flag(),
        "task.model.revin_affine": Flag(when=is_("task.model.revin", True)),
        "task.model.res_attention": Flag(),
    },
    rules=(
        heads_divide("task.model.d_model", "task.model.num_heads"),
        _timeseries_windows,
        unique("task.data.channels"),
    ),
    file="task/timeseries.yaml",
)


# -- recommendation -----------------------------------------------------------------------------------
def _recommendation_monitor(get: Getter) -> str | None:
    monitor, ks, negatives = get("task.monitor"), get("task.ks"), get("task.data.num_negatives")
    protocols = ["full"] + ([f"s{negatives}"] if negatives else [])
    names = [f"{p}/{m}@{k}" for p in protocols for m in ("hr", "ndcg") for k in ks]
    if monitor != "loss" and monitor not in names:
        return (
            f"task.monitor={show(monitor)} is not a reported metric: pick loss or one of {', '.join(names)}"
        )
    return None


RECOMMENDATION = Schema(
    {
        "task._target_": Text(),
        "task.loss": One("ce", "bce"),
        "task.num_train_negatives": Int(1, when=is_("task.loss", "bce")),
        "task.ks": List(Int(1), min_length=1),
        "task.exclude_seen": Flag(),
        "task.monitor": Text(),
        "task.num_attention_plots": Int(0),
        "task.data.path": File(
            "an interaction log (u.data, ratings.dat, .inter or 'user item [timestamp]' lines); or null for "
            "the embedded MovieLens-100k",
            null=True,
        ),
        "task.data.titles": File("the item titles (u.item, movies.dat, .item); or null", null=True),
        "task.data.min_interactions": Int(
            3, hint="leave-one-out needs a training, a validation and a test item"
        ),
        "task.data.k_core": Int(0),
        "task.data.max_len": Int(1),
        "task.data.all_windows": Flag(),
        "task.data.num_negatives": Int(0),
        "task.data.batch_size": Int(1),
        "task.data.eval_batch_size": Int(1),
        "task.data.num_workers": Int(0),
        "task.data.seed": Int(0),
        "task.model.embed_dim": Int(1),
        "task.model.num_layers": Int(1),
        "task.model.num_heads": Int(1),
        "task.model.ffn_dim": Int(1, null=True),
        "task.model.dropout": Rate(),
        "task.model.attn_dropout": Rate(),
        "task.model.activation": One("relu", "gelu"),
    },
    rules=(
        heads_divide("task.model.embed_dim", "task.model.num_heads"),
        _recommendation_monitor,
        unique("task.ks"),
    ),
    file="task/recommendation.yaml",
)

#: the table of each task, by its ``task._target_``
TASKS: dict[str, Schema] = {
    "tasks.vision.task.VisionTask": VISION,
    "tasks.translation.task.TranslationTask": TRANSLATION,
    "tasks.audio.task.AudioTask": AUDIO,
    "tasks.timeseries.task.TimeSeriesTask": TIMESERIES,
    "tasks.recommendation.task.RecommendationTask": RECOMMENDATION,
}


# -- checking ------------------------------------------------------------------------------------------
def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` of nested mappings (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


@lru_cache(maxsize=16)
def yaml_defaults(file: str) -> dict[str, Any]:
    """The flat, unresolved defaults of the root files and ``conf/<file>`` (a task file is global)."""
    defaults = flatten(OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False))
    trainer = OmegaConf.to_container(OmegaConf.load(CONF / "trainer" / "default.yaml"), resolve=False)
    defaults.update(flatten(trainer, "trainer."))
    if file != "config.yaml":
        defaults.update(flatten(OmegaConf.to_container(OmegaConf.load(CONF / file), resolve=False)))
    return defaults


def _resolved(cfg: DictConfig, raw: dict[str, Any]) -> dict[str, Any]:
    """Each leaf of ``raw`` resolved; one that cannot be (a missing value, a broken ``${...}``) raises."""
    out = {}
    for key, value in raw.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as err:
            why = str(err).splitlines()[0]
            raise ConfigError(
                f"{key}={show(raw[key])} cannot be resolved ({why}); set {key} to a value"
            ) from None
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def check_config(cfg: DictConfig) -> None:
    """Every setting of a composed run config against its table (:data:`ROOT`, :data:`TASKS`); raises
    :class:`ConfigError` with one line naming the key, the value and the fix. Pure Python and OmegaConf:
    well under a second, before torch is imported."""
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    raw = {k: v for k, v in raw.items() if not k.startswith("hydra.")}  # Hydra checks its own
    values = _resolved(cfg, raw)
    target = values.get("task._target_")
    task = TASKS.get(target)
    keys = dict(ROOT.keys) | (dict(task.keys) if task else {})
    file = task.file if task else "config.yaml"

    def get(key: str) -> Any:
        return values.get(key)

    for key in values:  # 1. keys no table knows
        name = key.split(".", 1)[1] if key.startswith("trainer.") else None
        if name in TRAINER_OWN:
            raise ConfigError(f"{key} is set by train.py and cannot be configured: {TRAINER_OWN[name]}")
        if key not in keys and (task is not None or not key.startswith("task.")):
            raise ConfigError(_unknown(key, keys, file))
    for key, value in values.items():  # 2. types and ranges
        spec = keys.get(key)
        if spec is not None:
            message = spec.check(key, value)
            if message is not None:
                raise ConfigError(message)
    defaults = yaml_defaults(file)
    for key, value in raw.items():  # 3. keys the chosen source or option does not read
        spec = keys.get(key)
        if spec is None or spec.when is None or spec.when.test(get):
            continue
        if key not in defaults or value != defaults[key]:
            now = ", ".join(f"{k}={show(get(k))}" for k in dict.fromkeys(spec.when.keys))
            raise ConfigError(
                f"{key}={show(values[key])} is not used with {now}: it is read only when {spec.when.text}; "
                f"drop the setting (default: {show(defaults.get(key))}) or change "
                f"{' / '.join(dict.fromkeys(spec.when.keys))}"
            )
    for rule in (*ROOT.rules, *(task.rules if task else ())):  # 4. rules across keys
        message = rule(get)
        if message is not None:
            raise ConfigError(message)
    for key, value in values.items():  # 5. files and folders that must exist (last: they look at disk)
        spec = keys.get(key)
        if isinstance(spec, OnDisk) and (spec.when is None or spec.when.test(get)):
            message = spec.missing(key, value, get, raw.get(key))
            if message is not None:
                raise ConfigError(message)


def _unknown(key: str, known: Mapping[str, Spec], file: str) -> str:
    """The message for a key no table knows: a section given a value, or the nearest known key."""
    if key.startswith("task."):
        scope = f"task={file.removeprefix('task/').removesuffix('.yaml')}"
    else:
        scope, file = "train.py", "trainer/default.yaml" if key.startswith("trainer.") else "config.yaml"
    inside = sorted(k for k in known if k.startswith(f"{key}."))
    if inside:
        return f"{key} is a group of settings, not a value: set its keys, e.g. {inside[0]}"
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    hint = f"did you mean {near[0]}?" if near else f"the settings are listed with comments in conf/{file}"
    return f"{key} is not a setting of {scope}: {hint}"
