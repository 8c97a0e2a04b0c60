"""Interaction logs, the leave-one-out protocol and the loaders of ``task=recommendation``.

Sources (``task.data.path``):

* ``null`` (embedded default, offline): MovieLens-100k as shipped inside the ``recbole`` 1.2.1 wheel
  (``recbole/dataset_example/ml-100k/ml-100k.inter``: 100,000 timestamped ratings of 943 users on 1,682
  movies; titles in ``ml-100k.item``). The files are read without importing recbole; install the wheel as
  data only: ``pip install --no-deps recbole==1.2.1``.
* a text file, one interaction a line: MovieLens ``u.data`` (``user item rating timestamp``, tab),
  ``ratings.dat`` (``user::item::rating::timestamp``), recbole ``.inter`` (tab, with a header) or a generic
  ``user item [timestamp]`` file (whitespace- or comma-separated). Two fields: ``user item`` (file order is
  time order); three: ``user item timestamp``; four or more: MovieLens' ``user item rating timestamp``.
  A first line whose first field starts with a letter is a header.

Protocol: each user's interactions are sorted by time (stable: ties keep file order); optionally a k-core
filter; users with fewer than ``min_interactions`` (>= 3) are dropped; item ids are remapped to ``1..N``
(``0`` is padding) in ascending order of the raw ids. Leave-one-out: the last item is the test target, the
second-to-last the validation target, the rest is the training sequence (the test history includes the
validation item). Every rating counts as an interaction (implicit feedback).
"""

from __future__ import annotations

import importlib.util
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.common.distributed import eval_sampler, train_sampler

PAD = 0  #: padding item id (real items are 1..num_items)
RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"


def embedded_dir() -> Path:
    """The folder of MovieLens-100k inside the installed ``recbole`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("recbole")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if folder is None or not (folder / "ml-100k.inter").is_file():
        raise FileNotFoundError(
            "the embedded MovieLens-100k (recbole/dataset_example/ml-100k/ml-100k.inter) is not installed; "
            f"run `{RECBOLE_INSTALL}` (data only), or set task.data.path=/path/to/u.data"
        )
    return folder


# ----------------------------------------------------------------------------------------------- parsing
def _splitter(line: str) -> str | None:
    """The field separator of a data line: ``::``, ``,`` or whitespace (``None``)."""
    if "::" in line:
        return "::"
    if "," in line:
        return ","
    return None


def read_interactions(path: str | Path) -> tuple[list[int], list[int], list[float] | None]:
    """``(users, items, timestamps)`` of a log file, one interaction a line (see the module docstring).

    Returns:
        Raw integer user and item ids, and float timestamps (``None`` for a two-field ``user item`` file).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed line or a non-integer id (with the line number), or no interactions.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"task.data.path={path} {state}; pass a u.data / ratings.dat / 'user item [timestamp]' "
            "file, or path=null for the embedded MovieLens-100k"
        )
    users: list[int] = []
    items: list[int] = []
    times: list[float] = []
    sep: str | None = ""
    num_fields = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if sep == "":
                sep = _splitter(line)
                fields = line.split(sep)
                if number == 1 and fields[0][:1].isalpha():  # a header: user_id:token, userId, ...
                    sep = ""
                    continue
                num_fields = len(fields)
                if num_fields < 2:
                    raise ValueError(
                        f"{path}: line {number} has one field ({line[:60]!r}); expected 'user item "
                        "[timestamp]' or MovieLens 'user item rating timestamp'"
                    )
            fields = line.split(sep)
            if len(fields) != num_fields:
                raise ValueError(
                    f"{path}: line {number} has {len(fields)} fields, earlier lines {num_fields} "
                    f"({line[:60]!r}); fix or remove the line"
                )
            try:
                user, item = int(fields[0]), int(fields[1])
            except ValueError:
                raise ValueError(
                    f"{path}: line {number}: user / item ids must be integers, got {fields[0]!r} / "
                    f"{fields[1]!r}; map string ids to integers first"
                ) from None
            users.append(user)
            items.append(item)
            if num_fields >= 3:
                stamp = fields[3 if num_fields >= 4 else 2]
                try:
                    times.append(float(stamp))
                except ValueError:
                    raise ValueError(
                        f"{path}: line {number}: timestamp {stamp!r} is not a number; fix the line"
                    ) from None
    if not users:
        raise ValueError(f"{path} holds no interactions; pass a non-empty log file")
    return users, items, (times if num_fields >= 3 else None)


