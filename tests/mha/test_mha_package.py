"""``mha`` as a package of its own: torch is its only dependency, and ``import mha`` costs little."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = (
    "lightning",
    "hydra",
    "omegaconf",
    "timm",
    "datasets",
    "torchvision",
    "torchaudio",
    "matplotlib",
)


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter from the repository root; return its stdout (it must exit 0)."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_costs_little_after_torch():
    """``import mha`` after ``import torch``: under 0.3 s (a loose bound; it is tens of milliseconds)."""
    code = "import time, torch\nt = time.perf_counter()\nimport mha\nprint(time.perf_counter() - t)"
    seconds = min(float(run_python(code)) for _ in range(2))
    assert seconds < 0.3, f"import mha took {seconds:.3f} s after import torch"


def test_core_runs_without_the_application_packages():
    """With the application's packages unimportable, ``mha`` imports and a module runs forward."""
    code = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {APP_PACKAGES!r}:
            raise ImportError(f"{{name}} is blocked: mha must not need it")
        return None

sys.meta_path.insert(0, Block())
import torch
import mha

attn = mha.MultiHeadAttention(32, 4, num_kv_heads=2)
out, _ = attn(torch.randn(2, 5, 32), key_padding_mask=mha.padding_mask(torch.tensor([5, 3])))
assert out.shape == (2, 5, 32) and torch.isfinite(out).all()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {APP_PACKAGES!r})
print("loaded:", loaded)
"""
    assert run_python(code).strip() == "loaded: []"


def test_pyproject_core_dependency_is_torch_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]]
    assert names == ["torch"], project["dependencies"]
