"""The ``translation`` task: label-smoothed seq2seq training, greedy validation decoding, beam-search test,
sacreBLEU / chrF / exact match, copy-source baseline, sample translations and cross-attention plots."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from tasks.base import RunContext, Task

from .data import PAD_ID, Pair, TranslationDataModule, decode, pad_batch
from .metrics import ChrF, ExactMatch, SacreBLEU
from .model import Seq2SeqTransformer
from .search import LENGTH_PENALTIES, translate_ids

#: file written next to the tokenizer: what ``translate.py`` needs to rebuild the model
MODEL_FILE = "translation.json"

DEFAULT_DECODE: dict[str, Any] = {
    "beam_size": 5,  # test-time beam width (1: greedy)
    "alpha": 0.6,  # length-penalty exponent
    "lp_style": "gnmt",  # gnmt | length | none
    "max_len_a": 1.5,  # output limit: a * src_len + b tokens
    "max_len_b": 10,
    "val_sentences": 256,  # validation: greedy-decode only the first N val sentences per epoch (0: none)
    "use_cache": True,  # KV-cached incremental decoding (False recomputes the prefix: slow, for checks)
    "static": None,  # fixed-shape steps, one CUDA graph replay each: None = on a GPU, False = eager steps
}


class TranslationTask(Task):
    """Encoder-decoder translation on the ``mha`` core.

    Args:
        data: :class:`~tasks.translation.data.TranslationDataModule` kwargs.
        model: :class:`~tasks.translation.model.Seq2SeqTransformer` kwargs (vocabulary sizes come from data).
        decode: search settings (see ``DEFAULT_DECODE``).
        label_smoothing: of the training cross-entropy.
        monitor: validation metric that picks the best checkpoint (``bleu``, ``chrf``, ``exact_match``,
            ``loss``).
        num_attention_plots: test sentences whose cross-attention is saved as PNG.
        num_samples: test translations written to ``samples.txt`` (``samples.tsv`` holds all).
        run: the run this task is part of: its tokenizer is saved into ``run.run_dir``, and a resumed
            run (``run.resume_from``) reuses the tokenizer saved beside that checkpoint.
    """

    monitor = "bleu"
    monitor_mode = "max"
    metric_scales = {"bleu": "0-100", "chrf": "0-100", "exact_match": "0-1"}

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        model: dict[str, Any] | None = None,
        decode: dict[str, Any] | None = None,
        label_smoothing: float = 0.1,
        monitor: str = "bleu",
        num_attention_plots: int = 4,
        num_samples: int = 50,
        run: RunContext | None = None,
    ) -> None:
        super().__init__(data, model, run)
        unknown = set(decode or {}) - set(DEFAULT_DECODE)
        if unknown:
            raise ValueError(f"unknown task.decode keys {sorted(unknown)}; known: {sorted(DEFAULT_DECODE)}.")
        self.decode_cfg = {**DEFAULT_DECODE, **(decode or {})}
        if self.decode_cfg["lp_style"] not in LENGTH_PENALTIES:
            raise ValueError(
                f"task.decode.lp_style={self.decode_cfg['lp_style']!r}; pick one of "
                f"{', '.join(LENGTH_PENALTIES)}."
            )
        if int(self.decode_cfg["beam_size"]) < 1:
            raise ValueError(f"task.decode.beam_size must be >= 1, got {self.decode_cfg['beam_size']}.")
        if monitor not in ("bleu", "chrf", "exact_match", "loss"):
            raise ValueError(f"task.monitor={monitor!r}; pick bleu, chrf, exact_match or loss.")
        if monitor != "loss" and int(self.decode_cfg["val_sentences"]) <= 0:
            raise ValueError(
                f"task.monitor={monitor} needs decoded validation sentences; set "
                "task.decode.val_sentences > 0 or task.monitor=loss."
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.monitor = monitor
        self.monitor_mode = "min" if monitor == "loss" else "max"
        self.label_smoothing = label_smoothing
        self.num_attention_plots, self.num_samples = num_attention_plots, num_samples
        self.datamodule: TranslationDataModule | None = None
        self._test_hyps: dict[int, str] = {}

    # -- building ----------------------------------------------------------------------------------------

    def build_datamodule(self) -> TranslationDataModule:
        run = {"output_dir": self.run.run_dir, "resume_from": self.run.resume_from}
        self.datamodule = TranslationDataModule(**run, **self.data_cfg)
        return self.datamodule

    def build_model(self, datamodule: L.LightningDataModule) -> Seq2SeqTransformer:
        if not isinstance(datamodule, TranslationDataModule):
            raise TypeError(f"expected a TranslationDataModule, got {type(datamodule).__name__}.")
        datamodule.prepare()
        self.datamodule = datamodule
        model_cfg = dict(self.model_cfg)
        model_cfg.setdefault("share_embeddings", datamodule.shared_vocab)
        model = Seq2SeqTransformer(datamodule.src_vocab_size, datamodule.tgt_vocab_size, **model_cfg)
        if datamodule.output_dir is not None:
            write_model_file(datamodule.output_dir, model, datamodule, self.decode_cfg)
        return model

    def build_metrics(self) -> MetricCollection:
        return text_metrics()

    # -- steps -------------------------------------------------------------------------------------------

    def _loss(self, model: nn.Module, batch: dict[str, Any], label_smoothing: float) -> torch.Tensor:
        logits = model(batch["src"], batch["tgt_in"])  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch["tgt_out"].flatten(),
            ignore_index=PAD_ID,
            label_smoothing=label_smoothing,
        )

    def training_loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self._loss(model, batch, self.label_smoothing)

    def translate_batch(self, model: nn.Module, src: torch.Tensor, beam_size: int) -> list[str]:
        """Detokenized translations of padded source ids (batch, src_len)."""
        cfg = self.decode_cfg
        ids = translate_ids(
            model,
            src,
            beam_size=beam_size,
            alpha=float(cfg["alpha"]),
            lp_style=cfg["lp_style"],
            max_len_a=float(cfg["max_len_a"]),
            max_len_b=int(cfg["max_len_b"]),
            use_cache=bool(cfg["use_cache"]),
            static=cfg["static"],
        )
        return decode(self._dm().tgt_tokenizer, ids)

    def eval_step(self, model: nn.Module, batch: dict[str, Any], metrics: MetricCollection) -> torch.Tensor:
        """Loss (plain cross-entropy) on the batch; the test split is beam-decoded in full, validation
        greedy-decodes the sentences with index < ``decode.val_sentences`` (a fixed subset)."""
        loss = self._loss(model, batch, 0.0)
        if batch["split"] == "test":
            rows = list(range(len(batch["ref_text"])))
            beam = int(self.decode_cfg["beam_size"])
        else:
            cap = int(self.decode_cfg["val_sentences"])
            rows = [i for i, idx in enumerate(batch["index"].tolist()) if idx < cap]
            beam = 1
        if rows:
            src = batch["src"][rows] if len(rows) < batch["src"].shape[0] else batch["src"]
            src = src[:, : max(1, int(src.ne(PAD_ID).sum(1).max()))]  # drop all-pad columns
            hyps = self.translate_batch(model, src, beam)
            refs = [batch["ref_text"][i] for i in rows]
            metrics.update(hyps, refs)
            if batch["split"] == "test":
                for i, hyp in zip(rows, hyps, strict=True):
                    self._test_hyps[int(batch["index"][i])] = hyp
        return loss

    # -- baselines and artefacts -------------------------------------------------------------------------

    def baselines(self, datamodule: L.LightningDataModule) -> dict[str, dict[str, float]]:
        """Copy-the-source: BLEU / chrF / exact match of the untranslated test sources."""
        datamodule.prepare()
        return {"copy source": copy_source_scores(datamodule.corpus.test)}

    def _dm(self) -> TranslationDataModule:
        if self.datamodule is None:
            raise RuntimeError("build_model(datamodule) must run before decoding (it sets the tokenizer).")
        return self.datamodule

    def save_artifacts(self, model: nn.Module, datamodule: L.LightningDataModule, run_dir: Path) -> None:
        """``samples.tsv`` (every test sentence: source, reference, hypothesis), ``samples.txt`` (the first
        ``num_samples``), ``plots/cross_attention_<i>.png`` and the tokenizer + ``translation.json``."""
        dm = datamodule
        dm.prepare()
        self.datamodule = dm
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        dm.save_tokenizers(run_dir)
        write_model_file(run_dir, model, dm, self.decode_cfg)
        test = dm.corpus.test
        device = next(model.parameters()).device
        missing = [i for i in range(min(len(test), self.num_samples)) if i not in self._test_hyps]
        for start in range(0, len(missing), dm.eval_batch_size):  # test was not run: decode the samples now
            idx = missing[start : start + dm.eval_batch_size]
            src = pad_batch([dm.datasets["test"].src_ids[i] for i in idx]).to(device)
            for i, hyp in zip(
                idx, self.translate_batch(model, src, int(self.decode_cfg["beam_size"])), strict=True
            ):
                self._test_hyps[i] = hyp
        done = sorted(self._test_hyps)
        with open(run_dir / "samples.tsv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(["source", "reference", "hypothesis"])
            for i in done:
                writer.writerow([test[i][0], test[i][1], self._test_hyps[i]])
        with open(run_dir / "samples.txt", "w", encoding="utf-8") as f:
            for i in done[: self.num_samples]:
                mark = "=" if " ".join(self._test_hyps[i].split()) == " ".join(test[i][1].split()) else "x"
                f.write(
                    f"[{i}] {mark}\n  SRC: {test[i][0]}\n  REF: {test[i][1]}\n  HYP: {self._test_hyps[i]}\n\n"
                )
        plot_dir = run_dir / "plots"
        for k, i in enumerate(done[: self.num_attention_plots]):
            plot_cross_attention(
                model, dm, test[i][0], self._test_hyps[i], plot_dir / f"cross_attention_{k}.png"
            )


def text_metrics(*, sync: bool = True) -> MetricCollection:
    """The task's metrics: sacreBLEU BLEU and chrF (0-100), exact match (0-1). ``sync=False``: no gathering
    over DDP processes in ``compute``, for a score that every process computes on the whole split (gathered,
    each sentence would count once per process, and BLEU's smoothing of empty n-gram orders changes with
    the corpus size)."""
    kwargs = {"sync_on_compute": sync}
    return MetricCollection(
        {"bleu": SacreBLEU(**kwargs), "chrf": ChrF(**kwargs), "exact_match": ExactMatch(**kwargs)},
        compute_groups=False,
    )


def copy_source_scores(pairs: Sequence[Pair]) -> dict[str, float]:
    """The copy-the-source baseline: each metric of the task's own :class:`MetricCollection` (so the same
    scale as the model's row: BLEU and chrF 0-100, exact match 0-1) on the untranslated sources."""
    metrics = text_metrics(sync=False)  # every DDP process scores the whole test split itself
    metrics.update([p[0] for p in pairs], [p[1] for p in pairs])
    return {name: float(value) for name, value in metrics.compute().items()}


