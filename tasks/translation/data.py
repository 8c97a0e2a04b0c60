"""Parallel corpora, the BPE tokenizer and the data module of the translation task.

Corpora (``data.name``):

* ``numbers`` (default, embedded, offline, unlimited): number phrases written out by ``num2words`` for a
  language pair (``"three hundred and forty-two"`` -> ``"dreihundertzweiundvierzig"``), optionally mixed with
  dates written by ``babel`` (``"March 14, 2023"`` -> ``"14. März 2023"``). Numbers (and dates) are split
  by *value* with a salted hash, so a test number never occurs in training.
* ``multi30k``: the upstream files (``train.{lang}.gz``, ``val.*``, ``test_2016_flickr.*``) in a local
  folder ``root``; with ``root: null`` the hub copy ``bentrevett/multi30k`` (needs network).
* ``files``: any aligned text files, one sentence a line (``.gz`` is read transparently).
* ``bible``: the verse-aligned JSON-lines file (``ref``/``en``/``es``); whole books are held out for
  validation and test.

Tokenizer: byte-level BPE from Hugging Face ``tokenizers`` trained on the training split only, shared by
source and target by default (``shared_vocab: false`` trains one per side), saved as ``tokenizer.json``
(or ``tokenizer_src.json`` / ``tokenizer_tgt.json``) into the run folder and reused from there.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tasks.common.distributed import shard_batches, train_sampler
from tasks.common.hub import hub_failure

#: special tokens, in id order: every tokenizer of this task has them at ids 0..3.
SPECIALS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

CORPORA = ("numbers", "multi30k", "files", "bible")

Pair = tuple[str, str]


@dataclass
class Corpus:
    """Sentence pairs for the three splits (``(source, target)`` strings) and their languages."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    src_lang: str
    tgt_lang: str
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Embedded corpus: numbers (and dates) written out in words
# --------------------------------------------------------------------------------------------------------


def number_languages() -> list[str]:
    """Language codes ``num2words`` can write numbers in (e.g. ``en``, ``de``, ``fr``, ``es``)."""
    import num2words

    return sorted(num2words.CONVERTER_CLASSES)


def _check_number_lang(lang: str, role: str) -> None:
    langs = number_languages()
    if lang not in langs:
        raise ValueError(
            f"unknown {role} language {lang!r} for the numbers corpus; num2words knows: {', '.join(langs)}. "
            f"Set task.data.{role}_lang to one of them."
        )


@lru_cache(maxsize=1 << 18)
def number_phrase(value: int, lang: str) -> str:
    """``value`` written out in words in ``lang`` (``342, "de"`` -> ``"dreihundertzweiundvierzig"``)."""
    from num2words import num2words

    return num2words(value, lang=lang)


def date_phrase(date: datetime.date, lang: str) -> str:
    """``date`` in the long format of locale ``lang`` (``"14. März 2023"`` for ``de``)."""
    from babel.dates import format_date

    return format_date(date, format="long", locale=lang)


