"""The translate command (``python -m tasks.translation.translate``) as the READMEs show it, its options
(beam, length penalty, output limit, batch), input files with blank lines, and its bad options."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tasks.translation.translate as translate_cli
from tasks.translation.translate import Translator, main
from tests.conftest import REPO


@pytest.fixture(scope="module")
def ckpt(trained, tmp_path_factory) -> Path:
    """The tiny trained model as a run folder: tokenizer, ``translation.json``, ``checkpoints/best.ckpt``."""
    run = tmp_path_factory.mktemp("translate_run")
    trained.task.save_artifacts(trained.model, trained.dm, run)
    (run / "checkpoints").mkdir()
    path = run / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def sources(trained) -> list[str]:
    return [s for s, _ in trained.dm.corpus.test[:8]]


def _run(args: list[str], capsys, stdin: str | None = None, monkeypatch=None) -> list[str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(args) == 0
    return capsys.readouterr().out.splitlines()


def readme_translate_commands() -> list[str]:
    """Every ``python -m tasks.translation.translate`` line of README.md and the translation README (with
    its ``\\`` continuation and a ``cat FILE |`` in front), without duplicates."""
    found = []
    for readme in (REPO / "README.md", REPO / "tasks" / "translation" / "README.md"):
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if "-m tasks.translation.translate" in line and line not in found:
                    found.append(line)
    return found


COMMANDS = readme_translate_commands()


def test_the_readmes_have_the_commands():
    assert len(COMMANDS) >= 4
    assert any("--file -" in c for c in COMMANDS) and any("beam=5" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_translate_commands(command: str, ckpt: Path, sources, tmp_path, capsys, monkeypatch):
    """Each README line as written (its checkpoint: the tiny model's; ``sentences.txt``: test sources with
    a blank line; ``device=cuda`` on a machine without CUDA: ``device=cpu``): one output line per input
    line, each the translation ``Translator`` gives with the same options."""
    monkeypatch.chdir(tmp_path)
    lines = [sources[0], "", sources[1], sources[2]]
    Path("sentences.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pipe, _, command = command.rpartition("|")
    words = shlex.split(command)
    args = words[words.index("tasks.translation.translate") + 1 :]
    args = [f"ckpt={ckpt}" if a.startswith("ckpt=") else a for a in args]
    if "device=cuda" in args and not torch.cuda.is_available():
        args[args.index("device=cuda")] = "device=cpu"
    stdin = Path(shlex.split(pipe)[1]).read_text(encoding="utf-8") if pipe else None
    out = _run(args, capsys, stdin, monkeypatch)
    expected_in, rest = [], iter(args)  # the input lines in the order main reads them
    for arg in rest:
        if arg == "--file":
            next(rest)
            expected_in += lines
        elif "=" not in arg and arg != "greedy":
            expected_in.append(arg)
    assert len(out) == len(expected_in)
    beam = 1 if "greedy" in args else next((int(a[5:]) for a in args if a.startswith("beam=")), None)
    translated = Translator(ckpt)([s for s in expected_in if s], beam_size=beam)
    assert [o for o, s in zip(out, expected_in, strict=True) if s] == translated
    assert all(o == "" for o, s in zip(out, expected_in, strict=True) if not s)


def test_the_module_runs_from_a_pipe(ckpt: Path, sources):
    """The real entry point, reading standard input (``--file -``), greedy."""
    text = f"{sources[0]}\n\n{sources[1]}\n"
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.translation.translate", f"ckpt={ckpt}", "--file", "-", "greedy"],
        cwd=REPO,
        input=text,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        *Translator(ckpt)([sources[0]], beam_size=1),
        "",
        *Translator(ckpt)([sources[1]], beam_size=1),
    ]


def test_options_reach_the_search(ckpt: Path, capsys, monkeypatch):
    """``beam``, ``alpha``, ``lp``, ``max_len_a`` / ``max_len_b`` go to the search as given; without them the
    run's own decode settings (``translation.json``) apply."""
    calls = []
    real = translate_cli.translate_ids
    keys = ("beam_size", "alpha", "lp_style", "max_len_a", "max_len_b")

    def spy(model, src, **kwargs):
        calls.append({k: kwargs[k] for k in keys})
        return real(model, src, **kwargs)

    monkeypatch.setattr(translate_cli, "translate_ids", spy)
    _run([f"ckpt={ckpt}", "forty-two"], capsys)
    assert calls[-1] == {"beam_size": 3, "alpha": 0.6, "lp_style": "gnmt", "max_len_a": 1.5, "max_len_b": 10}
    _run(
        [f"ckpt={ckpt}", "forty-two", "beam=4", "alpha=2.5", "lp=length", "max_len_a=0.5", "max_len_b=3"],
        capsys,
    )
    assert calls[-1] == {"beam_size": 4, "alpha": 2.5, "lp_style": "length", "max_len_a": 0.5, "max_len_b": 3}
    _run([f"ckpt={ckpt}", "forty-two", "greedy", "lp=none"], capsys)
    assert calls[-1]["beam_size"] == 1 and calls[-1]["lp_style"] == "none"


