"""Hostile files, paths and parameters (issue 8): what dlc reads, what it prints and what it writes (standard
output and error: test_hostile_streams.py).

Every case runs the real command line (``python -m dlc`` in a subprocess, or ``dlc.cli.main`` in-process where a
module constant is lowered) and checks the exit status and the message. Subprocess timeouts are hang guards only.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dlc import files
from dlc.limits import limit
from dlc.api import ParamsLimitError, parse_param_value
from dlc.cli import main
from dlc.pipeline import build_graph
from dlc.compiler.serialize import dump_yaml, load_yaml
from dlc.diagnostics import DlcError, SourceCache, display

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs, symlinks and rlimits are POSIX")

ROOT = Path(__file__).resolve().parent.parent
DENSENET = ROOT / "specs" / "densenet121.dln"
HEADER = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): error\[(?P<code>[a-z-]+)\]: ", re.M)
NET = """
    network N {
        input x: [4]
        output y = x -> fc: linear(2)
    }
"""


def run(*args, env: dict[str, str] | None = None, preexec=None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    """``python -m dlc ARGS``; the timeout only guards against a hang."""
    full_env = {k: v for k, v in os.environ.items() if k != "DLC_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dlc", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=60, preexec_fn=preexec)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def importing(tmp_path: Path, target: str, name: str = "main.dln") -> Path:
    """A spec whose first line imports ``target`` (written as a .dln string literal)."""
    return write(tmp_path / name, f'import "{target}"\n' + textwrap.dedent(NET).lstrip())


def assert_clean(r: subprocess.CompletedProcess, code: int) -> None:
    assert r.returncode == code, f"exit {r.returncode}\n{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert "\x1b" not in r.stderr + r.stdout


def diagnostic(r: subprocess.CompletedProcess, code: str, line: int = 1, col: int = 1) -> re.Match:
    assert_clean(r, 1)
    m = HEADER.search(r.stderr)
    assert m and m["code"] == code and (int(m["line"]), int(m["col"])) == (line, col), r.stderr
    return m


# ---- 1. what is read: regular .dln files only, bounded ------------------------------------------


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ", "/dev/zero"])
def test_import_of_a_system_file_is_refused_unread(tmp_path, target):
    if not os.path.exists(target):
        pytest.skip(f"{target} does not exist here")
    r = run("check", importing(tmp_path, target), env={"DLC_SECRET_MARKER": "s3cr3t-value"})
    diagnostic(r, "not-a-spec")
    assert "s3cr3t-value" not in r.stderr and "root:" not in r.stderr
    assert "only regular files whose name ends in `.dln`" in r.stderr


def test_symlink_to_a_non_spec_is_refused_and_never_quoted(tmp_path):
    secret = write(tmp_path / "secret.txt", "password = hunter2\n")
    (tmp_path / "evil.dln").symlink_to(secret)
    r = run("check", importing(tmp_path, "evil.dln"))
    diagnostic(r, "not-a-spec")
    assert "hunter2" not in r.stderr and "not a `.dln` file" in r.stderr
    # a diagnostic only ever quotes .dln files, even for a span that points elsewhere
    assert SourceCache().line(str(secret), 1) is None
    assert SourceCache().line(str(tmp_path / "main.dln"), 1) == 'import "evil.dln"'


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_import_of_a_fifo_or_directory_does_not_hang(tmp_path, kind):
    special = tmp_path / "special.dln"
    os.mkfifo(special) if kind == "fifo" else special.mkdir()
    r = run("check", importing(tmp_path, "special.dln"))
    diagnostic(r, "not-a-spec")
    assert ("a FIFO" if kind == "fifo" else "a directory") in r.stderr


def test_root_spec_that_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "net.dln"
    os.mkfifo(fifo)
    r = run("check", fifo)
    assert_clean(r, 2)
    assert "not a file" in r.stderr
    with pytest.raises(DlcError) as err:  # the API: a diagnostic, no hang
        build_graph(fifo)
    assert err.value.code == "not-a-spec"
    other = write(tmp_path / "net.txt", NET)
    r = run("check", other)
    assert_clean(r, 1)
    assert "error[not-a-spec]" in r.stderr


def test_nul_in_import_path(tmp_path):
    r = run("check", importing(tmp_path, "a\\x00b.dln"))
    diagnostic(r, "file-unreadable")
    assert "\x00" not in r.stderr and "a\\x00b.dln" in r.stderr and "NUL" in r.stderr


def test_symlink_loop(tmp_path):
    (tmp_path / "loop.dln").symlink_to(tmp_path / "loop.dln")
    r = run("check", importing(tmp_path, "loop.dln"))
    diagnostic(r, "file-unreadable")
    assert "symbolic links" in r.stderr


def _chain(folder: Path, n: int) -> Path:
    """a0.dln imports a1.dln ... imports a{n}.dln; a spec beside the folder imports a0."""
    for i in range(n):
        write(folder / f"a{i}.dln", f'import "a{i + 1}.dln"\nblock B{i} {{\n input x\n return x\n}}\n')
    write(folder / f"a{n}.dln", f"block B{n} {{\n input x\n return x -> relu\n}}\n")
    return write(folder.parent / "main.dln", f'import "{folder.name}/a0.dln"\n'
                 + textwrap.dedent(NET).lstrip().replace("linear(2)", f"linear(2) -> B{n}"))


def test_a_thousand_imports_is_a_diagnostic(tmp_path):
    r = run("check", _chain(tmp_path / "chain", 1000))
    assert_clean(r, 1)
    m = HEADER.search(r.stderr)
    assert m and m["code"] == "too-many-files" and m["file"].endswith("a254.dln"), r.stderr
    assert "the limit is 256 files" in r.stderr and "DLC_MAX_SPEC_FILES" in r.stderr


def test_import_chain_is_loaded_without_recursion(tmp_path, monkeypatch):
    monkeypatch.setenv("DLC_MAX_SPEC_FILES", "2000")
    g = build_graph(_chain(tmp_path / "chain", 1200))  # deeper than Python's recursion limit (1000)
    assert [n.op for n in g.nodes] == ["input", "linear", "relu"]


def test_spec_over_the_size_limit_is_rejected_before_parsing(tmp_path):
    big = write(tmp_path / "big.dln", NET + "#" * limit("MAX_SPEC_BYTES"))
    r = run("check", big)
    assert_clean(r, 1)
    assert r.stderr.startswith("error[file-too-large]") and f"{limit('MAX_SPEC_BYTES'):,}" in r.stderr
    r = run("check", importing(tmp_path, "big.dln"))
    diagnostic(r, "file-too-large")
    with pytest.raises(DlcError) as err:  # text handed to the API is held to the same limit
        build_graph(tmp_path / "x.dln", text="#" * (limit("MAX_SPEC_BYTES") + 1))
    assert err.value.code == "file-too-large"


def test_total_size_of_imports_is_bounded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLC_MAX_TOTAL_BYTES", "400")
    for name in "abc":
        write(tmp_path / f"{name}.dln", f"block {name.upper()} {{\n input x\n return x\n}}\n" + "#" * 150)
    spec = write(tmp_path / "main.dln", 'import "a.dln"\nimport "b.dln"\nimport "c.dln"\n' + NET)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert HEADER.search(err)["line"] == "2" and "error[file-too-large]" in err  # the import that crossed it


# ---- 2. text from outside is shown escaped -----------------------------------------------------


def test_display_escapes_control_characters():
    assert display("a\x1b[2J\nb\u202ec\udcff") == "a\\x1b[2J\\nb\\u202ec\\udcff"
    assert display("ñet 名.dln") == "ñet 名.dln"
    assert display("x" * 50 + "y" * 50, limit=20) == "x" * 10 + " ... " + "y" * 10


def test_hostile_path_cannot_clear_the_screen_or_forge_a_diagnostic(tmp_path):
    folder = tmp_path / "d\x1b[2J\nfake.dln:1:1: error[syntax]: forged\n"
    spec = write(folder / "n.dln", NET.replace("linear(2)", "linar(2)"))
    r = run("check", spec)
    assert_clean(r, 1)
    assert len(HEADER.findall(r.stderr)) == 1 and not re.search(r"^fake\.dln", r.stderr, re.M)
    assert "\\x1b[2J\\nfake.dln:1:1" in r.stderr and "error[unknown-layer]" in r.stderr
    write(folder / "n.dln", NET)
    r = run("check", spec)
    assert_clean(r, 0)
    assert r.stdout.count("\n") == 1 and "\\x1b[2J" in r.stdout


def test_hostile_import_string_is_escaped(tmp_path):
    r = run("check", importing(tmp_path, "\\x1b[2J\\u202e.dln"))
    diagnostic(r, "import-not-found")
    assert "\\x1b[2J\\u202e.dln" in r.stderr and "\u202e" not in r.stderr


def test_hostile_names_in_parameters_and_arguments_are_escaped(tmp_path):
    spec = write(tmp_path / "n.dln", NET)
    params = write(tmp_path / "p.yaml", '"a\\e[2Jb": 3\n')  # YAML's \e is ESC
    r = run("check", spec, "--params", params)
    diagnostic(r, "unknown-param", 1, 9)
    assert "a\\x1b[2Jb" in r.stderr
    r = run("check", spec, "--set", "a\x1b[2J=3")
    assert_clean(r, 2)
    assert "`a\\x1b[2J` is not a parameter name" in r.stderr
    r = run("check", spec, "\x1b[2J\nfake.dln:1:1: error[syntax]: forged")
    assert_clean(r, 2)
    assert "unrecognized arguments" in r.stderr and not re.search(r"^fake\.dln", r.stderr, re.M)


def test_a_very_long_line_is_shown_as_a_window(tmp_path):
    pipe = "relu -> " * 4000  # a 64,000-character line, within the token limit
    spec = write(tmp_path / "long.dln", NET.replace("linear(2)", f"{pipe}linar(2) -> {pipe}relu"))
    r = run("check", spec)
    m = diagnostic(r, "unknown-layer", 3, len("    output y = x -> fc: ") + len(pipe) + 1)
    source, caret = r.stderr[m.end():].split("\n")[1:3]
    shown = source.split(" | ", 1)[1]
    assert len(shown) <= 200 + 8 and shown.startswith("... ") and shown.endswith(" ...")
    start = caret.split(" | ", 1)[1].index("^")
    assert shown[start:start + 6] == "linar(" and caret.count("^") == len("linar")


def test_a_huge_token_does_not_make_a_huge_message(tmp_path):
    spec = write(tmp_path / "tok.dln", NET.replace("fc: linear(2)", "fc linear" + "x" * 200_000))
    r = run("check", spec)
    assert_clean(r, 1)
    assert len(r.stderr) < 3000 and "error[syntax]" in r.stderr


@pytest.mark.parametrize("command", ["check", "ir"])
def test_non_ascii_file_name_under_an_ascii_terminal(tmp_path, command):
    spec = write(tmp_path / "ñet.dln", NET)
    r = run(command, spec, env={"PYTHONIOENCODING": "ascii"})
    assert_clean(r, 0)
    if command == "check":
        assert "\\xf1et.dln: ok" in r.stdout
    r = run("check", spec, "--set", "nosuch=1", env={"PYTHONIOENCODING": "ascii"})
    diagnostic(r, "unknown-param", 1, 9)
    assert "\\xf1et.dln:1:" in r.stderr


# ---- 3. --network picks only networks of the root file ----------------------------------------


def test_network_option_ignores_imported_networks(tmp_path):
    write(tmp_path / "lib.dln", NET.replace("network N", "network Lib"))
    spec = importing(tmp_path, "lib.dln")
    r = run("check", spec, "--network", "Lib")
    assert_clean(r, 1)
    assert "error[unknown-network]" in r.stderr and "networks of imported files are never compiled" in r.stderr
    assert "network N" in run("check", spec).stdout


# ---- 4. outputs: atomic, never over an input -----------------------------------------------------


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "imported", "params"])
@pytest.mark.parametrize("command", ["compile", "ir", "render"])
def test_output_never_replaces_an_input(tmp_path, command, how):
    lib = write(tmp_path / "lib.dln", "block B {\n input x\n return x\n}\n")
    spec = importing(tmp_path, "lib.dln")
    params = write(tmp_path / "p.yaml", "{}\n")
    out = {"same": spec, "imported": lib, "params": params}.get(how, tmp_path / "out.svg")
    if how == "symlink":
        out.symlink_to(spec)
    elif how == "hardlink":
        os.link(spec, out)
    if command == "render" and out.suffix != ".svg":
        out = tmp_path / "alias.dot"
        out.symlink_to({"same": spec, "imported": lib, "params": params}[how])
    before = {p: p.read_bytes() for p in (spec, lib, params)}
    r = run(command, spec, "--params", params, "-o", out)
    assert_clean(r, 2)
    assert "is an input of this command; refusing to overwrite it" in r.stderr
    assert {p: p.read_bytes() for p in (spec, lib, params)} == before


def test_output_keeps_mode_and_leaves_no_temporary_files(tmp_path):
    spec = write(tmp_path / "n.dln", NET)
    out = tmp_path / "out.py"
    assert_clean(run("compile", spec, "-o", out, preexec=lambda: os.umask(0o022)), 0)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # a new file: the umask's mode, not mkstemp's 0600
    out.chmod(0o640)
    before = out.read_bytes()
    assert_clean(run("compile", spec, "--set", "x=1", "-o", out), 1)  # a failed compile writes nothing
    assert out.read_bytes() == before
    assert_clean(run("ir", spec, "-o", out), 0)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text(encoding="utf-8").startswith('network: "N"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.dln", "out.py"]


def test_output_to_special_files_is_written_in_place(tmp_path):
    spec = write(tmp_path / "n.dln", NET)
    assert_clean(run("compile", spec, "-o", os.devnull), 0)
    r = run("compile", spec, "-o", "/dev/stdout")  # a pipe here: nothing to rename over
    assert_clean(r, 0)
    assert "class N(" in r.stdout
    r = run("ir", spec, "-o", tmp_path)
    assert_clean(r, 2)
    assert "is a directory" in r.stderr


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    out = tmp_path / "net.py"
    assert_clean(run("compile", DENSENET, "-o", out), 0)
    good = out.read_bytes()
    assert len(good) > 4096
    r = run("compile", DENSENET, "--set", "classes=7", "-o", out, preexec=_file_size_limit)
    assert_clean(r, 2)
    assert "cannot write" in r.stderr and "too large" in r.stderr.lower()
    assert out.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["net.py"]


def test_replacing_removes_the_temporary_file_on_failure(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), files.replacing(out) as (fd, tmp):
        os.write(fd, b"half")
        assert tmp.parent == tmp_path
        raise RuntimeError("interrupted")
    assert out.read_text(encoding="utf-8") == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ---- 5. --params and --set -----------------------------------------------------------------------------


LAUGHS = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
"""


