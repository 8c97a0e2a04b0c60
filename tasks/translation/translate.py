"""Translate sentences with a trained checkpoint.

    python -m tasks.translation.translate ckpt=outputs/translation/<run>/checkpoints/best.ckpt "forty-two"
    python -m tasks.translation.translate ckpt=<path> --file sentences.txt [beam=5] [alpha=0.6] [greedy]
    python -m tasks.translation.translate ckpt=<path> device=cuda static=false "forty-two"   # eager steps

The tokenizer (``tokenizer.json``) and model settings (``translation.json``) are read from the run folder the
checkpoint sits in (its folder, parent or grandparent). Options are ``key=value`` words: ``ckpt`` (required),
``beam`` (beam width; 1 = greedy), ``alpha`` (length-penalty exponent), ``lp`` (gnmt, length, none),
``max_len_a`` / ``max_len_b``, ``device`` (cpu, cuda), ``batch`` (sentences per batch), ``static`` (true or
false: fixed-shape decoding steps, each one CUDA graph replay on a GPU, the same hypotheses as the eager
steps; default: on a GPU); ``--file PATH`` reads one sentence a line (``-`` for standard input). Translations
go to standard output, one a line: line i is the translation of input line i (a blank input line gives a
blank line).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tasks.common import cli
from tasks.common.checkpoint import load_checkpoint

from .data import PAD_ID, decode, encode, find_run_dir, load_tokenizer, pad_batch
from .model import Seq2SeqTransformer
from .search import translate_ids
from .task import MODEL_FILE


class Translator:
    """A trained model plus its tokenizer(s), loaded from a checkpoint and its run folder.

    Args:
        ckpt: a Lightning checkpoint (``state_dict`` with the model under ``model.``) or a plain state dict.
        run_dir: folder with ``tokenizer.json`` and ``translation.json``; default: found beside ``ckpt``.
        device: where to run.
    """

    def __init__(self, ckpt: str | Path, run_dir: str | Path | None = None, device: str = "cpu") -> None:
        ckpt = Path(ckpt).expanduser()
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"checkpoint {ckpt} does not exist; pass ckpt=<run>/checkpoints/best.ckpt."
            )
        run = Path(run_dir) if run_dir else find_run_dir(ckpt)
        info_path = run / MODEL_FILE
        if not info_path.is_file():
            raise FileNotFoundError(
                f"{info_path} is missing; it is written by the translation task at training."
            )
        self.info: dict[str, Any] = json.loads(info_path.read_text())
        files = self.info["tokenizers"]
        if "shared" in files:
            self.src_tokenizer = self.tgt_tokenizer = load_tokenizer(run / files["shared"])
        else:
            self.src_tokenizer = load_tokenizer(run / files["src"])
            self.tgt_tokenizer = load_tokenizer(run / files["tgt"])
        cfg = dict(self.info["model"])
        self.model = Seq2SeqTransformer(cfg.pop("src_vocab_size"), cfg.pop("tgt_vocab_size"), **cfg)
        state = load_checkpoint(ckpt, task="translation")  # weights_only: no code runs from the file
        self.model.load_state_dict(_model_state(state, self.model))
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.max_len = int(self.info.get("max_len", 256))
        self.decode_cfg = dict(self.info.get("decode", {}))

    @torch.no_grad()
    def __call__(
        self,
        sentences: Sequence[str],
        *,
        beam_size: int | None = None,
        batch_size: int = 64,
        **overrides: Any,
    ) -> list[str]:
        """Detokenized translations of ``sentences`` (beam search, settings from training unless given)."""
        cfg = {**self.decode_cfg, **{k: v for k, v in overrides.items() if v is not None}}
        beam = int(beam_size if beam_size is not None else cfg.get("beam_size", 5))
        out: list[str] = []
        for start in range(0, len(sentences), batch_size):
            chunk = [s.strip() for s in sentences[start : start + batch_size]]
            ids = encode(self.src_tokenizer, chunk, self.max_len)
            src = pad_batch([x or [PAD_ID] for x in ids]).to(self.device)
            hyps = translate_ids(
                self.model,
                src,
                beam_size=beam,
                alpha=float(cfg.get("alpha", 0.6)),
                lp_style=str(cfg.get("lp_style", "gnmt")),
                max_len_a=float(cfg.get("max_len_a", 1.5)),
                max_len_b=int(cfg.get("max_len_b", 10)),
                static=cfg.get("static"),
            )
            out += decode(self.tgt_tokenizer, hyps)
        return out


def _model_state(state: dict[str, Any], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights from a Lightning checkpoint (``state_dict`` keys ``model.*``) or a state dict."""
    sd = state.get("state_dict", state)
    keys = set(model.state_dict())
    for prefix in ("model.", "model._orig_mod.", ""):
        sub = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if keys <= set(sub):
            return {k: sub[k] for k in keys}
    raise ValueError(
        f"the checkpoint does not hold this model's weights (e.g. {sorted(keys)[:3]}); was it saved "
        "by the translation task with the same translation.json?"
    )


