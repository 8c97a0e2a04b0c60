"""Model and decoding: cached == uncached == static shapes (CUDA graphs on a GPU), beam 1 == greedy, EOS
stops, length limits (fast, CPU; the graph test runs with ``pytest -m gpu``)."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.translation.data import BOS_ID, EOS_ID, PAD_ID, decode, pad_batch
from tasks.translation.model import Seq2SeqTransformer
from tasks.translation.search import (
    _STATIC_STEPS,
    MAX_STATIC_STEPS,
    beam_search,
    greedy_search,
    length_penalty,
    max_lengths,
)


def _test_src(trained, n: int = 24) -> torch.Tensor:
    return pad_batch(trained.dm.datasets["test"].src_ids[:n])


def test_training_steps_reduce_the_loss(trained):
    first, last = sum(trained.losses[:10]) / 10, sum(trained.losses[-10:]) / 10
    assert math.isfinite(last) and last < 0.5 * first


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "autograd"])
def test_incremental_decoder_equals_full_forward(trained, grad):
    """Real decoding runs without autograd, where the cache writes into its pre-allocated buffer in place:
    both modes must equal the full forward."""
    model = trained.model
    src = _test_src(trained, 6)
    tgt_in = pad_batch([[BOS_ID, *ids] for ids in trained.dm.datasets["test"].tgt_ids[:6]])
    tgt_in = tgt_in[:, :5]
    with torch.set_grad_enabled(grad):
        memory, memory_pad = model.encode(src)
        full = model.decode(tgt_in, memory, memory_pad)[0]
        cache = model.make_cache(8)  # pre-allocated, longer than the steps: only the filled part counts
        steps = [model.decode(tgt_in[:, t : t + 1], memory, memory_pad, cache=cache)[0] for t in range(5)]
    assert cache.seq_len == 5
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_greedy_and_beam_translate_held_out_numbers_and_stop_at_eos(trained):
    src = _test_src(trained)
    refs = [p[1] for p in trained.dm.corpus.test[:24]]
    limits = max_lengths(src, PAD_ID, 1.5, 10).tolist()
    greedy = greedy_search(trained.model, src)
    beam = beam_search(trained.model, src, beam_size=4)
    for hyps in (greedy, beam):
        assert all(len(h) < lim for h, lim in zip(hyps, limits, strict=True))  # ended by EOS, not the limit
        assert all(EOS_ID not in h and BOS_ID not in h and PAD_ID not in h for h in hyps)
        text = decode(trained.dm.tgt_tokenizer, hyps)
        assert sum(h == r for h, r in zip(text, refs, strict=True)) >= len(refs) // 2


def test_beam_size_one_equals_greedy(trained):
    src = _test_src(trained)
    assert beam_search(trained.model, src, beam_size=1) == greedy_search(trained.model, src)
    assert beam_search(trained.model, src, beam_size=1, alpha=1.0, lp_style="length") == greedy_search(
        trained.model, src
    )


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_decoding_equals_uncached(trained, beam_size):
    src = _test_src(trained)
    if beam_size == 1:
        assert greedy_search(trained.model, src) == greedy_search(trained.model, src, use_cache=False)
    else:
        cached = beam_search(trained.model, src, beam_size=beam_size)
        assert cached == beam_search(trained.model, src, beam_size=beam_size, use_cache=False)


class _Scripted(torch.nn.Module):
    """A fake model whose next-token distribution depends only on the step and the source row: row i
    emits token 10 + step until step i, then EOS; for the beam test a second path is likelier at first but
    worse overall."""

    pad_id, bos_id, eos_id, max_positions = PAD_ID, BOS_ID, EOS_ID, None

    def __init__(self, vocab: int = 20) -> None:
        super().__init__()
        self.vocab = vocab

    def encode(self, src):
        return src[:, :, None].float(), src.eq(PAD_ID)

    def make_cache(self, capacity=None):
        return None

    def decode(self, tgt_in, memory, memory_pad, cache=None, need_weights=False):
        rows, steps = tgt_in.shape
        stop = memory[:, 0, 0].long()  # the first source id says when to stop
        logits = torch.full((rows, steps, self.vocab), -10.0)
        for t in range(steps):
            emit = torch.where(stop > t, torch.full_like(stop, 10 + t % 5), torch.full_like(stop, EOS_ID))
            logits[torch.arange(rows), t, emit] = 0.0
        return logits, None


def test_search_stops_at_eos_per_sentence_and_respects_limits():
    model = _Scripted()
    src = torch.tensor([[4, 5, 5], [1, 5, PAD_ID], [7, PAD_ID, PAD_ID]])
    greedy = greedy_search(model, src, use_cache=False, max_len_a=1.0, max_len_b=2)
    # row 0 stops at EOS after 4 tokens; row 1 after 1; row 2 would need 7 but its limit is 1 * 1 + 2 = 3
    assert greedy == [[10, 11, 12, 13], [10], [10, 11, 12]]
    assert beam_search(model, src, beam_size=3, use_cache=False, max_len_a=1.0, max_len_b=2) == greedy


class _ShortOrLong(_Scripted):
    """After BOS: EOS or token A (10), each with p 0.5; after A: EOS 0.7, B (11) 0.3; then EOS. The short
    hypothesis [] scores log 0.5 = -0.69, the long one [A] log 0.35 = -1.05 over two steps."""

    def decode(self, tgt_in, memory, memory_pad, cache=None, need_weights=False):
        rows, steps = tgt_in.shape
        logits = torch.full((rows, steps, self.vocab), -1e4)
        last = tgt_in[:, -1]
        table = {BOS_ID: {EOS_ID: 0.5, 10: 0.5}, 10: {EOS_ID: 0.7, 11: 0.3}}
        for r in range(rows):
            for token, prob in table.get(int(last[r]), {EOS_ID: 1.0}).items():
                logits[r, -1, token] = math.log(prob)
        return logits, None


def test_length_penalty_decides_between_a_short_and_a_long_hypothesis():
    """Finished hypotheses are ranked by score / length_penalty: with no penalty the short one wins
    (-0.69 > -1.05); with lp = len (-1.05 / 2 = -0.53 > -0.69) the long one; gnmt at alpha 1 divides the
    long one by 7/6 only (-0.90): the short one again."""
    src = torch.tensor([[5, 6]])
    run = lambda **kw: beam_search(_ShortOrLong(), src, beam_size=2, use_cache=False, **kw)  # noqa: E731
    assert run(lp_style="none") == [[]]
    assert run(lp_style="length", alpha=1.0) == [[10]]
    assert run(lp_style="gnmt", alpha=1.0) == [[]]
    assert run(lp_style="gnmt", alpha=3.0) == [[10]]  # ((5 + 2) / 6) ** 3 = 1.59: -1.05 / 1.59 = -0.66


def test_length_penalty_styles():
    assert length_penalty(1, 0.6, "gnmt") == 1.0
    assert length_penalty(7, 1.0, "gnmt") == pytest.approx(2.0)
    assert length_penalty(4, 1.0, "length") == 4.0 and length_penalty(9, 5.0, "none") == 1.0
    with pytest.raises(ValueError, match="pick one of gnmt"):
        length_penalty(3, 0.6, "wu")
    with pytest.raises(ValueError, match="beam_size must be >= 1"):
        beam_search(_Scripted(), torch.tensor([[3]]), beam_size=0)


def test_learned_positions_and_separate_embeddings_build_and_decode():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(
        300,
        320,
        embed_dim=16,
        num_heads=2,
        encoder_layers=1,
        decoder_layers=1,
        positional="learned",
        max_positions=16,
        share_embeddings=False,
        tie_output=False,
    )
    assert model.src_embed is not model.tgt_embed
    src = torch.randint(4, 300, (2, 5))
    assert model(src, torch.randint(4, 320, (2, 7))).shape == (2, 7, 320)
    out = beam_search(model.eval(), src, beam_size=2, max_len_a=0.0, max_len_b=30)  # capped at 15 positions
    assert all(len(h) <= 15 for h in out)
    with pytest.raises(ValueError, match="max_positions=16"):
        model(src, torch.randint(4, 320, (2, 17)))
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Seq2SeqTransformer(300, 320, embed_dim=16, num_heads=2)
    with pytest.raises(ValueError, match="positional='rope'"):
        Seq2SeqTransformer(300, 300, embed_dim=16, num_heads=2, positional="rope")


def test_shared_model_ties_embeddings(trained):
    model = trained.model
    assert model.src_embed is model.tgt_embed and model.output is None
    h = torch.randn(2, 3, model.embed_dim)
    torch.testing.assert_close(model.logits(h), h @ model.tgt_embed.weight.T + model.output_bias)


def _random_model(positional: str = "sinusoidal") -> Seq2SeqTransformer:
    """A small random encoder-decoder (seed 1), in eval mode."""
    torch.manual_seed(1)
    model = Seq2SeqTransformer(
        64,
        64,
        embed_dim=32,
        num_heads=4,
        encoder_layers=1,
        decoder_layers=2,
        dropout=0.0,
        positional=positional,
        max_positions=64,
    ).eval()
    return model


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_cached_beam_equals_uncached_on_an_uncertain_model(positional):
    """A random model spreads its probability, so beams swap places often: a wrong cache reorder shows."""
    model = _random_model(positional)
    src = torch.randint(4, 64, (5, 7))
    src[3, 4:] = PAD_ID
    kwargs = {"beam_size": 4, "max_len_a": 1.0, "max_len_b": 5}
    cached = beam_search(model, src, **kwargs)
    assert cached == beam_search(model, src, use_cache=False, **kwargs)
    assert greedy_search(model, src) == greedy_search(model, src, use_cache=False)


def test_unpadded_fast_path_and_cached_positions_match_the_general_path():
    torch.manual_seed(0)
    model = Seq2SeqTransformer(60, 60, embed_dim=16, num_heads=2, encoder_layers=1, decoder_layers=1).eval()
    src, tgt = torch.randint(4, 60, (3, 6)), torch.randint(4, 60, (3, 5))
    torch.testing.assert_close(model(src, tgt, src_has_padding=False), model(src, tgt))
    memory, memory_pad = model.encode(src, has_padding=False)
    assert memory_pad is None
    x = torch.randn(2, 4, 16)
    for offset in (0, 3, model._sinusoid.shape[0]):  # the last is past the table: computed on the fly
        ref = model.tgt_pos(x, offset=offset)
        ids = torch.zeros(2, 4, dtype=torch.long)
        with torch.no_grad():
            got = model._embed(ids, model.tgt_embed, model.tgt_pos, offset=offset)
        torch.testing.assert_close(got, ref - x, atol=1e-6, rtol=0)  # pad embedding is zero
    assert model.make_cache(capacity=2).self_attn[0].capacity_hint == 2
    out = beam_search(model, src, beam_size=3, max_len_a=0.0, max_len_b=7)  # no padding: unmasked steps
    assert out == beam_search(model, src, beam_size=3, max_len_a=0.0, max_len_b=7, use_cache=False)


def _uncertain_model(positional: str = "sinusoidal") -> Seq2SeqTransformer:
    """A random model with scaled-up decoder weights: varied tokens, beams that swap places, and EOS at
    different steps in different sentences (so rows finish and leave the search at different times)."""
    model = _random_model(positional)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        model.output_bias[EOS_ID] = 2.0
    return model


def _padded_src(batch: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 64, (batch, 9), generator=g)
    src[batch // 2, 4:] = PAD_ID
    src[batch - 1, 2:] = PAD_ID
    return src


def _all_paths(model, src) -> list[list[list[int]]]:
    """Greedy, then beam-4 hypotheses: each with static steps, the eager cache, the recomputed prefix."""
    beam = {"beam_size": 4, "max_len_a": 1.0, "max_len_b": 5}
    paths = ({"static": True}, {"static": False}, {"use_cache": False})
    return [
        search(model, src, **kw, **path)
        for search, kw in ((greedy_search, {}), (beam_search, beam))
        for path in paths
    ]


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_static_steps_equal_the_eager_cache_and_the_recomputed_prefix(positional):
    """The fixed-shape step (the function a GPU captures as a CUDA graph) run eagerly: the same hypotheses
    as the eager cache and as recomputing the prefix, greedy and beam, on a padded source batch; a second
    batch of the same shapes reuses the step (fresh cache, same results)."""
    model = _uncertain_model(positional)
    for seed in (0, 1):
        static, eager, uncached, beam_static, beam_eager, beam_uncached = _all_paths(
            model, _padded_src(seed=seed)
        )
        assert static == eager == uncached
        assert beam_static == beam_eager == beam_uncached
    assert len({len(h) for h in eager}) > 1 and len({len(h) for h in beam_eager}) > 1  # rows end apart
    assert len(_STATIC_STEPS[model]) == 2  # one step for greedy, one for beam, reused by the second batch


def test_static_steps_translate_like_the_eager_cache(trained):
    src = _test_src(trained)
    assert greedy_search(trained.model, src, static=True) == greedy_search(trained.model, src, static=False)
    static = beam_search(trained.model, src, beam_size=3, static=True)
    assert static == beam_search(trained.model, src, beam_size=3, static=False)


def test_static_steps_are_kept_per_shape_bucket_and_bounded():
    model = _uncertain_model()
    for batch in range(2, 4 + MAX_STATIC_STEPS):
        greedy_search(model, _padded_src(batch), static=True)
    steps = _STATIC_STEPS[model]
    assert len(steps) == MAX_STATIC_STEPS
    assert [key[0] for key in steps] == list(range(4, 4 + MAX_STATIC_STEPS))  # the most recent batch sizes
    assert all(key[1] == 32 for key in steps)  # source (9 tokens) and cache lengths rounded up to 32
    with pytest.raises(ValueError, match="use_cache=True or static=False"):
        greedy_search(model, _padded_src(), static=True, use_cache=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-autocast"])
def test_cuda_graph_steps_equal_the_eager_cache(precision):
    """On a GPU the default is static steps replayed as CUDA graphs: the same hypotheses as the eager cache,
    greedy and beam, for a first batch (which captures) and a second one (which replays)."""
    model = _uncertain_model().cuda()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-autocast"):
        for seed in (0, 1):
            src = _padded_src(seed=seed).cuda()
            assert greedy_search(model, src) == greedy_search(model, src, static=False)
            kw = {"beam_size": 4, "max_len_a": 1.0, "max_len_b": 5}
            assert beam_search(model, src, **kw) == beam_search(model, src, static=False, **kw)
    greedy, beam = _STATIC_STEPS[model].values()
    assert len(greedy.graphs) == 1 and len(beam.graphs) == 2  # beams: one graph per front buffer