@pytest.mark.parametrize("case", ["fifo", "device", "directory", "missing"])
def test_params_that_is_not_a_regular_file_is_refused_unread(tmp_path, case):
    params = {"fifo": tmp_path / "p.yaml", "device": Path("/dev/zero"), "directory": tmp_path,
              "missing": tmp_path / "nothing.yaml"}[case]
    if case == "fifo":
        os.mkfifo(params)  # opened, it would block: refused from its stat alone
    r = run("check", write(tmp_path / "n.dln", NET), "--params", params)
    assert_clean(r, 2)
    reason = {"fifo": "a FIFO, not a regular file", "device": "a device, not a regular file",
              "directory": "a directory, not a file", "missing": "no such file"}[case]
    assert r.stderr.endswith(f"dlc: error: --params: {reason}: {params}\n"), r.stderr


@pytest.mark.parametrize("case", ["laughs", "deep", "digits", "huge"])
def test_hostile_params_file(tmp_path, case):
    spec = write(tmp_path / "n.dln", NET)
    params = tmp_path / "p.yaml"
    text = {"laughs": LAUGHS, "deep": "x: " + "[" * 3000 + "]" * 3000, "digits": "x: " + "9" * 5000,
            "huge": "x: 1\n" + "#" * limit("MAX_PARAMS_BYTES")}[case]
    params.write_text(text, encoding="utf-8")
    r = run("check", spec, "--params", params)
    assert_clean(r, 1)
    expected = {"laughs": "aliases (*a) are not allowed", "deep": "nest more than 32 levels",
                "digits": "an integer of 5,000 characters", "huge": "more than the limit"}[case]
    assert r.stderr.startswith("error[params-file]") and expected in r.stderr, r.stderr


