"""Diagnostic (2026-11-24): would a compiled (C++) entry point close the host-time gap at ViT-B forward?

The open question of issue 2: at (16,12,197,64) bf16 forward the call is host-bound and ``mha.attention``'s
Python short path costs 5-10% of it.  This script builds, with ``torch.utils.cpp_extension.load_inline``
(needs a C++ compiler, ninja and the Python headers), the short path's checks in C++ (the same checks as
``mha.functional._short_call``: 4-D, equal batch/heads/head_dim, ``v`` shaped like ``k``, causal square, the
CUDA "host time dominates" bounds, the kernel report) and times, against F.sdpa in the same process, rows
interleaved as ``bench/attention.py`` does:

- ``mha.attention`` as shipped (Python short path);
- ``python front + C++ checks``: a Python function with ``mha.attention``'s signature that tests the
  plain-call flags and ``torch.compiler.is_compiling()`` and then calls the C++ checks (what a C++ entry
  behind the documented, traceable Python function would cost);
- ``C++ builtin, full signature``: the C++ function called directly with ``mha.attention``'s keyword-only
  signature (pybind11 ``kw_only``), the plain-call flags tested in C++, at the price of a builtin that
  ``torch.compile`` cannot trace;
- ``C++ fastcall, full signature``: the same as a raw ``METH_FASTCALL | METH_KEYWORDS`` CPython function
  (keywords matched by name, no pybind11 argument machinery): the least a compiled entry costs.

Run from the repository root on a CUDA machine: ``python bench/diag_cpp_entry.py``.  Not part of ``mha``.
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench.attention as ba  # noqa: E402
import mha  # noqa: E402
import mha.functional as mf  # noqa: E402

SOURCE = r"""
#include <torch/extension.h>
namespace py = pybind11;

static PyObject* g_state = nullptr;  // mha.functional._STATE, kept alive for the process

static bool checks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal) {
  if (q.dim() != 4 || k.dim() != 4 || !v.sizes().equals(k.sizes())) return false;
  auto qs = q.sizes();
  auto ks = k.sizes();
  if (qs[0] != ks[0] || qs[1] != ks[1] || qs[3] != ks[3] || (is_causal && qs[2] != ks[2])) return false;
  if (q.is_cuda()) {
    auto t = q.scalar_type();
    if (ks[2] > 256 || ks[3] > 128 || !(t == at::kHalf || t == at::kBFloat16)) return false;
    if (qs[2] == 1 || qs[0] * qs[1] <= 0 || qs[0] * qs[1] > 512) return false;
    bool grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
    if (ks[2] <= 128 && !grad) return false;
  }
  return true;
}

static py::object run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal,
                      const py::object& scale) {
  c10::optional<double> s;
  if (!scale.is_none()) s = scale.cast<double>();
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;  // as torch's own bindings do
    out = at::scaled_dot_product_attention(q, k, v, c10::nullopt, 0.0, is_causal, s);
  }
  PyDict_SetItemString(g_state, "last", py::str("sdpa").ptr());
  return py::cast(out);
}

py::object short_call(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal,
                      const py::object& scale) {
  if (!checks(q, k, v, is_causal)) return py::none();
  return run(q, k, v, is_causal, scale);
}

py::object builtin(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const py::object& mask,
                   bool is_causal, const py::object& scale, double dropout_p, const py::object& score_mod,
                   const py::object& block_mask, const std::string& backend, bool return_weights) {
  if (!mask.is_none() || backend != "auto" || dropout_p != 0.0 || !score_mod.is_none() ||
      !block_mask.is_none() || return_weights || !checks(q, k, v, is_causal))
    return py::none();  // a real entry would call the Python implementation here
  return run(q, k, v, is_causal, scale);
}