def _split_of(value: int, salt: int, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split of a value by a salted hash: ``"train"``, ``"val"`` or ``"test"``."""
    h = ((value + 1) * 0x9E3779B1 + salt * 0x85EBCA77) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x45D9F3B) & 0xFFFFFFFF
    h ^= h >> 16
    u = h / 2**32
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def number_split(
    value: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    train_only_below: int = 0,
) -> str:
    """The split a number belongs to; numbers below ``train_only_below`` (the irregular atoms) are train."""
    if value < train_only_below:
        return "train"
    return _split_of(value, seed, val_fraction, test_fraction)


_DATE_START = datetime.date(1900, 1, 1).toordinal()
_DATE_END = datetime.date(2099, 12, 31).toordinal()


def number_corpus(
    src_lang: str = "en",
    tgt_lang: str = "de",
    *,
    max_digits: int = 6,
    train_size: int = 50_000,
    val_size: int = 500,
    test_size: int = 1000,
    date_fraction: float = 0.0,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    train_only_below: int = 20,
    seed: int = 0,
) -> Corpus:
    """Number phrases (and optionally dates) for a language pair, split by value.

    The number of digits is drawn uniformly from ``1..max_digits`` and then a value with that many digits,
    so short and long numbers are equally common. A value's split comes from a salted hash of the value,
    so the three splits are disjoint by construction; values below ``train_only_below`` (``0..19``, the
    irregular words) always go to training. Val and test hold distinct values.

    Args:
        src_lang, tgt_lang: ``num2words`` language codes (``en``, ``de``, ``fr``, ``es``, ...).
        max_digits: largest number of digits (6 -> values up to 999,999).
        train_size, val_size, test_size: number of pairs per split (train may repeat values).
        date_fraction: share of pairs that are dates (1900-2099) in the long format of each locale.
        val_fraction, test_fraction: share of the value space held out for val / test.
        train_only_below: values below this are always in training.
        seed: salts the split hash and seeds the sampling.
    """
    _check_number_lang(src_lang, "src")
    _check_number_lang(tgt_lang, "tgt")
    if src_lang == tgt_lang:
        raise ValueError(f"src_lang and tgt_lang are both {src_lang!r}; pick two different languages.")
    if not 1 <= max_digits <= 9:
        raise ValueError(f"max_digits must be in 1..9, got {max_digits}.")
    if not 0.0 <= date_fraction <= 1.0:
        raise ValueError(f"date_fraction must be in [0, 1], got {date_fraction}.")
    if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 < val_fraction, test_fraction and a sum < 1; got {val_fraction}, {test_fraction}."
        )
    if date_fraction > 0:
        from babel import Locale, UnknownLocaleError

        for lang in (src_lang, tgt_lang):
            try:
                Locale.parse(lang)
            except (UnknownLocaleError, ValueError) as err:
                raise ValueError(
                    f"babel has no locale {lang!r} for dates; set task.data.date_fraction=0."
                ) from err

    rng = random.Random(seed)
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}

    def draw_number(split: str) -> int:
        while True:
            digits = rng.randint(1, max_digits)
            lo = 0 if digits == 1 else 10 ** (digits - 1)
            value = rng.randint(lo, 10**digits - 1)
            if number_split(value, seed=seed, train_only_below=train_only_below, **fractions) == split:
                return value

    def draw_date(split: str) -> datetime.date:
        while True:
            ordinal = rng.randint(_DATE_START, _DATE_END)
            if _split_of(ordinal, seed + 7919, **fractions) == split:
                return datetime.date.fromordinal(ordinal)

    def make(split: str, size: int, distinct: bool) -> list[Pair]:
        pairs: list[Pair] = []
        seen: set[Any] = set()
        attempts = 0
        while len(pairs) < size:
            attempts += 1
            if attempts > 50 * size + 1000:
                raise ValueError(
                    f"cannot draw {size} distinct {split} values with max_digits={max_digits}; "
                    "lower the split size or raise max_digits."
                )
            if date_fraction > 0 and rng.random() < date_fraction:
                item: Any = draw_date(split)
                pair = (date_phrase(item, src_lang), date_phrase(item, tgt_lang))
            else:
                item = draw_number(split)
                pair = (number_phrase(item, src_lang), number_phrase(item, tgt_lang))
            if distinct:
                if item in seen:
                    continue
                seen.add(item)
            pairs.append(pair)
        return pairs

    test = make("test", test_size, distinct=True)
    val = make("val", val_size, distinct=True)
    train = make("train", train_size, distinct=False)
    return Corpus(
        train,
        val,
        test,
        src_lang,
        tgt_lang,
        name="numbers",
        info={"max_digits": max_digits, "date_fraction": date_fraction},
    )


# --------------------------------------------------------------------------------------------------------
# Text files, Multi30k, the Bible
# --------------------------------------------------------------------------------------------------------


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _not_utf8(path: Path, err: UnicodeDecodeError) -> ValueError:
    """The error for a text file that is not UTF-8, naming its first such line."""
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    try:
        raw.decode("utf-8")
        number: int | str = "?"
    except UnicodeDecodeError as whole:  # its offset counts from the file's start (err's from a chunk's)
        number = raw[: whole.start].count(b"\n") + 1
    return ValueError(
        f"{path}: line {number} is not UTF-8 text ({err.reason}); save the file as UTF-8, e.g. "
        f"iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}"
    )


def read_lines(path: str | os.PathLike) -> list[str]:
    """Stripped lines of a UTF-8 text file (``.gz`` read as such); empty lines raise with their number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path} (check task.data paths / root).")
    try:
        with _open_text(path) as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    except (OSError, EOFError, zlib.error) as err:  # a .gz name on plain text, a truncated .gz
        raise ValueError(
            f"{path} cannot be read ({type(err).__name__}: {err}); a .gz file must be gzip-compressed text "
            "(a truncated download: fetch it again)"
        ) from None
    while lines and lines[-1] == "":  # a trailing newline at the very end is not an empty sentence
        lines.pop()
    for i, line in enumerate(lines, start=1):
        if not line:
            raise ValueError(
                f"{path}: line {i} is empty; every line must hold one sentence "
                "(remove it from both files of the pair)."
            )
    return lines


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> list[Pair]:
    """Aligned sentence pairs from two text files with one sentence a line.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a line is empty, or the files have different numbers of lines (both named).
    """
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise ValueError(
            f"line counts differ: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "the files must be aligned one sentence pair per line."
        )
    return list(zip(src, tgt, strict=True))


MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def _find_split_file(root: Path, stem: str, lang: str) -> Path:
    for name in (f"{stem}.{lang}.gz", f"{stem}.{lang}"):
        if (root / name).is_file():
            return root / name
    have = sorted({p.name.split(".")[1] for p in root.glob(f"{stem}.*") if len(p.name.split(".")) > 1})
    raise FileNotFoundError(
        f"{root} has no {stem}.{lang}(.gz); languages found for {stem}: "
        f"{', '.join(have) or 'none'}. Check task.data.root and src_lang/tgt_lang."
    )


def multi30k_corpus(
    root: str | os.PathLike | None,
    src_lang: str = "en",
    tgt_lang: str = "de",
    *,
    hub_name: str = "bentrevett/multi30k",
) -> Corpus:
    """Multi30k task 1 (29,000 / 1,014 / 1,000 pairs: train / val / test_2016_flickr).

    Args:
        root: folder with the upstream files ``{train,val,test_2016_flickr}.{lang}.gz``; ``None`` loads
            ``hub_name`` with ``datasets`` (needs network; the hub copy has en and de only).
    """
    if src_lang == tgt_lang:
        raise ValueError(f"src_lang and tgt_lang are both {src_lang!r}; pick two different languages.")
    if root is None:
        return _multi30k_from_hub(hub_name, src_lang, tgt_lang)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Multi30k folder {root} {'is a file' if root.exists() else 'does not exist'}; set "
            "task.data.root to the folder with train.en.gz, val.en.gz, test_2016_flickr.en.gz, ... "
            "(or root=null for the hub)."
        )
    splits = {
        split: read_parallel(_find_split_file(root, stem, src_lang), _find_split_file(root, stem, tgt_lang))
        for split, stem in MULTI30K_SPLITS.items()
    }
    return Corpus(splits["train"], splits["val"], splits["test"], src_lang, tgt_lang, name="multi30k")


