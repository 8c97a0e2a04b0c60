"""Optional compiled entry point for ``mha.attention`` (C++, built with torch's own extension tooling).

Why: a plain call on a short sequence (ViT-B, (16, 12, 197, 64) bf16 forward) is host-bound: its kernel takes
less time than issuing it, so the Python that validates the call and picks the kernel shows in its wall time
(ours 0.92x F.sdpa with the Python short path on an H100 host; 0.95-0.97x with this entry:
``bench/diag_cpp_entry.py``, ``bench/host_overhead.py``).  This entry does, in C++, exactly what
``mha.functional._short_call`` does for a plain call (the same checks, the same F.sdpa call, the same kernel
report) and hands every other call, with its arguments untouched, to the Python ``attention``.  It is
published atomically with a checksum that ``load()`` verifies; ``load()`` never raises.  Under
``torch.compile`` the Python ``attention`` is traced in its place (``torch.compiler.substitute_in_graph``), so
graphs are the same with or without it.

It is optional: nothing needs it, and ``mha`` never compiles anything at import.  Build it once per
torch/Python install with ``python -m mha build`` (``make setup`` does; it needs a C++ compiler, ninja and
the Python headers, ~40 s); later imports load the built module from ``~/.cache/mha`` (or
``$MHA_NATIVE_DIR``).  ``MHA_NATIVE=0`` turns it off; ``mha.native_entry()`` says whether it is in use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/csrc/Exceptions.h>

namespace {

PyObject* g_impl = nullptr;     // mha.functional's Python attention (every call this entry does not take)
PyObject* g_state = nullptr;    // mha.functional._STATE
PyObject* g_globals = nullptr;  // mha.functional's namespace (BACKEND_RULES, _SHORT_TABLE)
PyObject* s_last = nullptr;
PyObject* s_forced = nullptr;
PyObject* s_sdpa = nullptr;
PyObject* s_rules = nullptr;
PyObject* s_short = nullptr;
PyObject* s_auto = nullptr;
enum Kw { MASK, IS_CAUSAL, SCALE, DROPOUT_P, SCORE_MOD, BLOCK_MASK, BACKEND, RETURN_WEIGHTS, N_KW };
const char* kw_names[N_KW] = {"mask", "is_causal", "scale", "dropout_p", "score_mod", "block_mask", "backend",
                              "return_weights"};
PyObject* s_kw[N_KW];

int keyword(PyObject* name) {
  for (int i = 0; i < N_KW; ++i)
    if (name == s_kw[i]) return i;
  for (int i = 0; i < N_KW; ++i)
    if (PyUnicode_Compare(name, s_kw[i]) == 0) return i;
  return -1;
}

// _short_call's test of a plain call, in the same order (see mha/functional.py)
bool short_call_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool is_causal) {
  if (k.dim() != 4) return false;
  auto ks = k.sizes();
  bool cuda = q.is_cuda();
  if (cuda) {
    auto t = q.scalar_type();
    if (ks[2] > 256 || ks[3] > 128 || !(t == at::kHalf || t == at::kBFloat16)) return false;
  }
  if (q.dim() != 4 || !v.sizes().equals(ks)) return false;
  auto qs = q.sizes();
  if (qs[0] != ks[0] || qs[1] != ks[1] || qs[3] != ks[3] || (is_causal && qs[2] != ks[2])) return false;
  if (cuda) {
    bool grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
    if (!(qs[2] != 1 && 0 < qs[0] * qs[1] && qs[0] * qs[1] <= 512 && (ks[2] > 128 || grad))) return false;
  }
  return true;
}

PyObject* attention(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  HANDLE_TH_ERRORS
  bool is_causal = false;
  PyObject* scale = Py_None;
  if (nargs != 3 || !THPVariable_CheckExact(args[0]) || !THPVariable_CheckExact(args[1]) ||
      !THPVariable_CheckExact(args[2]))
    goto python;
  if (kwnames != nullptr) {
    Py_ssize_t n = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* val = args[nargs + i];
      switch (keyword(PyTuple_GET_ITEM(kwnames, i))) {
        case IS_CAUSAL:
          if (val != Py_True && val != Py_False) goto python;
          is_causal = val == Py_True;
          break;
        case SCALE:
          if (val != Py_None && !PyFloat_CheckExact(val)) goto python;
          scale = val;
          break;
        case DROPOUT_P:
          if (!(PyFloat_CheckExact(val) && PyFloat_AS_DOUBLE(val) == 0.0) &&
              !(PyLong_CheckExact(val) && PyObject_Not(val) == 1))
            goto python;
          break;
        case BACKEND:
          if (val != s_auto && !(PyUnicode_CheckExact(val) && PyUnicode_Compare(val, s_auto) == 0))
            goto python;
          break;
        case RETURN_WEIGHTS:
          if (val != Py_False) goto python;
          break;
        case MASK:
        case SCORE_MOD:
        case BLOCK_MASK:
          if (val != Py_None) goto python;
          break;
        default:
          goto python;  // an unknown keyword: the Python function raises the TypeError
      }
    }
  }
  {
    // _short_call's global conditions: shipped rules, nothing forced, no torch-function mode to honour
    PyObject* forced = PyDict_GetItemWithError(g_state, s_forced);
    PyObject* rules = PyDict_GetItemWithError(g_globals, s_rules);
    PyObject* shipped = PyDict_GetItemWithError(g_globals, s_short);
    if (forced != Py_None || rules != shipped || PyErr_Occurred() || at::impl::torch_function_mode_enabled())
      goto python;
    const at::Tensor& q = THPVariable_Unpack(args[0]);
    const at::Tensor& k = THPVariable_Unpack(args[1]);
    const at::Tensor& v = THPVariable_Unpack(args[2]);
    if (!short_call_applies(q, k, v, is_causal)) goto python;
    std::optional<double> s;
    if (scale != Py_None) s = PyFloat_AS_DOUBLE(scale);
    if (PyDict_SetItem(g_state, s_last, s_sdpa) < 0) return nullptr;  // before the call, as _short_call does
    at::Tensor out;
    {
      pybind11::gil_scoped_release no_gil;  // as torch's own bindings do
      out = at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, is_causal, s);
    }
    return THPVariable_Wrap(std::move(out));
  }
python:
  PyErr_Clear();
  return PyObject_Vectorcall(g_impl, args, nargs, kwnames);
  END_HANDLE_TH_ERRORS
}

PyMethodDef attention_def = {"attention", (PyCFunction)(void (*)(void))attention,
                             METH_FASTCALL | METH_KEYWORDS, nullptr};

// keeps the Python attention, _STATE and the module namespace; returns the entry, documented as `doc`
py::object setup(py::object impl, py::object state, py::object globals, const std::string& doc,
                 py::object module_name) {
  g_impl = impl.release().ptr();
  g_state = state.release().ptr();
  g_globals = globals.release().ptr();
  s_last = PyUnicode_InternFromString("last");
  s_forced = PyUnicode_InternFromString("forced");
  s_sdpa = PyUnicode_InternFromString("sdpa");
  s_rules = PyUnicode_InternFromString("BACKEND_RULES");
  s_short = PyUnicode_InternFromString("_SHORT_TABLE");
  s_auto = PyUnicode_InternFromString("auto");
  for (int i = 0; i < N_KW; ++i) s_kw[i] = PyUnicode_InternFromString(kw_names[i]);
  attention_def.ml_doc = strdup(doc.c_str());  // lives as long as the process, like the function
  return py::reinterpret_steal<py::object>(PyCFunction_NewEx(&attention_def, nullptr, module_name.ptr()));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("setup", &setup); }
"""