def read_titles(path: str | Path) -> dict[int, str]:
    """``{raw item id: title}`` from recbole ``.item`` (tab, header), MovieLens ``u.item`` (``|``) or
    ``movies.dat`` (``::``): the first field is the id, the second the title. Unreadable lines are skipped."""
    titles: dict[int, str] = {}
    with open(Path(path).expanduser(), encoding="latin-1") as f:
        for line in f:
            sep = "::" if "::" in line else "|" if "|" in line else "\t"
            fields = line.rstrip("\n").split(sep)
            if len(fields) >= 2 and fields[0].strip().isdigit():
                titles[int(fields[0])] = fields[1].strip()
    return titles


# ---------------------------------------------------------------------------------------------- protocol
@dataclass
class Sequences:
    """Users' time-ordered item sequences with remapped ids.

    Attributes:
        user_ids: raw user id of each sequence.
        item_ids: raw item id of item ``i`` at index ``i - 1`` (items are ``1..num_items``, 0 is padding).
        seqs: one list of item indices per user, oldest first.
    """

    user_ids: list[int]
    item_ids: list[int]
    seqs: list[list[int]]

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def _k_core(by_user: dict[int, list[tuple[float, int]]], k: int) -> dict[int, list[tuple[float, int]]]:
    """Drop users and items with fewer than ``k`` interactions until none is left to drop."""
    while True:
        counts = Counter(item for events in by_user.values() for _, item in events)
        kept = {
            u: [e for e in events if counts[e[1]] >= k] for u, events in by_user.items() if len(events) >= k
        }
        kept = {u: events for u, events in kept.items() if len(events) >= k}
        if sum(map(len, kept.values())) == sum(map(len, by_user.values())):
            return kept
        by_user = kept


def build_sequences(
    users: list[int],
    items: list[int],
    times: list[float] | None,
    min_interactions: int = 3,
    k_core: int = 0,
) -> Sequences:
    """Sort each user's interactions by time (stable for ties), filter, and remap item ids to ``1..N``.

    Args:
        users, items, times: parallel raw lists (``times=None``: the list order is the time order).
        min_interactions: users with fewer interactions are dropped (>= 3: leave-one-out needs a training
            item, a validation and a test target).
        k_core: if > 0, first keep only users and items with at least ``k_core`` interactions (iterated).
    """
    if min_interactions < 3:
        raise ValueError(f"task.data.min_interactions={min_interactions}; leave-one-out needs >= 3 per user")
    by_user: dict[int, list[tuple[float, int]]] = {}
    for i, (user, item) in enumerate(zip(users, items, strict=True)):
        by_user.setdefault(user, []).append((times[i] if times is not None else 0.0, item))
    for events in by_user.values():
        events.sort(key=lambda e: e[0])  # stable: equal timestamps keep the file order
    if k_core > 0:
        by_user = _k_core(by_user, k_core)
    by_user = {u: e for u, e in by_user.items() if len(e) >= min_interactions}
    if not by_user:
        raise ValueError(
            f"no user has >= {min_interactions} interactions (k_core={k_core}); lower "
            "task.data.min_interactions / k_core or pass a larger log"
        )
    item_ids = sorted({item for events in by_user.values() for _, item in events})
    index = {raw: i + 1 for i, raw in enumerate(item_ids)}
    user_ids = sorted(by_user)
    seqs = [[index[item] for _, item in by_user[u]] for u in user_ids]
    return Sequences(user_ids, item_ids, seqs)