def _multi30k_from_hub(hub_name: str, src_lang: str, tgt_lang: str) -> Corpus:
    try:
        import datasets

        ds = datasets.load_dataset(hub_name)
    except Exception as err:  # offline, unreachable, an unknown name: one line saying what to do instead
        local = "task.data.root=/path/to/multi30k (the upstream .gz files; experiment=translation_multi30k)"
        raise ValueError(hub_failure("task.data.multi30k.hub_name", hub_name, err, local)) from err
    out = {}
    for split, hub_split in (("train", "train"), ("val", "validation"), ("test", "test")):
        cols = ds[hub_split].column_names
        for lang in (src_lang, tgt_lang):
            if lang not in cols:
                raise ValueError(f"{hub_name} has columns {cols}; no {lang!r}. Use a local root for fr/cs.")
        out[split] = [
            (s.strip(), t.strip())
            for s, t in zip(ds[hub_split][src_lang], ds[hub_split][tgt_lang], strict=True)
        ]
    return Corpus(out["train"], out["val"], out["test"], src_lang, tgt_lang, name="multi30k")


def files_corpus(
    train_src: str = "",
    train_tgt: str = "",
    val_src: str = "",
    val_tgt: str = "",
    test_src: str = "",
    test_tgt: str = "",
    src_lang: str = "src",
    tgt_lang: str = "tgt",
) -> Corpus:
    """Any three pairs of aligned text files (one sentence a line) as train / val / test."""
    paths = {
        "train_src": train_src,
        "train_tgt": train_tgt,
        "val_src": val_src,
        "val_tgt": val_tgt,
        "test_src": test_src,
        "test_tgt": test_tgt,
    }
    missing = [key for key, value in paths.items() if not value]
    if missing:
        raise ValueError(f"data.name=files needs paths for {', '.join(missing)} (task.data.<key>=<path>).")
    return Corpus(
        read_parallel(train_src, train_tgt),
        read_parallel(val_src, val_tgt),
        read_parallel(test_src, test_tgt),
        src_lang,
        tgt_lang,
        name="files",
    )


BIBLE_VAL_BOOKS = ("Judges", "Mark", "Ephesians")
BIBLE_TEST_BOOKS = ("Ezra", "Daniel", "John", "Romans")