@pytest.mark.parametrize("text, message", [
    ("n: 2\nm: 1\nn: 3\n", "duplicate key `n`, first given on line 1 (line 3, column 1)"),
    ("n: 2\n'n': 3\n", "duplicate key `n`, first given on line 1 (line 2, column 1)"),
    ("n:\n  a: 1\n  b: 2\n  a: 3\n", "duplicate key `a`, first given on line 2 (line 4, column 3)"),
    ("<<: {n: 1}\n", "merge keys (<<) are not allowed in parameter values (line 1, column 1)"),
    # the mapping, key n, the list and its 9,997 items make 10,000: key m is one too many
    ("n: [" + ", ".join(["1"] * 9997) + "]\nm: 1\n", "more than 10,000 keys and values (line 2, column 1)"),
])
def test_params_mapping_problems(tmp_path, text, message):
    params = tmp_path / "p.yaml"
    params.write_text(text, encoding="utf-8")
    r = run("check", write(tmp_path / "n.dln", NET), "--params", params)
    assert_clean(r, 1)
    assert r.stderr == f"error[params-file]: parameter file {params}: {message}\n"


def test_params_at_the_limits_are_accepted_and_sized_exactly(tmp_path):
    spec = write(tmp_path / "n.dln", "network N(n: int = 2) {\n input x: [4]\n output y = x -> fc: linear(n)\n}\n")
    params = tmp_path / "p.yaml"
    params.write_text("n: 2\nm: [" + ", ".join(["1"] * 9995) + "]\n", encoding="utf-8")  # 10,000 in all
    r = run("check", spec, "--params", params)
    assert_clean(r, 1)
    assert "error[unknown-param]" in r.stderr and "no parameter `m`" in r.stderr  # read whole, then checked
    params.write_text("n: " + "9" * 4300 + "\n", encoding="utf-8")
    r = run("check", spec, "--params", params)
    assert_clean(r, 1)
    assert "an integer of 4,300 digits does not fit in 64 bits" in r.stderr, r.stderr


