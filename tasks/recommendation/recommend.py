"""Recommend the next items with a trained checkpoint.

    python -m tasks.recommendation.recommend ckpt=<run>/checkpoints/best.ckpt items=12,7,301 k=10
    python -m tasks.recommendation.recommend ckpt=<run>/checkpoints/best.ckpt user=196 k=10

``items``: a history of raw item ids (as in the data file), oldest first. ``user``: a user of the training
log; the history is that user's whole log (training, validation and test items), read again from the data
the run used. Options: ``k`` (default 10), ``exclude_seen`` (``true``: the history's items are not
recommended again; default: as in training), ``device`` (cpu, cuda). The model card
``recommendation.json`` is read from the run folder the checkpoint sits in. Prints one line per item: rank,
item id, probability (softmax over the catalogue) and title where the data has titles.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tasks.common import cli, load_checkpoint, read_model_card

from .data import PAD, load_sequences, read_titles, titles_path
from .model import SASRec
from .task import MODEL_FILE

OPTIONS = ("ckpt", "items", "user", "k", "exclude_seen", "device")


class Recommender:
    """A trained SASRec and its catalogue, loaded from a checkpoint (``weights_only=True``) and the model
    card beside it.

    Args:
        ckpt: ``<run>/checkpoints/best.ckpt`` (or ``last.ckpt``) written by ``train.py task=recommendation``.
        device: where to run.
    """

    def __init__(self, ckpt: str | Path, device: str = "cpu") -> None:
        self.device = cli.device(device)  # a bad name fails before the checkpoint is read
        ckpt = Path(ckpt).expanduser()
        state = load_checkpoint(ckpt, task="recommendation")
        self.card, card_path = read_model_card(ckpt, MODEL_FILE, "recommendation")
        self.model = SASRec(**self.card["model"])
        cli.load_weights(self.model, state, ckpt, card_path)
        self.model.to(self.device).eval()
        self.item_ids: list[int] = list(self.card["item_ids"])
        self.index = {raw: i + 1 for i, raw in enumerate(self.item_ids)}
        data = self.card["data"]
        tpath = titles_path(data["path"], data["titles"])
        self.titles = read_titles(tpath) if tpath is not None and tpath.is_file() else {}

    def user_history(self, user: int) -> list[int]:
        """The raw item ids of ``user``'s whole log, oldest first (the data is read again)."""
        data = self.card["data"]
        seqs = load_sequences(data["path"], data["min_interactions"], data["k_core"])
        if seqs.item_ids != self.item_ids:
            raise ValueError(
                f"the data at {data['path'] or 'the embedded MovieLens-100k'} no longer matches the "
                "checkpoint's catalogue; pass the history with items=... instead"
            )
        try:
            row = seqs.user_ids.index(user)
        except ValueError:
            raise ValueError(
                f"user={user} is not in the training log ({len(seqs.user_ids)} users, ids "
                f"{seqs.user_ids[0]}..{seqs.user_ids[-1]}); pass a known id or items=..."
            ) from None
        return [self.item_ids[i - 1] for i in seqs.seqs[row]]

    @torch.no_grad()
    def recommend(
        self, history: Sequence[int], k: int = 10, exclude_seen: bool | None = None
    ) -> list[tuple[int, float, str]]:
        """Top-``k`` next items after ``history`` (raw ids, oldest first): ``(item id, probability,
        title)``, best first."""
        if not history:
            raise ValueError("the history is empty; pass at least one item id (items=12,7,301) or user=<id>")
        unknown = [i for i in history if i not in self.index]
        if unknown:
            raise ValueError(
                f"item {unknown[0]} is not in the checkpoint's catalogue ({len(self.item_ids)} items, ids "
                f"{self.item_ids[0]}..{self.item_ids[-1]}); pass item ids of the training data"
            )
        if k < 1:
            raise ValueError(f"k={k}; pass k >= 1")
        ids = [self.index[i] for i in history][-self.model.max_len :]
        items = torch.tensor([ids], device=self.device)
        scores = self.model.score_last(items, torch.tensor([len(ids)], device=self.device))[0].float()
        scores[PAD] = float("-inf")
        if self.card.get("exclude_seen", True) if exclude_seen is None else exclude_seen:
            scores[torch.tensor([self.index[i] for i in history], device=self.device)] = float("-inf")
        probs = scores.softmax(-1)
        top = probs.topk(min(k, int(torch.isfinite(scores).sum())))
        return [
            (self.item_ids[i - 1], float(p), self.titles.get(self.item_ids[i - 1], ""))
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]


def _parse(argv: Sequence[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in OPTIONS:
            raise ValueError(f"unknown argument {arg!r}; options are {', '.join(k + '=' for k in OPTIONS)}")
        opts[key] = value
    if "ckpt" not in opts:
        raise ValueError("give the checkpoint as ckpt=<run>/checkpoints/best.ckpt")
    if ("items" in opts) == ("user" in opts):
        raise ValueError("give exactly one of items=12,7,301 (a history) or user=<id> (a known user)")
    return opts


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not an integer id; pass e.g. {key}=12") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: print the top-k recommendations; bad input exits with one ``error:`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        opts = _parse(args)
        rec = Recommender(opts["ckpt"], device=opts.get("device", "cpu"))
        if "user" in opts:
            history = rec.user_history(_int("user", opts["user"]))
        else:
            history = [_int("items", v.strip()) for v in opts["items"].split(",") if v.strip()]
        exclude = opts.get("exclude_seen")
        if exclude is not None and exclude.lower() not in ("true", "false"):
            raise ValueError(f"exclude_seen={exclude!r}; pass true or false")
        top = rec.recommend(
            history,
            k=_int("k", opts.get("k", "10")),
            exclude_seen=None if exclude is None else exclude.lower() == "true",
        )
    except cli.USER_ERRORS as err:
        if not cli.is_user_error(err):  # a library's error, or HYDRA_FULL_ERROR=1: keep the traceback
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    shown = ", ".join(str(i) for i in history[-5:])
    print(f"history: {len(history)} items (last: {shown}); top {len(top)}:")
    for rank, (item, prob, title) in enumerate(top, start=1):
        print(f"{rank:3d}  item {item:>6}  p={prob:.4f}  {title}".rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
