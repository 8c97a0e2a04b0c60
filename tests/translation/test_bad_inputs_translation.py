"""Bad text data for ``task=translation``: each case fails with one line naming the file (and the line,
for text) and what was expected, before a tokenizer is trained or saved, and changes nothing on disk."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tasks.translation.data import TranslationDataModule
from tests.app.test_bad_inputs import expect_error

PAIRS = ["one", "two", "three"], ["eins", "zwei", "drei"]


def _files(d: Path, src: list[str] | bytes, tgt: list[str] | bytes, suffix: str = "") -> dict:
    """Aligned train / val / test files under ``d`` (the training pair from ``src`` / ``tgt``)."""
    paths = {}
    for split in ("train", "val", "test"):
        for side, lines in (("src", src), ("tgt", tgt)):
            if split != "train":
                lines = PAIRS[0] if side == "src" else PAIRS[1]
            path = d / f"{split}.{side}{suffix}"
            data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
            path.write_bytes(
                gzip.compress(data) if suffix == ".gz" and not isinstance(lines, bytes) else data
            )
            paths[f"{split}_{side}"] = str(path)
    return {"name": "files", "files": paths}


def latin1(d: Path) -> dict:
    return _files(d, PAIRS[0], "eins\nzwei\nM\xfcnchen\n".encode("latin-1"))


def plain_text_named_gz(d: Path) -> dict:
    return _files(d, b"one\ntwo\nthree\n", b"eins\nzwei\ndrei\n", suffix=".gz")


def truncated_gz(d: Path) -> dict:
    cut = gzip.compress(("eins\nzwei\ndrei\n" * 200).encode())[:40]
    return _files(d, PAIRS[0] * 200, cut, suffix=".gz")


def empty_line(d: Path) -> dict:
    return _files(d, ["one", "", "three"], PAIRS[1])


def misaligned(d: Path) -> dict:
    return _files(d, PAIRS[0], PAIRS[1][:2])


def missing_file(d: Path) -> dict:
    spec = _files(d, *PAIRS)
    Path(spec["files"]["val_tgt"]).unlink()
    return spec


def _bible(d: Path, lines: list[str] | bytes) -> dict:
    path = d / "bible.jsonl"
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return {"name": "bible", "root": str(path), "tgt_lang": "es"}


VERSE = json.dumps({"ref": "Genesis 1:1", "en": "In the beginning", "es": "En el principio"})


def bible_bad_json(d: Path) -> dict:
    return _bible(d, [VERSE, '{"ref": "Genesis 1:2", "en": "And the earth",'])


def bible_no_ref(d: Path) -> dict:
    return _bible(d, [VERSE, json.dumps({"en": "And the earth", "es": "Y la tierra"})])


def bible_latin1(d: Path) -> dict:
    return _bible(d, (VERSE + '\n{"ref": "Genesis 1:2", "en": "x", "es": "se\xf1or"}\n').encode("latin-1"))


def multi30k_file_root(d: Path) -> dict:
    (d / "multi30k.tar").write_bytes(b"archive")
    return {"name": "multi30k", "root": str(d / "multi30k.tar")}


def bad_tokenizer(d: Path) -> dict:
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    return {**_files(d, *PAIRS), "tokenizer": str(d / "tokenizer.json")}


CASES = [
    pytest.param(latin1, ValueError, ["train.tgt: line 3 is not UTF-8 text", "iconv"], id="latin1-text"),
    pytest.param(
        plain_text_named_gz,
        ValueError,
        ["train.src.gz cannot be read", "gzip-compressed"],
        id="plain-text-named-gz",
    ),
    pytest.param(truncated_gz, ValueError, ["train.tgt.gz cannot be read"], id="truncated-gz"),
    pytest.param(empty_line, ValueError, ["train.src: line 2 is empty"], id="empty-line"),
    pytest.param(
        misaligned,
        ValueError,
        ["line counts differ", "train.src has 3 lines", "train.tgt has 2"],
        id="misaligned-files",
    ),
    pytest.param(missing_file, FileNotFoundError, ["no such file", "val.tgt"], id="missing-file"),
    pytest.param(
        bible_bad_json, ValueError, ["bible.jsonl: line 2 is not a JSON object"], id="bible-bad-json"
    ),
    pytest.param(
        bible_no_ref, ValueError, ["bible.jsonl: line 2 is not a JSON object with a ref"], id="bible-no-ref"
    ),
    pytest.param(bible_latin1, ValueError, ["bible.jsonl: line 2 is not UTF-8 text"], id="bible-latin1"),
    pytest.param(
        multi30k_file_root,
        FileNotFoundError,
        ["Multi30k folder", "multi30k.tar is a file"],
        id="multi30k-root-is-a-file",
    ),
    pytest.param(
        bad_tokenizer,
        ValueError,
        ["tokenizer.json is not a tokenizer file", "task.data.tokenizer"],
        id="broken-tokenizer",
    ),
]


@pytest.mark.parametrize(("make", "error", "fragments"), CASES)
def test_bad_text_data_is_named(tmp_path: Path, make, error, fragments):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    spec = make(data)
    dm = TranslationDataModule(**spec, vocab_size=300, output_dir=run)
    expect_error(dm.prepare, error, *fragments, watch=[data, run])
    assert not list(run.iterdir()), "a failed corpus wrote a tokenizer"
