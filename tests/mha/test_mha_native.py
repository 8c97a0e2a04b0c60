"""The optional compiled entry of ``mha.attention`` (``mha/_native.py``): it must behave exactly as the Python
entry, take only the plain calls ``_short_call`` takes, and hand every other call over untouched.

The entry is built once per torch/Python install (``make setup`` runs ``python -m mha build``); where it
cannot be built (no compiler / ninja / headers) these tests skip and say why.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import subprocess
import sys
import warnings
from itertools import product
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import mha
import mha.functional as mf
from mha import _native

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """``(entry, cache root)``: the entry ``mha.attention`` uses, or one built into a temporary cache and set
    up here (``mha.attention`` itself unchanged)."""
    if mha.native_entry():
        return mha.attention, os.environ.get(_native.ENV_DIR)
    root = str(tmp_path_factory.mktemp("mha_native"))
    saved = {key: os.environ.pop(key, None) for key in (_native.ENV_DIR, _native.ENV_OFF)}
    os.environ[_native.ENV_DIR] = root
    try:
        _native.build()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a build that does not load fails here, with the reason
            module = _native.load()
    except Exception as err:  # noqa: BLE001 - the reason is the skip message
        pytest.skip(f"the compiled entry cannot be built here: {type(err).__name__}: {err}")
    finally:
        for key, val in saved.items():
            os.environ.pop(key, None)
            if val is not None:
                os.environ[key] = val
    return mf._install_native(module)[0], root


@pytest.fixture
def entry(native):
    return native[0]


@pytest.fixture
def python_calls(monkeypatch):
    """Counts the calls that reach the Python entry (its first step is ``_plannable``)."""
    calls = []
    real = mf._plannable

    def counting(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(mf, "_plannable", counting)
    return calls


def _qkv(b=2, h=4, n=8, m=None, d=16, kv_heads=None, dtype=torch.float32, grad=False):
    g = torch.Generator().manual_seed(b * 1000 + h * 100 + n * 10 + d)
    q = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    k = torch.randn(b, kv_heads or h, m or n, d, generator=g, dtype=dtype)
    v = torch.randn(b, kv_heads or h, m or n, d, generator=g, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def test_signature_and_doc_match_the_python_entry(entry):
    assert type(entry).__name__ == "builtin_function_or_method"

    def params(fn):  # (the builtin's signature carries no annotations)
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(entry) == params(mf._python_attention)
    assert entry.__doc__ == mf._python_attention.__doc__
    assert (entry.__module__, entry.__name__) == ("mha.functional", "attention")


@pytest.mark.parametrize(
    "shape, causal, scale, dtype, grad",
    [
        *product(
            [dict(n=8), dict(n=5, m=9), dict(b=1, h=1, n=1, d=8)],
            [False, True],
            [None, 0.3],
            [torch.float32, torch.float64],
            [False, True],
        ),  # fmt: skip
        (dict(n=8, kv_heads=2), False, None, torch.float32, False),  # GQA: not a short call
        (dict(n=8), False, None, torch.bfloat16, False),
    ],
)
def test_same_outputs_grads_and_report_as_the_python_entry(entry, shape, causal, scale, dtype, grad):
    q, k, v = _qkv(**shape, dtype=dtype, grad=grad)
    kwargs = dict(is_causal=causal) if scale is None else dict(is_causal=causal, scale=scale)
    mf._STATE["last"] = None
    ours = entry(q, k, v, **kwargs)
    ours_backend = mha.last_backend()
    mf._STATE["last"] = None
    ref = mf._python_attention(q, k, v, **kwargs)
    assert mha.last_backend() == ours_backend
    assert torch.equal(ours, ref)
    if grad:
        g_ours = torch.autograd.grad(ours.sum(), (q, k, v))
        g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
        assert all(torch.equal(a, b) for a, b in zip(g_ours, g_ref, strict=True))


def test_plain_calls_skip_python(entry, python_calls):
    q, k, v = _qkv()
    out = entry(q, k, v)
    out_causal = entry(q, k, v, is_causal=True, scale=0.5, dropout_p=0.0, backend="auto", mask=None)
    assert python_calls == []
    assert mha.last_backend() == "sdpa"
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(out_causal, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.5))


class _Subclass(torch.Tensor):
    pass


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "case",
    [
        "mask", "backend", "dropout", "score_mod", "return_weights", "forced", "rules_edited", "subclass",
        "function_mode", "keyword_q", "int_causal", "int_scale", "non_4d", "kv_mismatch",
    ],
)  # fmt: skip
def test_other_calls_go_to_python(entry, python_calls, case):
    q, k, v = _qkv()
    ref = None
    if case == "mask":
        mask = torch.ones(8, 8, dtype=torch.bool).tril()
        out = entry(q, k, v, mask=mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif case == "backend":
        out = entry(q, k, v, backend="math")
        assert mha.last_backend() == "math"
    elif case == "dropout":
        out = entry(q, k, v, dropout_p=0.5)
    elif case == "score_mod":
        out = entry(q, k, v, score_mod=lambda s, b, h, i, j: s, backend="eager")
    elif case == "return_weights":
        out, _ = entry(q, k, v, return_weights=True)
        assert mha.last_backend() == "eager"
    elif case == "forced":
        with mha.force_backend("math"):
            out = entry(q, k, v)
        assert mha.last_backend() == "math"
    elif case == "rules_edited":
        mha.BACKEND_RULES.append(mha.BACKEND_RULES[-1])
        try:
            out = entry(q, k, v)
        finally:
            mha.BACKEND_RULES.pop()
        assert mf._SHORT_TABLE is mha.BACKEND_RULES  # the edit undone turns the short path on again
    elif case == "subclass":
        out = entry(q.as_subclass(_Subclass), k, v)
        assert type(out) is _Subclass
    elif case == "function_mode":
        with _Mode():
            out = entry(q, k, v)
    elif case == "keyword_q":
        out = entry(q=q, k=k, v=v)
    elif case == "int_causal":
        out = entry(q, k, v, is_causal=1)
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif case == "int_scale":
        out = entry(q, k, v, scale=1)
        ref = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    elif case == "non_4d":
        with pytest.raises(ValueError, match="q must be 4-D"):
            entry(q[0], k, v)
        out = None
    elif case == "kv_mismatch":
        with pytest.raises(ValueError, match="k and v must share"):
            entry(q, k, v[:, :, :3])
        out = None
    assert python_calls  # the Python entry ran it
    if out is not None:
        expected = ref if ref is not None else mf._python_attention(q, k, v, **_case_kwargs(case))
        if case != "dropout":
            torch.testing.assert_close(out, expected)


def _case_kwargs(case):
    return {"backend": dict(backend="math"), "score_mod": dict(backend="eager")}.get(case, {})


def test_bad_keywords_and_arguments_raise_as_python_does(entry):
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        entry(q, k, v, foo=1)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        entry(q, k)
    with pytest.raises(ValueError, match="backend must be one of"):
        entry(q, k, v, backend="nope")
    with pytest.raises(TypeError):
        entry(q, k, v, scale="x")


@pytest.mark.compile
def test_compile_traces_the_python_entry(entry):
    q, k, v = _qkv(grad=True)

    def f(q, k, v):
        return entry(q, k, v, is_causal=True) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(q, k, v)
    torch.testing.assert_close(out, f(q, k, v))
    out.sum().backward()
    assert q.grad is not None

    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return entry(q, k, v)

    q, k, v = _qkv()
    exported = torch.export.export(M(), (q, k, v))
    torch.testing.assert_close(exported.module()(q, k, v), M()(q, k, v))


def test_a_fresh_import_loads_it_and_mha_native_0_turns_it_off(native, tmp_path):
    code = "import mha; print(mha.native_entry())"
    env = {key: val for key, val in os.environ.items() if key not in (_native.ENV_OFF, _native.ENV_DIR)}
    env["PYTHONPATH"] = REPO
    if native[1]:
        env[_native.ENV_DIR] = native[1]

    def fresh(env):
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return run

    on, off = fresh(env), fresh({**env, _native.ENV_OFF: "0"})
    assert off.stdout.strip() == "None"
    assert on.stdout.strip().endswith(f"{_native.module_name()}{_native._SUFFIX}")
    empty = fresh({**env, _native.ENV_DIR: str(tmp_path)})
    assert empty.stdout.strip() == "None"  # not built there: the Python entry, no error


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "shape, causal, grad, short",
    [
        ((16, 12, 197, 64), False, False, True),  # ViT-B inference: the host-bound call the entry is for
        ((16, 12, 197, 64), False, True, True),
        ((4, 8, 256, 64), True, True, True),
        ((4, 8, 64, 64), False, False, False),  # <= 128 keys without grad: memory-efficient, via Python
        ((4, 8, 64, 64), False, True, True),
        ((2, 8, 1024, 64), True, False, False),  # long: a plan, via Python
        ((2, 8, 1, 64), False, False, False),  # a decode step
    ],
)
def test_cuda_calls_match_the_python_entry(entry, python_calls, shape, causal, grad, short):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(grad)
        for _ in range(3)
    )
    with torch.set_grad_enabled(grad):
        out = entry(q, k, v, is_causal=causal)
        backend = mha.last_backend()
        assert bool(python_calls) is not short
        ref = mf._python_attention(q, k, v, is_causal=causal)
    assert mha.last_backend() == backend
    assert torch.equal(out, ref)
    if grad:
        g_out = torch.autograd.grad(out.float().sum(), (q, k, v))
        g_ref = torch.autograd.grad(ref.float().sum(), (q, k, v))
        for a, b in zip(g_out, g_ref, strict=True):  # same kernels; a backward may use atomics
            torch.testing.assert_close(a, b)


def test_a_broken_build_warns_and_keeps_the_python_entry():
    class Broken:
        __file__ = "/nowhere/mha_native.so"

        @staticmethod
        def setup(*args):
            raise RuntimeError("undefined symbol: at::foo")

    with pytest.warns(RuntimeWarning, match="undefined symbol.*python -m mha build"):
        assert mf._install_native(Broken()) is None


def test_load_without_a_build_damaged_or_when_off(native, monkeypatch, tmp_path):
    monkeypatch.delenv(_native.ENV_OFF, raising=False)
    monkeypatch.setenv(_native.ENV_DIR, str(tmp_path))
    assert _native.load() is None  # nothing built there
    folder = _native.build_directory()
    folder.mkdir(parents=True)
    built = native[1] and sorted(Path(native[1]).glob(f"native/*/{_native.module_name()}{_native._SUFFIX}"))
    good = built[0].read_bytes() if built else (Path(mha.native_entry()).read_bytes())
    library = folder / f"{_native.module_name()}{_native._SUFFIX}"
    library.write_bytes(good[:4096])  # a truncated library (an interrupted copy): dlopen would crash on it
    (folder / f"{_native.module_name()}.sha256").write_text(hashlib.sha256(good).hexdigest())
    with pytest.warns(RuntimeWarning, match="does not match its checksum"):
        assert _native.load() is None
    (folder / f"{_native.module_name()}.sha256").unlink()
    with pytest.warns(RuntimeWarning, match="does not match its checksum"):
        assert _native.load() is None  # no checksum: never published by `python -m mha build`
    monkeypatch.setenv(_native.ENV_OFF, "0")
    assert _native.load() is None


def test_an_unreadable_cache_warns_instead_of_failing_the_import(monkeypatch):
    def unreadable():
        raise PermissionError(13, "Permission denied", "/root/.cache/mha")

    monkeypatch.delenv(_native.ENV_OFF, raising=False)
    monkeypatch.setattr(_native, "build_directory", unreadable)
    with pytest.warns(RuntimeWarning, match="Permission denied"):
        assert _native.load() is None


def test_last_backend_after_a_failing_call_is_the_python_entrys(entry):
    q, k, v = _qkv()
    reports = []
    for fn in (entry, mf._python_attention):
        mf._STATE["last"] = "before"
        with pytest.raises(RuntimeError) as raised:
            fn(q, k.double(), v)  # passes the checks, fails in SDPA (mixed dtypes)
        reports.append((mha.last_backend(), str(raised.value)))
    assert reports[0] == reports[1]
