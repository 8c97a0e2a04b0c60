"""Greedy and beam search over a :class:`~tasks.translation.model.Seq2SeqTransformer`.

Both encode the source once, then take each step's next-token log-probabilities from one of two steppers:

- eager (``static=False``; the default on CPU): with ``use_cache=True`` the decoder is fed only the newest
  token, the self-attention keys/values of the prefix and the cross-attention keys/values of the memory
  living in the ``mha`` decoder cache, which grows with the steps and shrinks when finished sentences leave
  the batch. ``use_cache=False`` recomputes the whole prefix every step (same results; for tests and the
  speed benchmark).
- static (``static=True``; the default on a GPU in eval mode): no tensor changes shape between steps (an
  ``mha.StaticDecoderCache`` of a bucketed length, the memory padded to a bucketed length under its mask,
  finished rows kept and ignored), so on a GPU each step after a batch's first is one replay of a CUDA graph,
  captured once per shape and kept for later calls. The first step of a batch projects the memory into the
  cross-attention caches, eagerly. On CPU the same step function runs eagerly (the tests compare it with
  the eager path).

The search follows beams and finished sentences with the stepper's ``reorder`` and ``keep``.

The length limit of a sentence is ``int(max_len_a * src_len + max_len_b)`` generated tokens (EOS included).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor

LENGTH_PENALTIES = ("gnmt", "length", "none")
#: static decoding rounds source and cache lengths up to a multiple of this (fewer shapes, fewer graphs)
BUCKET = 32
#: fixed-shape steps (their buffers and CUDA graphs) kept per model; the least recently used goes first
MAX_STATIC_STEPS = 8


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


def _logprobs(logits: Tensor, banned: Tensor) -> Tensor:
    """Log-probabilities (rows, vocab) of the next token; the ``banned`` ids (pad, bos) are never produced."""
    return torch.log_softmax(logits.float(), dim=-1).index_fill_(1, banned, -math.inf)


def _banned(model, device: torch.device) -> Tensor:
    return torch.tensor([model.pad_id, model.bos_id], dtype=torch.long, device=device)


class _EagerSteps:
    """Next-token log-probabilities with a decoder cache that follows the batch (or with none)."""

    def __init__(self, model, memory: Tensor, memory_pad: Tensor | None, capacity: int | None) -> None:
        self.model, self.memory, self.memory_pad = model, memory, memory_pad
        self.cache = None if capacity is None else model.make_cache(capacity)
        self.banned = _banned(model, memory.device)

    def logprobs(self, tokens: Tensor) -> Tensor:
        """Tokens so far (rows, 1 + step) -> (rows, vocab)."""
        if self.cache is None:
            logits = self.model.decode(tokens, self.memory, self.memory_pad)[0][:, -1]
        else:
            logits = self.model.decode(tokens[:, -1:], self.memory, self.memory_pad, cache=self.cache)[0]
            logits = logits[:, -1]
        return _logprobs(logits, self.banned)

    def reorder(self, index: Tensor) -> None:
        """Row ``i`` continues the prefix of row ``index[i]`` (beams move within their sentence)."""
        if self.cache is not None:
            self.cache.reorder(index, cross=False)

    def keep(self, index: Tensor) -> None:
        """Only the rows ``index`` go on (finished sentences leave the batch and the cache)."""
        self.memory = self.memory[index]
        self.memory_pad = None if self.memory_pad is None else self.memory_pad[index]
        if self.cache is not None:
            self.cache.reorder(index)


class _StaticStep:
    """One decoding step at fixed shapes on static buffers: ``rows`` rows, a memory of ``src_len``
    positions (``masked``: under a padding mask), a cache of ``capacity`` positions, a beam reorder by
    ``origin`` first (``beam``). On CUDA every step of a batch but the first is a replay of a CUDA graph,
    captured at its first use (two for beams: one per front buffer of the cache); elsewhere the same function
    runs eagerly."""

    def __init__(
        self, model, rows: int, src_len: int, capacity: int, masked: bool, beam: bool, autocast: tuple
    ) -> None:
        device = model.tgt_embed.weight.device
        self.model = weakref.ref(model)  # the registry is keyed by the model: no strong reference back
        self.src_len, self.beam, self.autocast = src_len, beam, autocast
        self.rows = torch.arange(rows, device=device)
        self.tokens = torch.full((rows, 1), model.bos_id, dtype=torch.long, device=device)  # fed this step
        self.origin = self.rows.clone()  # beam: row i continues the cache of row origin[i]
        self.memory_pad = torch.ones(rows, src_len, dtype=torch.bool, device=device) if masked else None
        self.memory: Tensor | None = None  # read by a batch's first step only (it fills the cross caches)
        self.cache = model.make_cache(capacity, static=True)
        self.banned = _banned(model, device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # by the cache's front buffer at the start
        self.outs: dict[int, Tensor] = {}  # their outputs (rows, vocab)
        self.calls = 0

    def start(self, memory: Tensor, memory_pad: Tensor | None) -> None:
        """A new batch: memory (rows, s, embed) and its padding mask (rows, s) or ``None``, s <= src_len
        (the positions past s stay masked)."""
        s = memory.shape[1]
        self.memory = F.pad(memory, (0, 0, 0, self.src_len - s))
        if self.memory_pad is not None:
            if memory_pad is None:
                self.memory_pad[:, :s].fill_(False)
            else:
                self.memory_pad[:, :s].copy_(memory_pad)
        self.cache.reset()
        self.calls = 0

    def _step(self) -> Tensor:
        device_type, enabled, dtype = self.autocast
        # no autocast weight cache: a graph must not keep casts that die with the caller's autocast context
        with torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=False):
            if self.beam:
                self.cache.reorder(self.origin, cross=False)
            logits = self.model().decode(self.tokens, self.memory, self.memory_pad, cache=self.cache)[0]
            return _logprobs(logits[:, -1], self.banned)

    def __call__(self) -> Tensor:
        """Log-probabilities (rows, vocab) of the token after ``tokens``; the cache advances one position.
        The result is overwritten by a later call."""
        self.calls += 1
        if self.calls == 1 or self.memory.device.type != "cuda":
            return self._step()
        cache = self.cache
        if not self.graphs:
            # the first capture: this step runs eagerly on a side stream first (lazy initialisations stay out
            # of the capture); the graph replays the next step
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                out = self._step()
            torch.cuda.current_stream().wait_stream(stream)
            out.record_stream(torch.cuda.current_stream())
            self._capture()
            return out
        front = cache.front
        if front not in self.graphs:
            self._capture()
        self.graphs[front].replay()
        cache.front = front ^ self.beam  # a beam step gathered the keys/values into the other buffer
        return self.outs[front]

    def _capture(self) -> None:
        """Capture a step that starts from the cache's front buffer (beam steps alternate between two)."""
        front = self.cache.front
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outs[front] = self._step()
        self.cache.front = front  # capturing runs no kernel: the keys/values did not move
        self.graphs[front] = graph