def load_sequences(path: str | None, min_interactions: int = 3, k_core: int = 0) -> Sequences:
    """``build_sequences`` of the log at ``path`` (``None``: the embedded MovieLens-100k)."""
    file = embedded_dir() / "ml-100k.inter" if path is None else Path(path)
    return build_sequences(*read_interactions(file), min_interactions=min_interactions, k_core=k_core)


def titles_path(path: str | None, titles: str | None) -> Path | None:
    """The titles file: ``titles`` if given, the embedded ``ml-100k.item`` for the embedded log, else None."""
    if titles is not None:
        return Path(titles).expanduser()
    return embedded_dir() / "ml-100k.item" if path is None else None


def sample_negatives(seqs: list[list[int]], num_items: int, num_negatives: int, seed: int) -> torch.Tensor:
    """Uniform negatives for the sampled protocol: items the user never interacted with (any split),
    drawn with replacement (as SASRec does) from a seeded generator.

    Returns:
        ``(num_users, num_negatives)`` int64.
    """
    rng = random.Random(seed)
    out = torch.zeros(len(seqs), num_negatives, dtype=torch.long)
    for u, seq in enumerate(seqs):
        seen = set(seq)
        if len(seen) >= num_items:
            raise ValueError(
                f"user index {u} interacted with every item; the sampled protocol needs unseen items "
                "(set task.data.num_negatives=0 to skip it)"
            )
        row = []
        while len(row) < num_negatives:
            item = rng.randint(1, num_items)
            if item not in seen:
                row.append(item)
        out[u] = torch.tensor(row, dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------- datasets
def _pad_right(rows: list[list[int]], width: int | None = None) -> torch.Tensor:
    """Right-pad lists of ids with ``PAD``: ``(len(rows), width or longest)`` int64."""
    width = width or max(1, max(map(len, rows)))
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class TrainSequences(Dataset):
    """Training sequences: a user's items before the validation target, cut from the end into windows of
    ``max_len + 1`` items that overlap by one (``all_windows``; else only the last window), so every
    training transition is a target once per epoch. Inputs are items ``0..n-2`` of a window, targets
    ``1..n-1``. Users with a single training item have no transition and are left out."""

    def __init__(self, seqs: list[list[int]], max_len: int, all_windows: bool = True) -> None:
        self.seqs = []
        for seq in seqs:
            train = seq[:-2]
            stop = len(train)
            while stop >= 2:
                self.seqs.append(train[max(0, stop - max_len - 1) : stop])
                stop = stop - max_len if all_windows else 0

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> list[int]:
        return self.seqs[i]


def collate_train(batch: list[list[int]]) -> dict[str, torch.Tensor]:
    """``{"items": (B, L), "targets": (B, L)}``, right-padded with ``PAD`` (a ``PAD`` target is ignored)."""
    return {"items": _pad_right([s[:-1] for s in batch]), "targets": _pad_right([s[1:] for s in batch])}


class EvalTargets(Dataset):
    """One held-out target per user: ``split="val"`` the second-to-last item, ``"test"`` the last."""

    def __init__(
        self, seqs: list[list[int]], split: str, max_len: int, negatives: torch.Tensor | None
    ) -> None:
        cut = {"val": 2, "test": 1}[split]
        self.histories = [s[:-cut] for s in seqs]
        self.targets = [s[-cut] for s in seqs]
        self.max_len = max_len
        self.negatives = negatives

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "user": i,
            "history": self.histories[i],
            "target": self.targets[i],
            "negatives": None if self.negatives is None else self.negatives[i],
        }


def collate_eval(batch: list[dict[str, Any]], max_len: int) -> dict[str, torch.Tensor]:
    """``items`` (B, L) the last ``max_len`` history items right-padded, ``lengths`` (B,), ``target`` (B,),
    ``seen`` (B, S) every history item (for exclusion) right-padded with ``PAD``, ``user`` (B,) and
    ``negatives`` (B, num_negatives) when the sampled protocol is on."""
    windows = [b["history"][-max_len:] for b in batch]
    out = {
        "items": _pad_right(windows),
        "lengths": torch.tensor([len(w) for w in windows], dtype=torch.long),
        "target": torch.tensor([b["target"] for b in batch], dtype=torch.long),
        "seen": _pad_right([b["history"] for b in batch]),
        "user": torch.tensor([b["user"] for b in batch], dtype=torch.long),
    }
    if batch[0]["negatives"] is not None:
        out["negatives"] = torch.stack([b["negatives"] for b in batch])
    return out


