"""Standard output and standard error that go away, fill up or were never open (issue 8): `dlc ... | head`,
`>/dev/full`, `>&-`, `2>&-`. Each case runs ``python -m dlc`` in a subprocess and checks the exit status, what
reached stdout and the one message on stderr; the timeouts are hang guards only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_hostile_io import NET, ROOT, assert_clean, run, write

RESNET50 = ROOT / "specs" / "resnet50.dln"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="closes descriptors in the child (preexec_fn)")


# ---- the reader goes away: quiet -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["ir", str(RESNET50)], ["--help"]], ids=["ir", "help"])
@pytest.mark.parametrize("read", [0, 10])
def test_closed_stdout_exits_quietly(read, args):
    env = {k: v for k, v in os.environ.items() if k != "DLC_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "dlc", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.read(read)
    proc.stdout.close()  # `| head -c 10`, `| true`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == ""



# ---- stdout cannot be written: an error, exit 2 ---------------------------------------------------------


STDOUT_COMMANDS = [["check"], ["compile"], ["summary"], ["ir"], ["ir", "--text"], ["--help"], ["--version"],
                   ["compile", "--help"]]


def _argv(command: list[str], spec: Path) -> list:
    return command if "--help" in command or "--version" in command else [*command, spec]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail, ENOSPC)")
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", STDOUT_COMMANDS, ids=" ".join)
def test_stdout_on_a_full_disk_is_an_error(tmp_path, command, buffered):
    spec = write(tmp_path / "a.dln", NET)
    with open("/dev/full", "w") as full:  # `dlc ... >/dev/full`; unbuffered, the write itself fails
        r = subprocess.run([sys.executable, "-m", "dlc", *map(str, _argv(command, spec))], stdout=full,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, "PYTHONUNBUFFERED": "" if buffered else "1", "DLC_DEBUG": ""})
    assert r.returncode == 2, r.stderr
    assert r.stderr == "dlc: error: cannot write to standard output: No space left on device\n"


def _close(*fds: int):
    return lambda: [os.close(fd) for fd in fds]  # run in the child before exec: `>&-`, `2>&-`


@pytest.mark.parametrize("command", STDOUT_COMMANDS, ids=" ".join)
def test_closed_stdout_is_an_error(tmp_path, command):
    r = run(*_argv(command, write(tmp_path / "a.dln", NET)), preexec=_close(1))
    assert r.returncode == 2 and r.stderr == "dlc: error: cannot write to standard output: it is closed\n", r.stderr


def test_closed_stdout_is_no_error_for_a_command_that_does_not_use_it(tmp_path):
    out = tmp_path / "out.py"
    r = run("compile", write(tmp_path / "a.dln", NET), "-o", out, preexec=_close(1))
    assert_clean(r, 0)
    assert r.stderr == f"wrote {out}\n" and out.read_text(encoding="utf-8").startswith("# -*- coding: utf-8 -*-")
    r = run("check", write(tmp_path / "a.dln", NET), preexec=_close(1, 2))  # nowhere to say it, but it fails
    assert r.returncode == 2


@pytest.mark.parametrize("stderr", ["closed", "full"])
def test_a_closed_or_full_stderr_keeps_the_exit_status(tmp_path, stderr):
    if stderr == "full" and not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (a device whose writes fail, ENOSPC)")
    spec = write(tmp_path / "a.dln", NET)
    bad = write(tmp_path / "bad.dln", NET.replace("linear(2)", "lineer(2)"))
    env = {**os.environ, "PYTHONUNBUFFERED": "", "DLC_DEBUG": ""}  # buffered: what is left fails at exit

    def dlc(*args) -> subprocess.CompletedProcess:
        with open(os.devnull if stderr == "closed" else "/dev/full", "w") as sink:
            return subprocess.run([sys.executable, "-m", "dlc", *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=sink, text=True, cwd=ROOT, timeout=60, env=env,
                                  preexec_fn=_close(2) if stderr == "closed" else None)

    module = dlc("compile", spec)
    assert module.returncode == 0 and module.stdout.startswith("# -*- coding: utf-8 -*-")
    explained = dlc("compile", "--explain-fusion", spec)  # its notes are lost; the module is whole
    assert explained.returncode == 0 and explained.stdout == module.stdout
    # the diagnostic is lost, not printed on stdout instead
    for args, status in ((["check", bad], 1), (["bogus"], 2)):
        r = dlc(*args)
        assert (r.returncode, r.stdout) == (status, "")
    wrote = dlc("compile", spec, "-o", tmp_path / "out.py")
    assert (wrote.returncode, wrote.stdout) == (0, "") and (tmp_path / "out.py").exists()