def bible_corpus(
    path: str | os.PathLike,
    src_lang: str = "en",
    tgt_lang: str = "es",
    val_books: Sequence[str] = BIBLE_VAL_BOOKS,
    test_books: Sequence[str] = BIBLE_TEST_BOOKS,
) -> Corpus:
    """Verse pairs from a JSON-lines file with ``ref`` (``"Genesis 1:1"``) and one key per language.

    Whole books are held out (``val_books``, ``test_books``) so no chapter is split across train and test.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}; set task.data.root to the bible JSON-lines file.")
    if set(val_books) & set(test_books):
        raise ValueError(f"books in both val and test: {sorted(set(val_books) & set(test_books))}.")
    splits: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    books: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    row = err.msg
                if not isinstance(row, dict) or "ref" not in row:
                    raise ValueError(
                        f"{path}: line {i} is not a JSON object with a ref ({str(row)[:60]}); each line "
                        f'holds one verse: {{"ref": "Genesis 1:1", "{src_lang}": ..., "{tgt_lang}": ...}}'
                    )
                for lang in (src_lang, tgt_lang):
                    if lang not in row:
                        raise ValueError(f"{path}: line {i} has keys {sorted(row)}; no language {lang!r}.")
                    if not str(row[lang]).strip():
                        raise ValueError(f"{path}: line {i} ({row.get('ref')}) has an empty {lang!r} verse.")
                book = str(row["ref"]).rsplit(" ", 1)[0]
                books.add(book)
                split = "test" if book in test_books else "val" if book in val_books else "train"
                splits[split].append((row[src_lang].strip(), row[tgt_lang].strip()))
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from None
    unknown = (set(val_books) | set(test_books)) - books
    if unknown:
        raise ValueError(
            f"held-out books not in {path}: {sorted(unknown)}; books are named like {sorted(books)[:5]}."
        )
    return Corpus(splits["train"], splits["val"], splits["test"], src_lang, tgt_lang, name="bible")


def load_corpus(
    name: str = "numbers",
    *,
    src_lang: str = "en",
    tgt_lang: str = "de",
    root: str | os.PathLike | None = None,
    numbers: dict[str, Any] | None = None,
    multi30k: dict[str, Any] | None = None,
    files: dict[str, Any] | None = None,
    bible: dict[str, Any] | None = None,
) -> Corpus:
    """Build a corpus by name (``numbers``, ``multi30k``, ``files``, ``bible``).

    Args:
        src_lang, tgt_lang: the language pair (codes as the corpus names them: ``en``, ``de``, ``es``, ...).
        root: ``multi30k``: folder of the upstream files (``None``: the hub); ``bible``: the JSON-lines
            file; ``files``: folder that relative paths are resolved against.
        numbers, multi30k, files, bible: keyword arguments of :func:`number_corpus`,
            :func:`multi30k_corpus` (``hub_name``), :func:`files_corpus` (the six paths) and
            :func:`bible_corpus` (``val_books``, ``test_books``); only the named corpus' section is used.
    """
    if name == "numbers":
        return number_corpus(src_lang, tgt_lang, **(numbers or {}))
    if name == "multi30k":
        return multi30k_corpus(root, src_lang, tgt_lang, **(multi30k or {}))
    if name == "files":
        paths = dict(files or {})
        if root is not None:
            paths = {k: str(Path(root).expanduser() / v) if v else v for k, v in paths.items()}
        return files_corpus(**paths, src_lang=src_lang, tgt_lang=tgt_lang)
    if name == "bible":
        if root is None:
            raise ValueError("data.name=bible needs task.data.root=<path to the bible JSON-lines file>.")
        return bible_corpus(root, src_lang, tgt_lang, **(bible or {}))
    raise ValueError(f"unknown corpus {name!r}; pick task.data.name from {', '.join(CORPORA)}.")


# --------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------


def train_tokenizer(texts: Sequence[str], vocab_size: int, *, min_frequency: int = 2):
    """A byte-level BPE tokenizer trained on ``texts``; special tokens get ids 0..3 (pad, bos, eos, unk).

    Byte-level pre-tokenization makes decoding lossless (any UTF-8 text round-trips) without unknowns.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} is below the 256 byte symbols + specials; use >= 300.")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    check_specials(tok)
    return tok


def check_specials(tok) -> None:
    """Raise unless ``tok`` has pad/bos/eos/unk at ids 0..3 (the ids the model and the search assume)."""
    for expected, name in enumerate(SPECIALS):
        got = tok.token_to_id(name)
        if got != expected:
            raise ValueError(
                f"tokenizer has {name} at id {got}, expected {expected}; retrain it with this task."
            )


