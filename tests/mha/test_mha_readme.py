"""The Python snippets of ``mha/README.md`` run as written against the current API (on CPU, small shapes).

The snippets leave their inputs undefined (``pad``, ``memory``, ``q``...); ``NAMES`` defines them. A line
that forces a CUDA-only kernel (``backend="flash"``) is skipped without a GPU.
"""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[2] / "mha" / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def names() -> dict:
    torch.manual_seed(0)
    b, h, hkv, lq, lk, d = 2, 4, 2, 5, 7, 8
    return {
        "pad": torch.rand(4, 100) > 0.8,
        "memory": torch.randn(4, 30, 256),
        "old_module": nn.MultiheadAttention(256, 8, batch_first=True),
        "q": torch.randn(b, h, lq, d),
        "k": torch.randn(b, hkv, lk, d),
        "v": torch.randn(b, hkv, lk, d),
        "m": torch.rand(b, 1, lq, lk) > 0.3,
        "my_mod": lambda score, b, h, q_idx, kv_idx: score - (q_idx - kv_idx).abs(),
        "src": torch.randn(2, 9, 512),
        "src_pad": torch.arange(9)[None, :] >= torch.tensor([[9], [6]]),
        "tok_emb": torch.randn(2, 1, 512),
        "max_len": 3,
        "beam_index": torch.tensor([1, 0]),
    }


def test_readme_has_the_snippets():
    assert len(SNIPPETS) >= 3
    assert any("MultiHeadAttention.from_torch" in s for s in SNIPPETS)


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index):
    code = SNIPPETS[index]
    if not torch.cuda.is_available():
        code = "\n".join(line for line in code.splitlines() if 'backend="flash"' not in line)
    scope = names()
    exec(compile(code, f"mha/README.md snippet {index}", "exec"), scope)
    if "attn" in scope:  # the drop-in snippet: the loaded module matches the original
        x = torch.randn(2, 6, 256)
        expected, _ = scope["old_module"](x, x, x)
        got, _ = scope["attn"](x)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