// a raw METH_FASTCALL | METH_KEYWORDS function: the keywords matched by name without pybind11's machinery
static PyObject* fast(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  if (nargs != 3 || !THPVariable_Check(args[0]) || !THPVariable_Check(args[1]) || !THPVariable_Check(args[2]))
    Py_RETURN_NONE;
  bool is_causal = false;
  PyObject* scale = Py_None;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    PyObject* name = PyTuple_GET_ITEM(kwnames, i);
    PyObject* val = args[nargs + i];
    if (PyUnicode_CompareWithASCIIString(name, "is_causal") == 0) {
      if (val != Py_True && val != Py_False) Py_RETURN_NONE;
      is_causal = val == Py_True;
    } else if (PyUnicode_CompareWithASCIIString(name, "scale") == 0) {
      scale = val;
    } else if (PyUnicode_CompareWithASCIIString(name, "mask") == 0 ||
               PyUnicode_CompareWithASCIIString(name, "score_mod") == 0 ||
               PyUnicode_CompareWithASCIIString(name, "block_mask") == 0) {
      if (val != Py_None) Py_RETURN_NONE;
    } else if (PyUnicode_CompareWithASCIIString(name, "return_weights") == 0) {
      if (val != Py_False) Py_RETURN_NONE;
    } else if (PyUnicode_CompareWithASCIIString(name, "dropout_p") == 0) {
      if (PyObject_IsTrue(val) != 0) Py_RETURN_NONE;
    } else if (PyUnicode_CompareWithASCIIString(name, "backend") == 0) {
      if (!PyUnicode_Check(val) || PyUnicode_CompareWithASCIIString(val, "auto") != 0) Py_RETURN_NONE;
    } else {
      Py_RETURN_NONE;
    }
  }
  const at::Tensor& q = THPVariable_Unpack(args[0]);
  const at::Tensor& k = THPVariable_Unpack(args[1]);
  const at::Tensor& v = THPVariable_Unpack(args[2]);
  if (!checks(q, k, v, is_causal)) Py_RETURN_NONE;
  c10::optional<double> s;
  if (scale != Py_None) {
    s = PyFloat_AsDouble(scale);
    if (PyErr_Occurred()) return nullptr;
  }
  at::Tensor out;
  {
    py::gil_scoped_release no_gil;
    out = at::scaled_dot_product_attention(q, k, v, c10::nullopt, 0.0, is_causal, s);
  }
  PyDict_SetItemString(g_state, "last", py::str("sdpa").ptr());
  return THPVariable_Wrap(std::move(out));
}

static PyMethodDef fast_def = {"fast", (PyCFunction)(void (*)(void))fast, METH_FASTCALL | METH_KEYWORDS,
                               nullptr};

void set_state(py::object state) { g_state = state.release().ptr(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("short_call", &short_call);
  m.def("set_state", &set_state);
  m.def("builtin", &builtin, py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(),
        py::arg("mask") = py::none(), py::arg("is_causal") = false, py::arg("scale") = py::none(),
        py::arg("dropout_p") = 0.0, py::arg("score_mod") = py::none(), py::arg("block_mask") = py::none(),
        py::arg("backend") = "auto", py::arg("return_weights") = false);
  m.add_object("fast", py::reinterpret_steal<py::object>(PyCFunction_NewEx(&fast_def, nullptr, nullptr)));
}
"""


def main() -> None:
    from torch.utils.cpp_extension import load_inline

    t0 = time.perf_counter()
    ext = load_inline("mha_diag_cpp_entry", cpp_sources=SOURCE, extra_cflags=["-O2"], verbose=False)
    print(f"built the C++ entry in {time.perf_counter() - t0:.1f} s", flush=True)
    ext.set_state(mf._STATE)
    short = ext.short_call
    compiling = torch.compiler.is_compiling

    def front(q, k, v, *, mask=None, is_causal=False, scale=None, dropout_p=0.0, score_mod=None,
              block_mask=None, backend="auto", return_weights=False):  # fmt: skip
        if (
            mask is None
            and backend == "auto"
            and not dropout_p
            and score_mod is None
            and block_mask is None
            and not return_weights
            and not compiling()
        ):
            out = short(q, k, v, is_causal, scale)
            if out is not None:
                return out
        return mha.attention(q, k, v, mask=mask, is_causal=is_causal, scale=scale)

    ba.GPU_ROUNDS = 1
    q, k, v = (torch.randn(16, 12, 197, 64, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    ref = F.scaled_dot_product_attention(q, k, v)
    for name, fn in (("front", front), ("builtin", ext.builtin), ("fast", ext.fast)):
        mf._STATE["last"] = None
        out = fn(q, k, v, is_causal=False)
        assert out is not None and torch.equal(out, ref) and mha.last_backend() == "sdpa", name
    fns = {
        "F.sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=False),
        "F.sdpa A/A": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=False),
        "mha.attention (Python)": lambda: mha.attention(q, k, v, is_causal=False),
        "python front + C++ checks": lambda: front(q, k, v, is_causal=False),
        "C++ builtin, full signature": lambda: ext.builtin(q, k, v, is_causal=False),
        "C++ fastcall, full signature": lambda: ext.fast(q, k, v, is_causal=False),
    }
    ba.print_paired(fns, runs=3)


if __name__ == "__main__":
    main()
