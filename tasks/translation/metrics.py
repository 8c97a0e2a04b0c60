"""Corpus-level text metrics on detokenized strings: sacreBLEU BLEU and chrF, and exact match.

Each metric accepts ``update(hypotheses, references)`` (lists of strings) so one ``MetricCollection`` takes
both at once. Strings are kept as UTF-8 bytes in tensor states separated by a NUL byte, so torchmetrics can
gather them across processes (a ``cat`` of the byte streams keeps the separators).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

_SEP = 0  # NUL never occurs in text


def _to_bytes(texts: Sequence[str]) -> torch.Tensor:
    data = b"".join(t.encode("utf-8") + b"\x00" for t in texts)
    return (
        torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()
        if data
        else torch.zeros(0, dtype=torch.uint8)
    )


def _from_bytes(chunks: list[torch.Tensor] | torch.Tensor) -> list[str]:
    if isinstance(chunks, list):
        if not chunks:
            return []
        chunks = torch.cat([c.reshape(-1) for c in chunks])
    raw = bytes(chunks.cpu().tolist())
    return [] if not raw else raw.decode("utf-8").split("\x00")[:-1]


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and strip (how exact match compares strings)."""
    return " ".join(text.split())


class _CorpusTextMetric(Metric):
    """Collects hypothesis / reference strings; subclasses score the whole corpus in ``compute``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("hyps", default=[], dist_reduce_fx="cat")
        self.add_state("refs", default=[], dist_reduce_fx="cat")

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
        if isinstance(hypotheses, str) or isinstance(references, str):
            raise TypeError("pass lists of strings (one per sentence), not a single string.")
        if hypotheses:
            self.hyps.append(_to_bytes(hypotheses).to(self.device))
            self.refs.append(_to_bytes(references).to(self.device))

    def texts(self) -> tuple[list[str], list[str]]:
        """The collected (hypotheses, references)."""
        return _from_bytes(self.hyps), _from_bytes(self.refs)


class SacreBLEU(_CorpusTextMetric):
    """``sacrebleu.corpus_bleu`` (13a tokenization, 0-100) on detokenized strings."""

    def compute(self) -> torch.Tensor:
        import sacrebleu

        hyps, refs = self.texts()
        if not hyps:
            return torch.tensor(0.0)
        return torch.tensor(sacrebleu.corpus_bleu(hyps, [refs]).score)


class ChrF(_CorpusTextMetric):
    """``sacrebleu.corpus_chrf`` (chrF2, 0-100) on detokenized strings."""

    def compute(self) -> torch.Tensor:
        import sacrebleu

        hyps, refs = self.texts()
        if not hyps:
            return torch.tensor(0.0)
        return torch.tensor(sacrebleu.corpus_chrf(hyps, [refs]).score)


class ExactMatch(Metric):
    """Share (0-1) of hypotheses equal to their reference after whitespace normalisation."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, hypotheses: Sequence[str], references: Sequence[str]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
        self.correct += sum(
            normalize_space(h) == normalize_space(r) for h, r in zip(hypotheses, references, strict=True)
        )
        self.total += len(references)

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)