USAGE = __doc__ or ""
#: the ``key=value`` options of the command line
OPTIONS = ("ckpt", "beam", "alpha", "lp", "max_len_a", "max_len_b", "device", "batch", "run_dir", "static")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: parse ``key=value`` options, sentences and ``--file``; print translations."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    opts: dict[str, str] = {}
    sentences: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--file":
            if i + 1 >= len(args):
                raise SystemExit("error: --file needs a path (or - for standard input)")
            path = args[i + 1]
            lines = sys.stdin.read().splitlines() if path == "-" else _read(path)
            sentences += lines  # blank lines stay: output line i is the translation of input line i
            i += 2
            continue
        key = arg.split("=", 1)[0]
        if arg == "greedy":
            opts["beam"] = "1"
        elif "=" in arg and key in OPTIONS:
            opts[key] = arg.split("=", 1)[1]
        elif re.fullmatch(r"[A-Za-z_]\w*=\S*", arg):  # looks like an option, not a sentence: a typo?
            raise SystemExit(
                f"error: unknown option {arg!r}; known options: {', '.join(OPTIONS)}. "
                "To translate such a text, put it in a file and pass --file PATH."
            )
        else:
            sentences.append(arg)
        i += 1
    if "ckpt" not in opts:
        raise SystemExit("error: give the checkpoint as ckpt=<run>/checkpoints/best.ckpt")
    if not sentences:
        raise SystemExit("error: no sentences; pass them as arguments or with --file PATH")
    batch = _number(opts, "batch", int)
    if batch is not None and batch < 1:
        raise SystemExit(f"error: batch={batch} must be >= 1 (sentences per batch)")
    dev = cli.device(opts.get("device", "cpu"))  # an unknown name or an absent GPU: one line
    translator = Translator(opts["ckpt"], opts.get("run_dir"), device=str(dev))
    text = [s for s in sentences if s.strip()]
    hyps = translator(
        text,
        beam_size=_number(opts, "beam", int),
        batch_size=batch or 64,
        alpha=_number(opts, "alpha", float),
        lp_style=opts.get("lp"),
        max_len_a=_number(opts, "max_len_a", float),
        max_len_b=_number(opts, "max_len_b", int),
        static=_flag(opts, "static"),
    )
    translated = iter(hyps)
    for sentence in sentences:  # one output line per input line; a blank line stays blank
        print(next(translated) if sentence.strip() else "")
    return 0


def _number(opts: dict[str, str], key: str, kind: type) -> Any:
    """``opts[key]`` as an int or float (``None`` when absent); a bad value exits naming the option."""
    if key not in opts:
        return None
    try:
        return kind(opts[key])
    except ValueError:
        kind_name = "an integer" if kind is int else "a number"
        raise SystemExit(f"error: {key}={opts[key]!r} is not {kind_name}") from None


def _flag(opts: dict[str, str], key: str) -> bool | None:
    """``opts[key]`` as a bool (``None`` when absent); a bad value exits naming the option."""
    if key not in opts:
        return None
    value = opts[key].lower()
    if value not in ("true", "false"):
        raise SystemExit(f"error: {key}={opts[key]!r} is not true or false")
    return value == "true"


def _read(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: --file {path}: no such file")
    data = p.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SystemExit(
            f"error: --file {path}: line {line} is not UTF-8 text; convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