class RecommendationDataModule(L.LightningDataModule):
    """Train / val / test loaders of the leave-one-out protocol.

    Args:
        path: the log file (see the module docstring); ``None``: the embedded MovieLens-100k.
        titles: item titles file (``.item`` / ``u.item`` / ``movies.dat``); default: the embedded one for the
            embedded log, none otherwise.
        min_interactions: users with fewer interactions are dropped (>= 3).
        k_core: keep only users and items with >= ``k_core`` interactions first (0: off).
        max_len: the model sees a user's last ``max_len`` items.
        all_windows: train on every window of ``max_len + 1`` items of a long training sequence (else only
            its last window, as SASRec does).
        num_negatives: negatives per user of the sampled protocol (0: report full ranking only).
        batch_size: training users per batch (per device under DDP).
        eval_batch_size: users per val / test batch.
        num_workers: DataLoader workers.
        seed: seeds the sampled negatives (val: ``seed``, test: ``seed + 1``) and the shuffling.
    """

    def __init__(
        self,
        path: str | None = None,
        titles: str | None = None,
        min_interactions: int = 3,
        k_core: int = 0,
        max_len: int = 200,
        all_windows: bool = True,
        num_negatives: int = 100,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if path is not None and not Path(path).expanduser().is_file():
            read_interactions(path)  # raises the one-line FileNotFoundError
        if titles is not None and not Path(titles).expanduser().is_file():
            raise FileNotFoundError(
                f"task.data.titles={titles} is not a file; pass the item titles (u.item, movies.dat, .item) "
                "or titles=null"
            )
        for key, value, low in (
            ("max_len", max_len, 1),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("num_negatives", num_negatives, 0),
            ("k_core", k_core, 0),
        ):
            if int(value) < low:
                raise ValueError(f"task.data.{key} must be >= {low}, got {value}")
        self.path, self.titles = path, titles
        self.min_interactions, self.k_core = min_interactions, k_core
        self.max_len, self.all_windows, self.num_negatives = max_len, all_windows, num_negatives
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.data: Sequences | None = None
        self.negatives: dict[str, torch.Tensor | None] = {}

    @property
    def source(self) -> str:
        return self.path or "embedded MovieLens-100k (recbole 1.2.1 wheel)"

    def setup(self, stage: str | None = None) -> None:
        """Read, sort, filter and split once (idempotent)."""
        if self.data is not None:
            return
        self.data = load_sequences(self.path, self.min_interactions, self.k_core)
        for offset, split in enumerate(("val", "test")):
            self.negatives[split] = (
                sample_negatives(self.data.seqs, self.data.num_items, self.num_negatives, self.seed + offset)
                if self.num_negatives
                else None
            )

    @property
    def num_items(self) -> int:
        self.setup()
        return self.data.num_items

    def eval_dataset(self, split: str) -> EvalTargets:
        self.setup()
        return EvalTargets(self.data.seqs, split, self.max_len, self.negatives[split])

    def collate(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_eval(batch, self.max_len)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        dataset = TrainSequences(self.data.seqs, self.max_len, self.all_windows)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=train_sampler(dataset, self.seed),  # shuffled by seed and epoch; a shard under DDP
            collate_fn=collate_train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.eval_dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            sampler=eval_sampler(dataset),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def stats(self) -> dict[str, float]:
        """Users, items, interactions and density of the filtered log."""
        self.setup()
        n = sum(map(len, self.data.seqs))
        users, items = len(self.data.seqs), self.data.num_items
        return {"users": users, "items": items, "interactions": n, "density": n / max(1, users * items)}
