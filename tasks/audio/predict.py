"""Recognise spoken words in WAV files with a trained checkpoint.

    python -m tasks.audio.predict ckpt=outputs/audio/<run>/checkpoints/best.ckpt clip.wav [more.wav ...]
    python -m tasks.audio.predict ckpt=<path> clip.wav top=5 device=cuda

The model card ``audio.json`` (model settings, features with their statistics, class names, clip length) is
read from the checkpoint's run folder (the checkpoint's folder or its parent; or ``card=<file>``); the weights
are read with ``weights_only=True``. Each file is read with ``soundfile``, mixed to mono, resampled to the
model's rate and cut to its clip length exactly as in training (the loudest window, or centred padding). One
line per file: ``clip.wav: yes 0.982  no 0.011  up 0.004``. Options are ``key=value`` words: ``ckpt``
(required), ``card``, ``top`` (how many words, default 3), ``device`` (cpu, cuda).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tasks.audio.data import load_clip
from tasks.audio.features import LogMel
from tasks.audio.model import SpectrogramTransformer
from tasks.audio.task import MODEL_FILE
from tasks.common import cli, load_checkpoint, read_model_card


class Recognizer:
    """A trained model with its feature front end, loaded from a checkpoint and its model card.

    Args:
        ckpt: a ``train.py`` checkpoint of ``task=audio``.
        card: the ``audio.json`` model card (default: found beside the checkpoint).
        device: where to run.
    """

    def __init__(self, ckpt: str | Path, card: str | Path | None = None, device: str = "cpu") -> None:
        self.device = cli.device(device)  # a bad name fails before the checkpoint is read
        state = load_checkpoint(ckpt, task="audio")
        ckpt = Path(ckpt).expanduser()
        info, card_path = read_model_card(ckpt, MODEL_FILE, "audio", card)
        self.classes: list[str] = list(info["classes"])
        self.clip_samples = int(info["clip_samples"])
        self.frontend = LogMel.from_card(info["features"]).to(self.device)
        self.model = SpectrogramTransformer(**info["model"])
        cli.load_weights(self.model, state, ckpt, card_path)
        self.model.to(self.device).eval()

    @property
    def sample_rate(self) -> int:
        return self.frontend.config["sample_rate"]

    @torch.no_grad()
    def probabilities(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Class probabilities (len(paths), num_classes) of WAV files (any rate; resampled)."""
        waves = torch.stack([load_clip(Path(p), self.sample_rate, self.clip_samples, None) for p in paths])
        logits = self.model(self.frontend(waves.to(self.device)))
        return logits.float().softmax(-1).cpu()

    def top(self, paths: Sequence[str | Path], k: int = 3) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely words per file, with probabilities."""
        probs = self.probabilities(paths)
        values, idx = probs.topk(min(k, probs.shape[1]), dim=1)
        return [
            [(self.classes[int(i)], float(v)) for v, i in zip(vs, ids, strict=True)]
            for vs, ids in zip(values, idx, strict=True)
        ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``ckpt=... [card=...] [top=3] [device=cpu] file.wav ...``; bad input raises
    ``SystemExit("error: ...")``, which ``python -m`` prints as one line with exit status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    opts = {
        k: v for k, _, v in (a.partition("=") for a in args if a.split("=", 1)[0] in _OPTIONS and "=" in a)
    }
    files = [a for a in args if not ("=" in a and a.split("=", 1)[0] in _OPTIONS)]
    unknown = [f for f in files if "=" in f and not Path(f).exists()]  # a mistyped option, not a file name
    if unknown:
        raise SystemExit(
            f"error: unknown option {unknown[0]!r}; options are {', '.join(o + '=' for o in _OPTIONS)}"
        )
    if "ckpt" not in opts:
        raise SystemExit("error: give the checkpoint as ckpt=<run>/checkpoints/best.ckpt")
    if not files:
        raise SystemExit("error: no WAV files; pass them as arguments: clip.wav [more.wav ...]")
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]}: no such file")
    top = opts.get("top", "3")
    if not top.isdigit() or int(top) < 1:
        raise SystemExit(f"error: top={top!r} is not a whole number >= 1; pass e.g. top=3")
    try:
        recognizer = Recognizer(opts["ckpt"], opts.get("card"), device=opts.get("device", "cpu"))
        results = recognizer.top(files, int(top))
    except cli.USER_ERRORS as err:
        if not cli.is_user_error(err):  # a library's error, or HYDRA_FULL_ERROR=1: keep the traceback
            raise
        raise SystemExit(f"error: {err}") from err
    for path, best in zip(files, results, strict=True):
        print(f"{path}: " + "  ".join(f"{word} {p:.3f}" for word, p in best))
    return 0


_OPTIONS = ("ckpt", "card", "top", "device")

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
