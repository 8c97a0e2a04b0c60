"""The attention benchmark script runs (CPU smoke shapes) and its statistics mean what the tables say."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.attention import paired_ratio  # noqa: E402


def test_paired_ratio_is_reference_over_ours_per_pass() -> None:
    # ours twice as fast in every pass, whatever the drift between passes
    ref = [2.0, 4.0, 8.0, 2.0, 6.0]
    ours = [1.0, 2.0, 4.0, 1.0, 3.0]
    assert paired_ratio(ref, ours) == (2.0, 2.0, 2.0)
    med, lo, hi = paired_ratio([1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 1.0, 0.5, 1.0])
    assert med == 1.0 and lo < 1.0 < hi


def smoke_run(script: str, out: Path) -> subprocess.CompletedProcess:
    """``bench/<script>`` on the CPU smoke shape, two passes, raw results to ``out``; it must exit 0."""
    cmd = [sys.executable, f"bench/{script}", "--device", "cpu", "--shapes", "tiny,tiny-masked"]
    cmd += ["--samples", "2", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_cpu_smoke_run_writes_both_tables(tmp_path: Path) -> None:
    out = tmp_path / "attn.json"
    proc = smoke_run("attention.py", out)
    results = json.loads(out.read_text())
    assert {(r["level"], r["shape"], r["pass"]) for r in results} == {
        (level, shape, mode)
        for level, shape in (("kernel", "tiny"), ("kernel", "tiny-masked"), ("module", "tiny"))
        for mode in ("fwd", "fwdbwd")
    }  # (the module level has no peer for GQA with unequal lengths)
    for res in results:
        ours = res["rows"][0]
        assert ours["name"].startswith("ours")
        assert isinstance(ours["ms"], float) and ours["ms"] > 0 and ours["host_us"] > 0
        assert ours["backend"] is not None
        assert ours["err"] is not None and ours["err"] < 1e-5  # the same numbers as the reference row
        if res["level"] == "kernel":  # against SDPA's default and against our own twin (A/A)
            assert {"sdpa (default choice)", "ours again (A/A)"} <= set(ours["paired"])
        else:
            assert all("ours" in row["paired"] for row in res["rows"][1:] if isinstance(row["ms"], float))
    assert "| ours (auto) |" in proc.stdout
    masked = [r for r in results if r["shape"] == "tiny-masked"]
    assert all("sdpa (default choice, k/v repeated)" in [row["name"] for row in r["rows"]] for r in masked)