ENV_OFF = "MHA_NATIVE"
ENV_DIR = "MHA_NATIVE_DIR"


def enabled() -> bool:
    """False when ``MHA_NATIVE`` is 0/false/no/off."""
    return os.environ.get(ENV_OFF, "1").strip().lower() not in ("0", "false", "no", "off")


_SUFFIX = ".pyd" if sys.platform == "win32" else ".so"  # what torch's extension builder writes


@functools.cache
def module_name() -> str:
    """The built module's name: a hash of the source, torch's build and the Python ABI and platform (a new one
    of any of them needs a new build)."""
    torch_id = (torch.__version__, str(torch.version.git_version), str(torch._C._GLIBCXX_USE_CXX11_ABI))
    key = "\n".join((SOURCE, *torch_id, sys.version, sys.platform, platform.machine()))
    return "mha_native_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def build_directory() -> Path:
    """Where the module is built and looked for: ``$MHA_NATIVE_DIR``, else ``$XDG_CACHE_HOME/mha`` or
    ``~/.cache/mha``, then ``native/<module_name()>``."""
    root = os.environ.get(ENV_DIR)
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(cache) / "mha")
    return Path(root).expanduser() / "native" / module_name()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(verbose: bool = False) -> Path:
    """Compile the entry for this torch/Python install (needs a C++ compiler, ninja, the Python headers) and
    publish it atomically: built in a staging folder, then moved into ``build_directory()`` with a checksum
    that ``load()`` verifies, so no process ever loads a half-written library.  Returns its path."""
    from torch.utils.cpp_extension import load_inline

    final = build_directory()
    final.mkdir(parents=True, exist_ok=True)
    name = module_name()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
    # torch runs `ninja` from PATH: add the folders where pip puts it (this interpreter's, the ninja wheel's)
    dirs = [str(Path(sys.executable).parent)]
    try:
        import ninja

        dirs.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([*dirs, old_path])
    try:
        load_inline(
            name, cpp_sources=SOURCE, extra_cflags=["-O2"], build_directory=str(staging), verbose=verbose
        )
        built = staging / f"{name}{_SUFFIX}"
        digest = _digest(built)
        target = final / f"{name}{_SUFFIX}"
        os.replace(built, target)  # same file system: atomic
        checksum = final / f"{name}.sha256"
        tmp = staging / "sha256"
        tmp.write_text(digest)
        os.replace(tmp, checksum)
        return target
    finally:
        os.environ["PATH"] = old_path
        shutil.rmtree(staging, ignore_errors=True)


def warn(message: str) -> None:
    """A ``RuntimeWarning`` at the code that imported ``mha`` (the entry is optional: never an error)."""
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def load() -> ModuleType | None:
    """The built module, or ``None``: not built for this install, turned off with ``MHA_NATIVE=0``, or not
    loadable (a warning says why).  Never raises: the entry is an optional speed-up."""
    if not enabled():
        return None
    try:
        name = module_name()
        folder = build_directory()
        path = folder / f"{name}{_SUFFIX}"
        if not path.is_file():
            return None
        checksum = folder / f"{name}.sha256"
        if not checksum.is_file() or checksum.read_text().strip() != _digest(path):
            warn(
                f"mha: the compiled entry {path} does not match its checksum (an interrupted or foreign "
                f"build); using the Python entry. Rebuild it with `{ENV_OFF}=0 python -m mha build`."
            )
            return None
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - an unreadable cache, a broken library: say so, go on without
        warn(
            f"mha: could not load the compiled entry ({type(err).__name__}: {err}); using the Python entry. "
            f"Rebuild it with `{ENV_OFF}=0 python -m mha build`, or set {ENV_OFF}=0."
        )
        return None
    return module
