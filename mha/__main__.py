"""``python -m mha build``: compile ``mha.attention``'s optional C++ entry for this torch/Python install.

Needs a C++ compiler, ninja and the Python headers (~40 s).  Without them ``mha`` runs on its Python entry,
as it does before the build; ``--strict`` makes that an error (exit 1).  An entry already built and intact is
kept (``--force`` rebuilds it).  ``MHA_NATIVE=0 python -m mha build`` rebuilds without loading the old one
(the way out of a damaged cache).  See ``mha/_native.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

from . import _native
from .functional import native_entry


def _in_use_by_a_fresh_import() -> tuple[str | None, str]:
    """What ``mha.native_entry()`` says in a new interpreter (``MHA_NATIVE`` unset), and its stderr."""
    env = {key: val for key, val in os.environ.items() if key != _native.ENV_OFF}
    check = "import mha; print(mha.native_entry())"
    got = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env)
    lines = got.stdout.strip().splitlines()
    path = lines[-1] if got.returncode == 0 and lines and lines[-1] != "None" else None
    return path, got.stderr


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print("usage: python -m mha build [--strict] [--force] [-v]", file=sys.stderr)
        return 2
    strict = "--strict" in argv
    if native_entry() and "--force" not in argv:  # (`python -m mha` has imported mha: loaded and checked)
        print(f"mha: compiled entry already built and in use: {native_entry()} (--force rebuilds it)")
        return 0
    try:
        target = _native.build(verbose="-v" in argv)
    except Exception as err:  # noqa: BLE001 - no compiler/ninja/headers: say why; mha keeps its Python entry
        print(f"mha: the compiled entry was not built ({type(err).__name__}: {err}); using the Python entry")
        return 1 if strict else 0
    path, stderr = _in_use_by_a_fresh_import()  # a fresh interpreter must load it, as a user's import will
    if not path:
        print(f"mha: built {target}, but a fresh import did not load it: {stderr[-500:]}")
        return 1 if strict else 0
    if not _native.enabled():
        print(f"mha: compiled entry built: {path} (not used while {_native.ENV_OFF}=0 is set)")
        return 0
    print(f"mha: compiled entry built and in use: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