def write_model_file(
    folder: str | Path, model: Seq2SeqTransformer, dm: TranslationDataModule, decode_cfg: dict[str, Any]
) -> Path:
    """Write ``translation.json``: model kwargs, languages, vocabulary layout and decode settings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = dm.corpus
    info = {
        "model": model.config,
        "shared_vocab": dm.shared_vocab,
        "tokenizers": {k: p.name for k, p in dm.tokenizer_files(folder).items()},
        "src_lang": corpus.src_lang if corpus else None,
        "tgt_lang": corpus.tgt_lang if corpus else None,
        "corpus": dm.name,
        "max_len": dm.max_len,
        "decode": decode_cfg,
    }
    path = folder / MODEL_FILE
    path.write_text(json.dumps(info, indent=2))
    return path


@torch.no_grad()
def cross_attention(model: Seq2SeqTransformer, src_ids: list[int], hyp_ids: list[int]) -> torch.Tensor:
    """Last decoder layer's cross-attention, averaged over heads: (len(hyp_ids) + 1, len(src_ids)); row t
    is the step that produced hypothesis token t (the last row produced EOS)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        src = torch.tensor([src_ids], dtype=torch.long, device=device)
        tgt_in = torch.tensor([[model.bos_id, *hyp_ids]], dtype=torch.long, device=device)
        memory, memory_pad = model.encode(src)
        _, weights = model.decode(tgt_in, memory, memory_pad, need_weights=True)
        return weights[-1][0].float().mean(0).cpu()  # (heads, T, S) -> (T, S)
    finally:
        model.train(was_training)