class _StaticSteps:
    """Next-token log-probabilities from a :class:`_StaticStep`: the search's rows map onto the step's rows,
    which never change (rows of finished sentences are computed and ignored)."""

    def __init__(self, step: _StaticStep) -> None:
        self.step = step
        self.live: Tensor | None = None  # the step row of each search row (None: the same row)
        self.source: Tensor | None = None  # the step row whose cache each search row continues (None: own)

    def logprobs(self, tokens: Tensor) -> Tensor:
        step, live, source = self.step, self.live, self.source
        if live is None:
            step.tokens.copy_(tokens[:, -1:])
        else:
            step.tokens.index_copy_(0, live, tokens[:, -1:])
        if step.beam:  # step row i continues the cache of step row origin[i]
            if source is not None and live is None:
                step.origin.copy_(source)
            else:
                step.origin.copy_(step.rows)  # (the rows of finished sentences keep their own)
                if source is not None:
                    step.origin.index_copy_(0, live, source)
            self.source = None
        logp = step()
        return logp if live is None else logp.index_select(0, live)

    def reorder(self, index: Tensor) -> None:
        base = self.source if self.source is not None else self.live
        self.source = index if base is None else base[index]

    def keep(self, index: Tensor) -> None:
        if self.source is not None:
            self.source = self.source[index]
        self.live = index if self.live is None else self.live[index]


_STATIC_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> OrderedDict(key -> step)