def load_tokenizer(path: str | os.PathLike):
    """Load a ``tokenizer.json`` saved by this task."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer at {path}.")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception for a bad file
        raise ValueError(
            f"{path} is not a tokenizer file ({str(err).splitlines()[0][:80]}); pass the tokenizer.json a "
            "run wrote (or its run folder) as task.data.tokenizer, or drop it to train a new one"
        ) from None
    check_specials(tok)
    return tok


def encode(tok, texts: Sequence[str], max_len: int | None = None) -> list[list[int]]:
    """Token ids of each text (no specials), cut to ``max_len``."""
    ids = [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    return [x[:max_len] for x in ids] if max_len else ids


def decode(tok, ids: Sequence[Sequence[int]]) -> list[str]:
    """Detokenized strings; specials (pad/bos/eos) are dropped and the prefix space stripped."""
    return [s.strip() for s in tok.decode_batch([list(x) for x in ids], skip_special_tokens=True)]


# --------------------------------------------------------------------------------------------------------
# Dataset, batching, data module
# --------------------------------------------------------------------------------------------------------


class PairDataset(Dataset):
    """Tokenized pairs plus their raw strings (kept for BLEU on detokenized text)."""

    def __init__(self, pairs: Sequence[Pair], src_ids: list[list[int]], tgt_ids: list[list[int]], split: str):
        self.pairs, self.src_ids, self.tgt_ids, self.split = list(pairs), src_ids, tgt_ids, split

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "index": i,
            "src_ids": self.src_ids[i],
            "tgt_ids": self.tgt_ids[i],
            "src": self.pairs[i][0],
            "ref": self.pairs[i][1],
            "split": self.split,
        }

    def num_tokens(self, i: int) -> int:
        return max(len(self.src_ids[i]), len(self.tgt_ids[i]) + 1)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """(batch, max_len) LongTensor of right-padded id lists."""
    out = torch.full((len(seqs), max(1, max(len(s) for s in seqs))), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch dict: ``src`` (B, S), ``tgt_in`` = bos+y (B, T), ``tgt_out`` = y+eos (B, T), pads = PAD_ID;
    ``index`` (B,), plus the raw ``src_text`` / ``ref_text`` lists and the ``split`` name."""
    return {
        "src": pad_batch([it["src_ids"] for it in items]),
        "tgt_in": pad_batch([[BOS_ID, *it["tgt_ids"]] for it in items]),
        "tgt_out": pad_batch([[*it["tgt_ids"], EOS_ID] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "src_text": [it["src"] for it in items],
        "ref_text": [it["ref"] for it in items],
        "split": items[0]["split"],
    }


class TokenBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches of at most ``max_tokens`` padded tokens (per side), reshuffled per epoch.

    Indices are shuffled, cut into pools of ``pool_batches`` batches, sorted by length inside a pool (less
    padding), batched greedily, and the batches shuffled. Deterministic for a given seed and epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 100,
    ) -> None:
        if max_tokens < max(lengths, default=1):
            raise ValueError(
                f"max_tokens={max_tokens} is below the longest sentence ({max(lengths)} tokens); "
                "raise task.data.max_tokens or lower max_len."
            )
        self.lengths, self.max_tokens, self.shuffle, self.seed = list(lengths), max_tokens, shuffle, seed
        self.pool = pool_batches * max(1, max_tokens // max(1, int(sum(lengths) / max(1, len(lengths)))))
        self.epoch = 0
        self._batches = None if shuffle else self._make(random.Random(seed))

    def _make(self, rng: random.Random) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=self.lengths.__getitem__)
            batch: list[int] = []
            longest = 0
            for i in pool:
                longest_new = max(longest, self.lengths[i])
                if batch and longest_new * (len(batch) + 1) > self.max_tokens:
                    batches.append(batch)
                    batch, longest_new = [], self.lengths[i]
                batch.append(i)
                longest = longest_new
            if batch:
                batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _epoch_batches(self) -> list[list[int]]:
        """This epoch's batches; under DDP this process's equal share of them (same seed on every process)."""
        if self._batches is not None:
            batches = self._batches
        else:
            batches = self._make(random.Random(self.seed * 100_003 + self.epoch))
        return shard_batches(batches, even=True)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each epoch's start: the order depends on the seed and the epoch alone,
        so a resumed run goes on with the order of a run that was never stopped."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()
        if self._batches is None:
            self.epoch += 1  # outside Lightning: the next iteration is the next epoch
        yield from batches

    def __len__(self) -> int:
        return len(self._epoch_batches())


class TranslationDataModule(L.LightningDataModule):
    """Corpus -> BPE tokenizer (trained on train, saved in the run folder) -> padded batches.

    Args:
        name: corpus name (``numbers``, ``multi30k``, ``files``, ``bible``).
        src_lang, tgt_lang: the language pair.
        root: where the corpus lies (Multi30k folder, bible file, base folder of ``files``).
        numbers, multi30k, files, bible: per-corpus settings; only the section of ``name`` is used.
        vocab_size: BPE vocabulary size (per tokenizer).
        shared_vocab: one tokenizer for both sides (default) or one per side.
        resume_from: a checkpoint being resumed (``RunContext.resume_from``): its run folder's tokenizer
            is reused, so token ids match the trained weights.
        tokenizer: folder or file of a saved tokenizer to reuse (resume, fine-tune); ``None`` -> the one in
            ``output_dir`` if present, else train a new one.
        output_dir: where the tokenizer is saved (the run folder, ``RunContext.run_dir``; ``None``: not
            saved).
        max_len: sentences are cut to this many tokens.
        batch_size: sentences per batch (used when ``max_tokens`` is ``None``).
        max_tokens: if set, training batches hold up to this many padded tokens per side (length-bucketed).
        eval_batch_size: sentences per validation / test batch.
        num_workers: DataLoader workers.
        seed: shuffling seed.
    """

    def __init__(
        self,
        name: str = "numbers",
        *,
        src_lang: str = "en",
        tgt_lang: str = "de",
        root: str | None = None,
        numbers: dict[str, Any] | None = None,
        multi30k: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        bible: dict[str, Any] | None = None,
        vocab_size: int = 1000,
        shared_vocab: bool = True,
        tokenizer: str | None = None,
        resume_from: str | os.PathLike | None = None,
        output_dir: str | os.PathLike | None = None,
        max_len: int = 256,
        batch_size: int = 128,
        max_tokens: int | None = None,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if name not in CORPORA:
            raise ValueError(f"unknown corpus {name!r}; pick task.data.name from {', '.join(CORPORA)}.")
        if batch_size < 1 or eval_batch_size < 1:
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {eval_batch_size}.")
        if name == "numbers" and root is not None:
            raise ValueError(
                f"task.data.root={root} is not read by task.data.name=numbers (the embedded corpus); "
                "drop it, or pick task.data.name=multi30k, files or bible."
            )
        self.name = name
        self.corpus_kwargs = {
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
            "root": root,
            "numbers": numbers,
            "multi30k": multi30k,
            "files": files,
            "bible": bible,
        }
        self.vocab_size, self.shared_vocab = vocab_size, shared_vocab
        if tokenizer is None and resume_from:
            tokenizer = str(find_run_dir(resume_from))
        self.tokenizer_path = tokenizer
        self.output_dir = Path(output_dir) if output_dir else None
        self.max_len, self.batch_size, self.max_tokens = max_len, batch_size, max_tokens
        self.eval_batch_size, self.num_workers, self.seed = eval_batch_size, num_workers, seed
        self.corpus: Corpus | None = None
        self.src_tokenizer = self.tgt_tokenizer = None
        self.datasets: dict[str, PairDataset] = {}

    # -- preparation -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Load the corpus, get the tokenizer(s) and tokenize every split (idempotent)."""
        if self.datasets:
            return
        self.corpus = load_corpus(self.name, **self.corpus_kwargs)
        for split in ("train", "val", "test"):
            if not getattr(self.corpus, split):
                raise ValueError(f"the {split} split of corpus {self.name!r} is empty.")
        self._get_tokenizers()
        for split in ("train", "val", "test"):
            pairs = getattr(self.corpus, split)
            src = encode(self.src_tokenizer, [p[0] for p in pairs], self.max_len)
            tgt = encode(self.tgt_tokenizer, [p[1] for p in pairs], self.max_len - 1)
            self.datasets[split] = PairDataset(pairs, src, tgt, split)

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def tokenizer_files(self, folder: Path) -> dict[str, Path]:
        """The tokenizer file names inside a run folder (one shared, or one per side)."""
        if self.shared_vocab:
            return {"shared": folder / "tokenizer.json"}
        return {"src": folder / "tokenizer_src.json", "tgt": folder / "tokenizer_tgt.json"}

    def _get_tokenizers(self) -> None:
        source = Path(self.tokenizer_path) if self.tokenizer_path else None
        if source is not None and source.is_file():  # a tokenizer.json file: shared vocabulary
            if not self.shared_vocab:
                raise ValueError(
                    f"task.data.tokenizer={source} is one file but shared_vocab=false; give the folder "
                    "holding tokenizer_src.json and tokenizer_tgt.json."
                )
            files = {"shared": source}
        elif source is not None:
            files = self.tokenizer_files(source)
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"task.data.tokenizer={source}: missing {', '.join(missing)}.")
        elif self.output_dir is not None and all(
            p.is_file() for p in self.tokenizer_files(self.output_dir).values()
        ):
            files = self.tokenizer_files(self.output_dir)  # resuming in the same run folder
        else:
            files = {}
        if files:
            loaded = {key: load_tokenizer(path) for key, path in files.items()}
        else:
            assert self.corpus is not None
            train = self.corpus.train
            if self.shared_vocab:
                loaded = {"shared": train_tokenizer([t for p in train for t in p], self.vocab_size)}
            else:
                loaded = {
                    "src": train_tokenizer([p[0] for p in train], self.vocab_size),
                    "tgt": train_tokenizer([p[1] for p in train], self.vocab_size),
                }
        if self.shared_vocab:
            self.src_tokenizer = self.tgt_tokenizer = loaded["shared"]
        else:
            self.src_tokenizer, self.tgt_tokenizer = loaded["src"], loaded["tgt"]
        if self.output_dir is not None:
            self.save_tokenizers(self.output_dir)

    def save_tokenizers(self, folder: str | os.PathLike) -> dict[str, Path]:
        """Write the tokenizer(s) into ``folder``; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = self.tokenizer_files(folder)
        toks = (
            {"shared": self.src_tokenizer}
            if self.shared_vocab
            else {"src": self.src_tokenizer, "tgt": self.tgt_tokenizer}
        )
        for key, path in files.items():
            toks[key].save(str(path))
        return files

    @property
    def src_vocab_size(self) -> int:
        self.prepare()
        return self.src_tokenizer.get_vocab_size()

    @property
    def tgt_vocab_size(self) -> int:
        self.prepare()
        return self.tgt_tokenizer.get_vocab_size()

    # -- loaders -----------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        self.prepare()
        ds = self.datasets["train"]
        if self.max_tokens:
            sampler = TokenBatchSampler(
                [ds.num_tokens(i) for i in range(len(ds))], self.max_tokens, seed=self.seed
            )
            return DataLoader(
                ds,
                batch_sampler=sampler,
                collate_fn=collate,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        sampler = train_sampler(ds, self.seed)  # order by seed and epoch; DDP: this process's shard
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=len(sampler) > self.batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        self.prepare()
        ds = self.datasets[split]
        # sorted by length so that padding (and beam-search work) stays small; the order is fixed
        order = sorted(range(len(ds)), key=ds.num_tokens)
        order = shard_batches(order, even=False)  # DDP: every sentence once across the processes, in order
        batches = [order[i : i + self.eval_batch_size] for i in range(0, len(order), self.eval_batch_size)]
        return DataLoader(ds, batch_sampler=batches, collate_fn=collate, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def find_run_dir(path: str | os.PathLike) -> Path:
    """The run folder of a checkpoint: the first of its folder, parent or grandparent that holds a
    ``tokenizer.json`` (or ``tokenizer_src.json``). Raises ``FileNotFoundError`` naming where it looked."""
    path = Path(path).expanduser()
    start = path if path.is_dir() else path.parent
    candidates = [start, start.parent, start.parent.parent]
    for folder in candidates:
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_src.json").is_file():
            return folder
    raise FileNotFoundError(
        f"no tokenizer.json beside {path} (looked in {', '.join(map(str, candidates))}); pass the run folder "
        "that holds the tokenizer saved with the checkpoint."
    )