@pytest.mark.parametrize("value, message", [
    ("9" * 5000, "an integer of 5,000 characters"),
    ("[" * 3000 + "]" * 3000, "nest more than 32 levels"),
    ("[&a [1, 2], *a]", "aliases (*a) are not allowed"),
    ("{a: 1, a: 2}", "duplicate key `a`, first given on line 1"),
])
def test_hostile_set_value(tmp_path, value, message):
    r = run("check", write(tmp_path / "n.dln", NET), "--set", f"n={value}")
    assert_clean(r, 2)
    assert message in r.stderr


def test_param_values_are_plain_data():
    assert parse_param_value("2001-12-14") == "2001-12-14"  # no dates
    assert parse_param_value("{a: [1, 2.5, true, null, s]}") == {"a": [1, 2.5, True, None, "s"]}
    for text in ("!!binary aGk=", "!!set {a}", "!!python/name:os.system"):
        with pytest.raises(yaml.YAMLError) as err:
            parse_param_value(text)
        assert "constructor" in str(err.value)
    with pytest.raises(ParamsLimitError):
        parse_param_value("[" + ", ".join(["1"] * 20000) + "]")


# ---- 6. the IR dump is linear in the graph -------------------------------------------------------------


def _nested(tmp_path: Path, depth: int, layers: int) -> Path:
    """Blocks B1..B{depth}, each wrapping the next; the innermost holds ``layers`` layers."""
    inner = " -> ".join(["relu"] * layers)
    text = f"block B{depth} {{\n input x\n return x -> {inner}\n}}\n"
    for i in range(depth - 1, 0, -1):
        text += f"block B{i}(a: int = {i}) {{\n input x\n return x -> inner{i}: B{i + 1}\n}}\n"
    text += "network N {\n input x: [4]\n output y = x -> top: B1\n}\n"
    return write(tmp_path / f"nested{depth}_{layers}.dln", text)