@pytest.mark.parametrize("lp,alpha", [("none", 0.0), ("length", 3.0), ("gnmt", 1.0)])
def test_length_penalty_options_translate_as_the_translator_does(lp, alpha, ckpt: Path, sources, capsys):
    out = _run([f"ckpt={ckpt}", *sources, "beam=4", f"alpha={alpha}", f"lp={lp}"], capsys)
    assert out == Translator(ckpt)(sources, beam_size=4, alpha=alpha, lp_style=lp)


def test_output_limit_options_cut_the_translations(ckpt: Path, sources, capsys):
    """``max_len_a=0 max_len_b=1``: at most one target token per sentence."""
    out = _run([f"ckpt={ckpt}", *sources, "max_len_a=0", "max_len_b=1"], capsys)
    tokenizer = Translator(ckpt).tgt_tokenizer
    assert len(out) == len(sources) and all(len(tokenizer.encode(o).ids) <= 1 for o in out)


@pytest.mark.parametrize("batch", [1, 2, 64])
def test_blank_lines_keep_the_alignment_at_any_batch_size(batch: int, ckpt: Path, sources, tmp_path, capsys):
    """Blank, whitespace-only and CRLF lines: output line i belongs to input line i, whichever batch the
    sentences fall in; the text lines translate as they do alone."""
    raw = f"\r\n{sources[0]}\r\n   \r\n{sources[1]}\n\n\n{sources[2]}\n  {sources[3]}  \n\n"
    path = tmp_path / "in.txt"
    path.write_bytes(raw.encode("utf-8"))
    out = _run([f"ckpt={ckpt}", "--file", str(path), f"batch={batch}", "beam=2"], capsys)
    lines = raw.splitlines()
    assert len(out) == len(lines) == 9
    assert [o for o, s in zip(out, lines, strict=True) if not s.strip()] == [""] * 5
    alone = [Translator(ckpt)([s], beam_size=2)[0] for s in sources[:4]]
    assert [o for o, s in zip(out, lines, strict=True) if s.strip()] == alone


@pytest.mark.parametrize(
    "args,message",
    [
        (["beam=five", "forty-two"], r"beam='five' is not an integer"),
        (["alpha=x", "forty-two"], r"alpha='x' is not a number"),
        (["max_len_b=1.5", "forty-two"], r"max_len_b='1.5' is not an integer"),
        (["beem=5", "forty-two"], r"unknown option 'beem=5'; known options: ckpt, beam"),
        (["--file"], r"--file needs a path"),
        (["--file", "no-such-file.txt"], r"--file no-such-file.txt: no such file"),
        ([], r"no sentences"),
    ],
)
def test_bad_options_stop_with_one_line(args, message, ckpt: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=message):
        main([f"ckpt={ckpt}", *args])


def test_an_empty_input_file_is_no_sentences(ckpt: Path, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SystemExit, match="no sentences"):
        main([f"ckpt={ckpt}", "--file", str(tmp_path / "empty.txt")])


def test_values_the_search_refuses_are_one_line_on_the_command_line(ckpt: Path):
    """``lp=wu`` (the search raises): one ``error:`` line on standard error, exit status 2, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "tasks.translation.translate", f"ckpt={ckpt}", "forty-two", "lp=wu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert re.fullmatch(r"error: length penalty style 'wu'; pick one of gnmt, length, none\.\n", proc.stderr)
    with pytest.raises(ValueError, match=r"beam_size must be >= 1, got 0"):  # the same way out
        main([f"ckpt={ckpt}", "forty-two", "beam=0"])


def test_a_negative_batch_is_refused(ckpt: Path):
    with pytest.raises(SystemExit, match="batch"):
        main([f"ckpt={ckpt}", "forty-two", "batch=-1"])


def test_an_unavailable_device_is_refused(ckpt: Path):
    with pytest.raises((SystemExit, ValueError), match="device"):
        main([f"ckpt={ckpt}", "forty-two", "device=tpu"])


def test_a_latin1_file_names_the_file_and_line(ckpt: Path, tmp_path: Path):
    path = tmp_path / "in.txt"
    path.write_bytes("forty-two\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(SystemExit, match=rf"--file {path}: line 2 is not UTF-8 text"):
        main([f"ckpt={ckpt}", "--file", str(path)])
