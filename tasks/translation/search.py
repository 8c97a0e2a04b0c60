"""Greedy and beam search over a :class:`~tasks.translation.model.Seq2SeqTransformer`.

Both encode the source once and, with ``use_cache=True`` (the default), feed the decoder only the newest
token each step: the self-attention keys/values of the prefix and the cross-attention keys/values of the
encoder memory live in the ``mha`` decoder cache. Beams (and finished sentences, which are dropped from
the batch) are followed with ``cache.reorder(index)``. ``use_cache=False`` recomputes the whole prefix
every step (same results; kept for tests and the speed benchmark).

The length limit of a sentence is ``int(max_len_a * src_len + max_len_b)`` generated tokens (EOS included).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LENGTH_PENALTIES = ("gnmt", "length", "none")


def length_penalty(length: int, alpha: float, style: str = "gnmt") -> float:
    """Divisor of a hypothesis' summed log-probability.

    ``gnmt``: ``((5 + length) / 6) ** alpha`` (Wu et al. 2016); ``length``: ``length ** alpha`` (fairseq's
    length normalisation; ``alpha=1`` is the mean log-probability); ``none``: 1.
    """
    if style == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if style == "length":
        return float(length) ** alpha
    if style == "none":
        return 1.0
    raise ValueError(f"length penalty style {style!r}; pick one of {', '.join(LENGTH_PENALTIES)}.")


def max_lengths(src: Tensor, pad_id: int, max_len_a: float, max_len_b: int, cap: int | None = None) -> Tensor:
    """(batch,) limits ``int(a * src_len + b)`` (at least 1, at most ``cap``) from padded source ids."""
    src_len = src.ne(pad_id).sum(dim=1).float()
    limits = (max_len_a * src_len + max_len_b).long().clamp(min=1)
    return limits.clamp(max=cap) if cap is not None else limits


def _step_logprobs(
    model, tokens: Tensor, memory: Tensor, memory_pad: Tensor | None, cache, banned: Tensor
) -> Tensor:
    """Log-probabilities (rows, vocab) of the next token; the ``banned`` ids (pad, bos) are never produced."""
    if cache is not None:
        logits = model.decode(tokens[:, -1:], memory, memory_pad, cache=cache)[0][:, -1]
    else:
        logits = model.decode(tokens, memory, memory_pad)[0][:, -1]
    return torch.log_softmax(logits.float(), dim=-1).index_fill_(1, banned, -math.inf)


def _start(model, src: Tensor, limits: list[int], use_cache: bool):
    """Encode once; drop an all-False padding mask (one host sync per search, none per step); a cache
    preallocated to the longest limit (bos included)."""
    memory, memory_pad = model.encode(src)
    if memory_pad is not None and not bool(memory_pad.any()):
        memory_pad = None  # no padding anywhere: unmasked attention in every step
    cache = model.make_cache(max(limits) + 1) if use_cache else None
    banned = torch.tensor([model.pad_id, model.bos_id], dtype=torch.long, device=src.device)
    return memory, memory_pad, cache, banned


def _position_cap(model) -> int | None:
    return None if getattr(model, "max_positions", None) is None else model.max_positions - 1


@torch.no_grad()
def greedy_search(
    model, src: Tensor, *, max_len_a: float = 1.5, max_len_b: int = 10, use_cache: bool = True
) -> list[list[int]]:
    """Greedy decoding of a batch of padded source ids (batch, src_len).

    Returns one list of target ids per sentence, without bos/eos; a sentence stops at EOS or its limit.
    """
    batch = src.shape[0]
    limits = max_lengths(src, model.pad_id, max_len_a, max_len_b, _position_cap(model)).tolist()
    memory, memory_pad, cache, banned = _start(model, src, limits, use_cache)
    tokens = torch.full((batch, 1), model.bos_id, dtype=torch.long, device=src.device)  # (rows, 1 + step)
    rows = list(range(batch))  # sentence id of each live row
    out: list[list[int]] = [[] for _ in range(batch)]
    step = 0
    while rows:
        next_tok = _step_logprobs(model, tokens, memory, memory_pad, cache, banned).argmax(dim=-1)
        tokens = torch.cat((tokens, next_tok[:, None]), dim=1)
        step += 1
        done = next_tok.eq(model.eos_id).tolist()
        keep = []
        for r, sent in enumerate(rows):
            if done[r] or step >= limits[sent]:
                seq = tokens[r, 1:].tolist()
                out[sent] = seq[:-1] if done[r] else seq
            else:
                keep.append(r)
        if len(keep) < len(rows):  # drop finished sentences from the batch (and the cache)
            index = torch.tensor(keep, dtype=torch.long, device=src.device)
            tokens, memory = tokens[index], memory[index]
            memory_pad = None if memory_pad is None else memory_pad[index]
            if cache is not None:
                cache.reorder(index)
            rows = [rows[r] for r in keep]
    return out


@torch.no_grad()
def beam_search(
    model,
    src: Tensor,
    *,
    beam_size: int = 5,
    alpha: float = 0.6,
    lp_style: str = "gnmt",
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Beam search over a batch of padded source ids (batch, src_len).

    Each step scores every beam's continuations, keeps the ``2 * beam_size`` best, finalises those of the
    first ``beam_size`` that end in EOS (score divided by :func:`length_penalty`) and continues with the
    ``beam_size`` best that do not. A sentence is done once it holds ``beam_size`` finished hypotheses or
    reaches its length limit (then the live beams are finalised as they are). ``beam_size=1`` is greedy.

    Returns the best hypothesis per sentence as target ids without bos/eos.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    length_penalty(1, alpha, lp_style)  # validates the style
    k = beam_size
    batch, device = src.shape[0], src.device
    limits = max_lengths(src, model.pad_id, max_len_a, max_len_b, _position_cap(model)).tolist()
    memory, memory_pad, cache, banned = _start(model, src, limits, use_cache)
    memory = memory.repeat_interleave(k, dim=0)  # (batch * k, src_len, embed)
    memory_pad = None if memory_pad is None else memory_pad.repeat_interleave(k, dim=0)
    tokens = torch.full((batch * k, 1), model.bos_id, dtype=torch.long, device=device)  # (rows, 1 + step)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    sents = list(range(batch))  # sentence id of each live group of k rows
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    step = 0
    while sents:
        n = len(sents)
        logp = _step_logprobs(model, tokens, memory, memory_pad, cache, banned)  # (n * k, vocab)
        vocab = logp.shape[-1]
        cand = (scores.reshape(n * k, 1) + logp).reshape(n, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)  # (n, 2k), best first
        top_beam, top_tok = top_idx // vocab, top_idx % vocab
        step += 1
        is_eos = top_tok.eq(model.eos_id)
        eos_first_k = is_eos[:, :k] & torch.isfinite(top_scores[:, :k])
        # continue with the k best non-EOS candidates (at most k of the 2k end in EOS: one per beam)
        cont = top_scores.masked_fill(is_eos, -math.inf).topk(k, dim=1)
        new_beam = top_beam.gather(1, cont.indices)
        new_tok = top_tok.gather(1, cont.indices)
        origin = (torch.arange(n, device=device)[:, None] * k + new_beam).reshape(-1)  # (n * k,) old rows
        old_tokens = tokens
        tokens = torch.cat((tokens[origin], new_tok.reshape(-1, 1)), dim=1)
        if cache is not None:
            cache.reorder(origin, cross=False)  # beams move within their sentence: same memory rows
        scores = cont.values  # (n, k)
        # host work: one sync per step (which EOS candidates rank within the first k), more only when
        # hypotheses finish
        eos_rows = eos_first_k.any(dim=1).tolist()
        if any(eos_rows):  # finalise EOS candidates ranked within the first k
            eos_pos = eos_first_k.nonzero().tolist()
            beams = top_beam[:, :k][eos_first_k].tolist()
            rows = [i * k + b for (i, _), b in zip(eos_pos, beams, strict=True)]
            finals = top_scores[:, :k][eos_first_k].tolist()
            seqs = old_tokens[torch.tensor(rows, dtype=torch.long, device=device), 1:].tolist()
            lp = length_penalty(step, alpha, lp_style)
            for (i, _), score, seq in zip(eos_pos, finals, seqs, strict=True):
                finished[sents[i]].append((score / lp, seq))
        at_limit = [step >= limits[sent] for sent in sents]
        if any(at_limit):  # out of length: the live beams end here, without EOS
            lp = length_penalty(step, alpha, lp_style)
            host_scores, host_tokens = scores.tolist(), tokens[:, 1:].tolist()
            for i, sent in enumerate(sents):
                if at_limit[i]:
                    for j in range(k):
                        if math.isfinite(host_scores[i][j]):
                            finished[sent].append((host_scores[i][j] / lp, host_tokens[i * k + j]))
        keep = [i for i, sent in enumerate(sents) if not at_limit[i] and len(finished[sent]) < k]
        if len(keep) < n:  # drop done sentences (their k rows) from the batch and the cache
            index = torch.tensor(keep, dtype=torch.long, device=device)
            rows_t = (index[:, None] * k + torch.arange(k, device=device)).reshape(-1)
            tokens, memory = tokens[rows_t], memory[rows_t]
            memory_pad = None if memory_pad is None else memory_pad[rows_t]
            scores = scores[index]
            if cache is not None:
                cache.reorder(rows_t)
            sents = [sents[i] for i in keep]
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


def translate_ids(
    model,
    src: Tensor,
    *,
    beam_size: int = 1,
    alpha: float = 0.6,
    lp_style: str = "gnmt",
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy when ``beam_size == 1``, else beam search; the model is put in eval mode for the call."""
    was_training = model.training
    model.eval()
    try:
        if beam_size == 1:
            return greedy_search(model, src, max_len_a=max_len_a, max_len_b=max_len_b, use_cache=use_cache)
        return beam_search(
            model,
            src,
            beam_size=beam_size,
            alpha=alpha,
            lp_style=lp_style,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            use_cache=use_cache,
        )
    finally:
        model.train(was_training)