def _round_up(n: int) -> int:
    return -(-n // BUCKET) * BUCKET


def _static_step(model, memory: Tensor, memory_pad: Tensor | None, capacity: int, beam: bool) -> _StaticStep:
    """The model's fixed-shape step for this batch (built, or reused with its CUDA graph), started on it."""
    rows, src_len, _ = memory.shape
    src_bucket, capacity = _round_up(src_len), _round_up(capacity)
    masked = memory_pad is not None or src_bucket > src_len
    kind = memory.device.type
    autocast = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
    weights = tuple(p.data_ptr() for p in model.parameters())  # moved or re-cast weights: a new graph
    key = (rows, src_bucket, capacity, masked, beam, autocast, weights)
    steps = _STATIC_STEPS.setdefault(model, OrderedDict())
    step = steps.pop(key, None) or _StaticStep(model, rows, src_bucket, capacity, masked, beam, autocast)
    steps[key] = step  # most recently used last
    while len(steps) > MAX_STATIC_STEPS:
        steps.popitem(last=False)
    step.start(memory, memory_pad)
    return step


def _start(model, src: Tensor, limits: list[int], beam: int, use_cache: bool, static: bool | None):
    """Encode once; drop an all-False padding mask (one host sync per search, none per step); repeat the
    memory for ``beam`` rows per sentence (0: greedy, one row); return the stepper."""
    memory, memory_pad = model.encode(src)
    if memory_pad is not None and not bool(memory_pad.any()):
        memory_pad = None  # no padding anywhere: unmasked attention in every step
    if beam:
        memory = memory.repeat_interleave(beam, dim=0)  # (batch * beam, src_len, embed)
        memory_pad = None if memory_pad is None else memory_pad.repeat_interleave(beam, dim=0)
    if static is None:
        static = use_cache and src.is_cuda and not model.training
    if not static:
        return _EagerSteps(model, memory, memory_pad, max(limits) if use_cache else None)
    if not use_cache:
        raise ValueError("static decoding steps use the cache: pass use_cache=True or static=False.")
    return _StaticSteps(_static_step(model, memory, memory_pad, max(limits), beam > 0))


def _position_cap(model) -> int | None:
    return None if getattr(model, "max_positions", None) is None else model.max_positions - 1


@torch.no_grad()
def greedy_search(
    model,
    src: Tensor,
    *,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    use_cache: bool = True,
    static: bool | None = None,
) -> list[list[int]]:
    """Greedy decoding of a batch of padded source ids (batch, src_len).

    ``static``: fixed-shape steps, CUDA graphs on a GPU (see the module docstring); ``None``: on a GPU in
    eval mode with the cache. Returns one list of target ids per sentence, without bos/eos; a sentence stops
    at EOS or its limit.
    """
    batch = src.shape[0]
    limits = max_lengths(src, model.pad_id, max_len_a, max_len_b, _position_cap(model)).tolist()
    steps = _start(model, src, limits, 0, use_cache, static)
    tokens = torch.full((batch, 1), model.bos_id, dtype=torch.long, device=src.device)  # (rows, 1 + step)
    rows = list(range(batch))  # sentence id of each live row
    out: list[list[int]] = [[] for _ in range(batch)]
    step = 0
    while rows:
        next_tok = steps.logprobs(tokens).argmax(dim=-1)
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
            tokens = tokens[index]
            steps.keep(index)
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
    static: bool | None = None,
) -> list[list[int]]:
    """Beam search over a batch of padded source ids (batch, src_len).

    Each step scores every beam's continuations, keeps the ``2 * beam_size`` best, finalises those of the
    first ``beam_size`` that end in EOS (score divided by :func:`length_penalty`) and continues with the
    ``beam_size`` best that do not. A sentence is done once it holds ``beam_size`` finished hypotheses or
    reaches its length limit (then the live beams are finalised as they are). ``beam_size=1`` is greedy.
    ``static`` as in :func:`greedy_search`.

    Returns the best hypothesis per sentence as target ids without bos/eos.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    length_penalty(1, alpha, lp_style)  # validates the style
    k = beam_size
    batch, device = src.shape[0], src.device
    limits = max_lengths(src, model.pad_id, max_len_a, max_len_b, _position_cap(model)).tolist()
    steps = _start(model, src, limits, k, use_cache, static)
    tokens = torch.full((batch * k, 1), model.bos_id, dtype=torch.long, device=device)  # (rows, 1 + step)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    sents = list(range(batch))  # sentence id of each live group of k rows
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    step = 0
    while sents:
        n = len(sents)
        logp = steps.logprobs(tokens)  # (n * k, vocab)
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
        steps.reorder(origin)  # beams move within their sentence: same memory rows
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
            tokens, scores = tokens[rows_t], scores[index]
            steps.keep(rows_t)
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
    static: bool | None = None,
) -> list[list[int]]:
    """Greedy when ``beam_size == 1``, else beam search; the model is put in eval mode for the call.
    ``static``: fixed-shape steps replayed as CUDA graphs (``None``: on a GPU; see the module docstring)."""
    was_training = model.training
    model.eval()
    try:
        if beam_size == 1:
            return greedy_search(
                model, src, max_len_a=max_len_a, max_len_b=max_len_b, use_cache=use_cache, static=static
            )
        return beam_search(
            model,
            src,
            beam_size=beam_size,
            alpha=alpha,
            lp_style=lp_style,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            use_cache=use_cache,
            static=static,
        )
    finally:
        model.train(was_training)