def test_ir_yaml_size_per_node_does_not_grow_with_depth(tmp_path):
    def size(depth: int, layers: int) -> int:
        return len(dump_yaml(build_graph(_nested(tmp_path, depth, layers))))

    per_100_shallow = size(1, 200) - size(1, 100)
    per_100_deep = size(40, 200) - size(40, 100)
    # 100 more nodes cost the same 40 blocks deep as at the top (line numbers aside); writing each node's
    # scope chain would add about 100 x 40 x 100 bytes
    assert abs(per_100_deep - per_100_shallow) < 1000, (per_100_shallow, per_100_deep)


def test_ir_yaml_round_trip_shares_scopes(tmp_path):
    g = build_graph(_nested(tmp_path, 40, 10))
    text = dump_yaml(g)
    back = load_yaml(text)
    assert back == g and dump_yaml(back) == text
    assert back.nodes[5].scope is back.nodes[6].scope and len(back.nodes[5].scope) == 40
    assert text.count("block: B40") == 1


# ---- 7. dot failing --------------------------------------------------------------------------------------


def _fake_dot(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    write(bin_dir / "dot", "#!/bin/sh\n" + body + "\n").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize("body, says", [
    ("echo 'dot: out of memory \033[2J' >&2\nkill -SEGV $$", "killed by SIGSEGV: dot: out of memory \\x1b[2J"),
    ("echo 'Error: syntax error in line 1' >&2\nexit 3", "exited with status 3: Error: syntax error in line 1"),
])
def test_dot_failure_is_a_clear_error(tmp_path, body, says):
    out = write(tmp_path / "out.svg", "old drawing")
    r = run("render", write(tmp_path / "n.dln", NET), "-o", out, env=_fake_dot(tmp_path, body))
    assert_clean(r, 1)
    assert says in r.stderr and "The DOT text is in" in r.stderr
    assert out.read_text(encoding="utf-8") == "old drawing"
    assert out.with_suffix(".dot").read_text(encoding="utf-8").startswith("digraph")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dot_timeout(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLC_DOT_SECONDS", "1")
    for k, v in _fake_dot(tmp_path, "exec sleep 60").items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out.png"
    assert main(["render", str(write(tmp_path / "n.dln", NET)), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "ran longer than 1 seconds" in err and "Traceback" not in err
    assert not out.exists() and out.with_suffix(".dot").exists()


@pytest.mark.parametrize("existing", ["file", "dangling symlink", "input"])
def test_dot_failure_never_replaces_a_file_it_was_not_named(tmp_path, existing):
    spec = write(tmp_path / "r1.dln", NET)
    sibling = tmp_path / "r1.dot"
    params: list = []
    if existing == "dangling symlink":
        sibling.symlink_to(tmp_path / "elsewhere.txt")
    else:  # "input": the --params file (the only input that may have this name)
        sibling.write_text("mine" if existing == "file" else "{}\n", encoding="utf-8")
        params = ["--params", sibling] if existing == "input" else []
    r = run("render", spec, "-o", tmp_path / "r1.svg", *params, env=_fake_dot(tmp_path, "exit 3"))
    assert_clean(r, 1)
    fresh = tmp_path / "r1.dlc-1.dot"
    assert f"The DOT text is in {fresh} (r1.dot exists and is left as it was)" in r.stderr, r.stderr
    assert fresh.read_text(encoding="utf-8").startswith("digraph")
    if existing == "dangling symlink":
        assert sibling.is_symlink() and not (tmp_path / "elsewhere.txt").exists()
    else:
        assert sibling.read_text(encoding="utf-8") == {"file": "mine", "input": "{}\n"}[existing]
    # a second failure takes the next free name; the earlier files stay as they were
    r = run("render", spec, "-o", tmp_path / "r1.svg", env=_fake_dot(tmp_path, "exit 3"))
    assert_clean(r, 1)
    assert f"The DOT text is in {tmp_path / 'r1.dlc-2.dot'}" in r.stderr
    assert fresh.read_text(encoding="utf-8").startswith("digraph")


def test_dot_not_installed_never_replaces_a_file(tmp_path):
    spec = write(tmp_path / "r1.dln", NET)
    (tmp_path / "r1.dot").write_text("mine", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("render", spec, "-o", tmp_path / "r1.svg", env={"PATH": str(empty)})
    assert_clean(r, 0)
    assert "not installed" in r.stderr and f"The DOT text is in {tmp_path / 'r1.dlc-1.dot'}" in r.stderr
    assert (tmp_path / "r1.dot").read_text(encoding="utf-8") == "mine"
    assert (tmp_path / "r1.dlc-1.dot").read_text(encoding="utf-8").startswith("digraph")


def test_dot_text_not_saved_when_every_name_is_taken(tmp_path):
    spec = write(tmp_path / "r1.dln", NET)
    names = ["r1.dot"] + [f"r1.dlc-{n}.dot" for n in range(1, 100)]
    for name in names:
        (tmp_path / name).write_text("mine", encoding="utf-8")
    r = run("render", spec, "-o", tmp_path / "r1.svg", env=_fake_dot(tmp_path, "exit 3"))
    assert_clean(r, 1)
    assert "The DOT text was not saved" in r.stderr and "numbered variants exist" in r.stderr
    assert all((tmp_path / name).read_text(encoding="utf-8") == "mine" for name in names)


# ---- 8. the limits themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, ceiling", [
    ("DOT_SECONDS", "999999999999999999", "86,400"),
    ("DOT_SECONDS", "86401", "86,400"),
    ("MAX_SPEC_BYTES", str(5 << 30), "4,294,967,296"),
    ("MAX_NODES", "1" + "0" * 400, "1,000,000,000"),
])
def test_a_limit_past_its_ceiling_is_a_diagnostic(tmp_path, name, value, ceiling):
    out = tmp_path / "m.svg"
    r = run("render", write(tmp_path / "m.dln", NET), "-o", out, env={f"DLC_{name}": value})
    assert_clean(r, 1)
    assert r.stderr.startswith(f"error[bad-limit]: DLC_{name} must be a positive integer, at most {ceiling}, got")
    assert not out.exists() and not out.with_suffix(".dot").exists()


def test_a_limit_at_its_ceiling_is_accepted(monkeypatch):
    monkeypatch.setenv("DLC_DOT_SECONDS", "86400")
    monkeypatch.setenv("DLC_MAX_NODES", "0001000000000")  # leading zeros do not count against the length
    assert limit("DOT_SECONDS") == 86_400 and limit("MAX_NODES") == 10**9
