"""Corpora, splits, tokenizer and batching of the translation task (fast, CPU)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tasks.translation.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    TokenBatchSampler,
    TranslationDataModule,
    bible_corpus,
    collate,
    decode,
    encode,
    files_corpus,
    find_run_dir,
    load_corpus,
    load_tokenizer,
    multi30k_corpus,
    number_corpus,
    number_phrase,
    number_split,
    read_parallel,
    train_tokenizer,
)
from tasks.translation.task import copy_source_scores

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MULTI30K = SHARED / "multi30k"
BIBLE = SHARED / "bible-en-es" / "web_rv1909_en_es.jsonl"


def test_number_phrases_reorder_and_compound():
    assert number_phrase(342, "en") == "three hundred and forty-two"
    assert number_phrase(342, "de") == "dreihundertzweiundvierzig"


def test_number_splits_are_disjoint_by_value():
    corpus = number_corpus("en", "de", max_digits=4, train_size=3000, val_size=100, test_size=200, seed=3)
    train_src = {s for s, _ in corpus.train}
    val_src = {s for s, _ in corpus.val}
    test_src = {s for s, _ in corpus.test}
    assert not (train_src & test_src) and not (train_src & val_src) and not (val_src & test_src)
    assert not ({t for _, t in corpus.train} & {t for _, t in corpus.test})
    assert len(test_src) == 200 and len(val_src) == 100  # distinct held-out values
    # the split is a function of the value: every test value is a test number
    values = {number_phrase(v, "en"): v for v in range(10_000)}
    assert all(number_split(values[s], seed=3, train_only_below=20) == "test" for s in test_src)
    assert all(values[s] >= 20 for s in test_src)  # the irregular atoms stay in training


def test_date_mix_is_disjoint_and_localised():
    corpus = number_corpus(
        "en", "de", max_digits=3, train_size=1500, val_size=30, test_size=60, date_fraction=0.5
    )
    months = (
        "Januar",
        "Februar",
        "März",
        "April",
        "Mai",
        "Juni",
        "Juli",
        "August",
        "September",
        "Oktober",
        "November",
        "Dezember",
    )
    dates = [t for _, t in corpus.train if any(m in t for m in months)]
    assert 500 < len(dates) < 1000
    test_dates = {s for s, t in corpus.test if any(m in t for m in months)}
    assert test_dates and not (test_dates & {s for s, _ in corpus.train})


def test_number_corpus_is_deterministic():
    a = number_corpus("en", "fr", max_digits=3, train_size=50, val_size=5, test_size=5, seed=1)
    b = number_corpus("en", "fr", max_digits=3, train_size=50, val_size=5, test_size=5, seed=1)
    assert a.train == b.train and a.test == b.test


@pytest.mark.parametrize(
    ("src", "tgt", "match"),
    [
        ("en", "xx", "unknown tgt language 'xx'"),
        ("klingon", "de", "unknown src language 'klingon'"),
        ("de", "de", "both 'de'"),
    ],
)
def test_unknown_language_pair(src, tgt, match):
    with pytest.raises(ValueError, match=match):
        number_corpus(src, tgt, train_size=10, val_size=2, test_size=2)


def test_unknown_corpus_name():
    with pytest.raises(ValueError, match="unknown corpus 'wmt'.*numbers"):
        load_corpus("wmt")
    with pytest.raises(ValueError, match="unknown corpus"):
        TranslationDataModule(name="wmt")


def _write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "".join(f"{line}\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_read_parallel_and_errors(tmp_path):
    src = _write(tmp_path / "a.en", ["a house", "a dog"])
    tgt = _write(tmp_path / "a.de.gz", ["ein Haus", "ein Hund"], gz=True)
    assert read_parallel(src, tgt) == [("a house", "ein Haus"), ("a dog", "ein Hund")]
    short = _write(tmp_path / "b.de", ["ein Haus"])
    with pytest.raises(ValueError, match=r"a\.en has 2 lines but .*b\.de has 1"):
        read_parallel(src, short)
    holes = _write(tmp_path / "c.de", ["ein Haus", "", "x"])
    with pytest.raises(ValueError, match=r"c\.de: line 2 is empty"):
        read_parallel(_write(tmp_path / "c.en", ["a", "b", "c"]), holes)
    with pytest.raises(FileNotFoundError, match="no such file: .*missing.de"):
        read_parallel(src, tmp_path / "missing.de")


def test_files_corpus_needs_every_path(tmp_path):
    with pytest.raises(ValueError, match="needs paths for val_src"):
        files_corpus("a", "b", "", "d", "e", "f")


def test_multi30k_missing_folder_and_language(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        multi30k_corpus(tmp_path / "nowhere")
    for split in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "de"):
            _write(tmp_path / f"{split}.{lang}.gz", ["x y"], gz=True)
    assert len(multi30k_corpus(tmp_path).test) == 1
    with pytest.raises(FileNotFoundError, match="no train.fr.*found for train: de, en"):
        multi30k_corpus(tmp_path, "en", "fr")


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="shared Multi30k folder not present")
def test_multi30k_upstream_sizes():
    corpus = multi30k_corpus(MULTI30K, "en", "de")
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (29_000, 1_014, 1_000)
    assert corpus.test[0] == (
        "A man in an orange hat starring at something.",
        "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    )
    copy = copy_source_scores(corpus.test)
    assert 0 < copy["bleu"] < 10 and copy["exact_match"] == 0.0


def test_bible_holds_out_whole_books(tmp_path):
    rows = [
        {"ref": f"{book} 1:{v}", "en": f"{book} verse {v}", "es": f"{book} versículo {v}"}
        for book in ("Genesis", "Ruth", "Mark", "I John")
        for v in (1, 2)
    ]
    path = tmp_path / "bible.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    corpus = bible_corpus(path, val_books=["Ruth"], test_books=["Mark", "I John"])
    assert len(corpus.train) == 2 and len(corpus.val) == 2 and len(corpus.test) == 4
    assert all("Genesis" in s for s, _ in corpus.train)
    with pytest.raises(ValueError, match="held-out books not in"):
        bible_corpus(path, val_books=["Ruth"], test_books=["Exodus"])
    with pytest.raises(ValueError, match="no language 'fr'"):
        bible_corpus(path, "en", "fr", val_books=["Ruth"], test_books=["Mark"])
    with pytest.raises(FileNotFoundError):
        bible_corpus(tmp_path / "nope.jsonl")


@pytest.mark.skipif(not BIBLE.is_file(), reason="shared bible file not present")
def test_bible_real_file():
    corpus = bible_corpus(BIBLE)
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == 31_077
    assert 1000 < len(corpus.test) < 3000 and 1000 < len(corpus.val) < 3000


def test_tokenizer_round_trip_and_specials(tmp_path):
    texts = ["drei hundert zwei und vierzig", "Größe über Straße", "a man in an orange hat"] * 20
    tok = train_tokenizer(texts, 320)
    assert [tok.token_to_id(s) for s in SPECIALS] == [PAD_ID, BOS_ID, EOS_ID, 3]
    sentences = ["Größe über Straße", "an orange man, 42 times!", "unseen: ½ 漢字 émigré"]
    ids = encode(tok, sentences)
    assert all(BOS_ID not in x and EOS_ID not in x for x in ids)
    assert decode(tok, ids) == sentences  # byte-level BPE: lossless, no <unk>
    assert decode(tok, [[BOS_ID, *ids[0], EOS_ID, PAD_ID]]) == [sentences[0]]  # specials dropped
    tok.save(str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert encode(again, sentences) == ids
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_tokenizer(texts, 100)


def test_datamodule_saves_and_reuses_tokenizer(tmp_path):
    kwargs = {
        "numbers": {"max_digits": 3, "train_size": 300, "val_size": 5, "test_size": 5},
        "vocab_size": 300,
    }
    dm = TranslationDataModule(output_dir=str(tmp_path), **kwargs)
    dm.prepare()
    assert (tmp_path / "tokenizer.json").is_file()
    vocab = dm.src_tokenizer.get_vocab()
    (tmp_path / "ckpts").mkdir()
    assert find_run_dir(tmp_path / "ckpts" / "best.ckpt") == tmp_path
    # resuming: the tokenizer beside the checkpoint is reused even with another vocab size
    dm2 = TranslationDataModule(
        output_dir=str(tmp_path / "new"),
        resume_from=str(tmp_path / "ckpts" / "best.ckpt"),
        **{**kwargs, "vocab_size": 400},
    )
    dm2.prepare()
    assert dm2.src_tokenizer.get_vocab() == vocab and (tmp_path / "new" / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json beside"):
        find_run_dir(tmp_path / "new" / "a" / "b" / "c" / "z.ckpt")
    sep = TranslationDataModule(shared_vocab=False, output_dir=str(tmp_path / "sep"), **kwargs)
    sep.prepare()
    assert sep.src_tokenizer is not sep.tgt_tokenizer
    assert (tmp_path / "sep" / "tokenizer_src.json").is_file() and (
        tmp_path / "sep" / "tokenizer_tgt.json"
    ).is_file()


def test_collate_shifts_targets():
    items = [
        {"index": 0, "src_ids": [5, 6, 7], "tgt_ids": [8, 9], "src": "a", "ref": "b", "split": "train"},
        {"index": 1, "src_ids": [5], "tgt_ids": [8, 9, 10], "src": "c", "ref": "d", "split": "train"},
    ]
    b = collate(items)
    assert b["src"].tolist() == [[5, 6, 7], [5, PAD_ID, PAD_ID]]
    assert b["tgt_in"].tolist() == [[BOS_ID, 8, 9, PAD_ID], [BOS_ID, 8, 9, 10]]
    assert b["tgt_out"].tolist() == [[8, 9, EOS_ID, PAD_ID], [8, 9, 10, EOS_ID]]
    assert b["ref_text"] == ["b", "d"] and b["split"] == "train"


def test_token_batch_sampler_covers_everything_within_budget():
    lengths = [(i * 7) % 23 + 1 for i in range(500)]
    sampler = TokenBatchSampler(lengths, max_tokens=64, seed=1)
    epoch1, epoch2 = list(sampler), list(sampler)
    for batches in (epoch1, epoch2):
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(max(lengths[i] for i in b) * len(b) <= 64 for b in batches)
    assert epoch1 != epoch2  # reshuffled per epoch
    with pytest.raises(ValueError, match="max_tokens=10 is below the longest"):
        TokenBatchSampler(lengths, max_tokens=10)


def test_load_corpus_sections_and_root(tmp_path):
    for split in ("train", "val", "test"):
        _write(tmp_path / f"{split}.src", ["a b", "c d"])
        _write(tmp_path / f"{split}.tgt", ["x y", "z w"])
    files = {
        f"{split}_{side}": f"{split}.{side}" for split in ("train", "val", "test") for side in ("src", "tgt")
    }
    corpus = load_corpus("files", root=str(tmp_path), files=files, src_lang="en", tgt_lang="xx")
    assert corpus.train == [("a b", "x y"), ("c d", "z w")] and corpus.tgt_lang == "xx"
    with pytest.raises(ValueError, match="needs task.data.root"):
        load_corpus("bible", src_lang="en", tgt_lang="es")
    numbers = load_corpus(
        "numbers",
        src_lang="en",
        tgt_lang="fr",
        numbers={"max_digits": 3, "train_size": 5, "val_size": 2, "test_size": 2},
    )
    assert numbers.tgt_lang == "fr" and len(numbers.train) == 5


def test_a_root_the_embedded_corpus_does_not_read_is_an_error(tmp_path):
    """``task=translation task.data.root=/nope`` used to train on the numbers and ignore the root."""
    with pytest.raises(ValueError, match=r"task.data.root=/nope is not read by task.data.name=numbers"):
        TranslationDataModule(name="numbers", root="/nope")
    assert not list(tmp_path.iterdir())
