"""``python -m mha build``: compile ``mha.attention``'s optional C++ entry for this torch/Python install.

Needs a C++ compiler, ninja and the Python headers (~40 s).  Without them ``mha`` runs on its Python entry,
as it does before the build; ``--strict`` makes that an error (exit 1).  See ``mha/_native.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

from . import _native


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print("usage: python -m mha build [--strict] [-v]", file=sys.stderr)
        return 2
    strict = "--strict" in argv
    if not _native.enabled():
        print(f"mha: {_native.ENV_OFF}=0 is set: nothing built")
        return 0
    try:
        _native.build(verbose="-v" in argv)
    except Exception as err:  # noqa: BLE001 - no compiler/ninja/headers: say why; mha keeps its Python entry
        print(f"mha: the compiled entry was not built ({type(err).__name__}: {err}); using the Python entry")
        return 1 if strict else 0
    # a fresh interpreter must load it, as a user's import will
    check = "import mha; print(mha.native_entry())"
    got = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=os.environ.copy())
    path = got.stdout.strip().splitlines()[-1] if got.returncode == 0 and got.stdout.strip() else "None"
    if path == "None":
        where = _native.build_directory()
        print(f"mha: built in {where}, but a fresh import did not load it: {got.stderr[-500:]}")
        return 1 if strict else 0
    print(f"mha: compiled entry built and in use: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