def plot_cross_attention(
    model: Seq2SeqTransformer, dm: TranslationDataModule, source: str, hypothesis: str, path: Path
) -> Path:
    """Save a heat map of the last decoder layer's cross-attention (target rows x source columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src_enc = dm.src_tokenizer.encode(source, add_special_tokens=False)
    hyp_enc = dm.tgt_tokenizer.encode(hypothesis, add_special_tokens=False)
    src_ids, hyp_ids = src_enc.ids[: dm.max_len], hyp_enc.ids[: dm.max_len - 1]
    weights = cross_attention(model, src_ids, hyp_ids).numpy()
    src_labels = [_piece(dm.src_tokenizer, i) for i in src_ids]
    tgt_labels = [_piece(dm.tgt_tokenizer, i) for i in hyp_ids] + ["</s>"]
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.45 * len(src_labels) + 2), max(3.0, 0.4 * len(tgt_labels) + 1.5))
    )
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(len(src_labels)), src_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(tgt_labels)), tgt_labels, fontsize=8)
    ax.set_xlabel("source tokens")
    ax.set_ylabel("generated tokens")
    ax.set_title("cross-attention, last decoder layer (mean over heads)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _piece(tok, token_id: int) -> str:
    """A readable form of one subword (byte-level symbols decoded; leading space shown as '_')."""
    text = tok.decode([token_id], skip_special_tokens=False)
    return ("_" + text[1:]) if text.startswith(" ") else text
