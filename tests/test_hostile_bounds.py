"""Hostile input, bounded: every number, size, argument and amount of work has a limit, and going past one is a
diagnostic (exit 1, a code, `line:col`), never a hang, a traceback or nonsense in the generated code.

Numbers: integers fit in 64 bits and other numbers are finite, whether written, computed or given with --set.
Sizes: a tensor's elements and a layer's parameters fit in 64 bits. Arguments: each integer argument has the
range its op declares. Work: elaboration counts steps (MAX_STEPS), layers (MAX_NODES) and repeats (MAX_REPEAT).
Also here: dtypes lex only as whole words, a label cannot name a merge, and a shared block instance applied twice
keeps one key per application for everything inside it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlc.compiler import build_graph
from dlc.diagnostics import DlcError, render

HANG_GUARD_S = 60  # generous: each of these finishes in a second or two; a hang is what is being ruled out


def write(tmp_path: Path, text: str, name: str = "net.dln") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def error(tmp_path: Path, text: str, overrides=None) -> DlcError:
    path = write(tmp_path, text)
    with pytest.raises(DlcError) as info:
        build_graph(path, overrides=overrides)
    return info.value


def check(err: DlcError, code: str, pos: str, message: str | None = None) -> None:
    text = render(err)
    assert err.code == code, text
    assert err.span is not None and f"{err.span.line}:{err.span.col}" == pos, text
    if message is not None:
        assert message in err.message, text


def cli(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    """`dlc check` in a subprocess, for the cases that used to hang: the timeout is the assertion."""
    path = write(tmp_path, text)
    return subprocess.run([sys.executable, "-m", "dlc", "check", str(path), *args], capture_output=True,
                          text=True, timeout=HANG_GUARD_S)


NET = """
network N {
    input x: [4]
    output y = x -> %s
}
"""


# ---- the lexer ----------------------------------------------------------------------------------------------


def test_a_dtype_is_only_a_whole_word(tmp_path):
    path = write(tmp_path, """
        network N {
            input t: [5]
            int64_copy = t
            float32x = t
            boolean = t
            input u: [5] int64
            output y = int64_copy -> linear(3)
            output z = float32x + boolean
            output w = u -> embedding(10, 4)
        }
    """)
    g = build_graph(path)
    assert [(name, g.types[v].dtype) for name, v in g.inputs] == [("t", "float32"), ("u", "int64")]
