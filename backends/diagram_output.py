"""Drawing DOT text with Graphviz's ``dot``: files (.svg, .png, .pdf, .dot, .tex), SVG text, and time limits.

``dot`` runs in its own process group for at most ``DOT_SECONDS`` (:mod:`dlc.limits`); a drawing that fails
leaves the file it would replace as it was and saves its DOT text beside it. A ``.tex`` file is a TikZ picture
written from the layout ``dot -Tjson`` computes (:mod:`dlc.backends.diagram_tikz`), so no LaTeX tool is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from dlc.backends.diagram_tikz import tikz
from dlc.diagnostics import display
from dlc.files import create_new, replacing, write_output
from dlc.limits import limit

FORMATS = ("svg", "png", "pdf", "dot", "tex")


class DotFailed(Exception):
    """Graphviz's ``dot`` failed, crashed or ran out of time; the message says where the DOT text is."""


def draw_file(dot_text: str, out: Path, width: float | None = None) -> str | None:
    """Write ``out`` (one of :data:`FORMATS`, by its suffix) from ``dot_text``; returns a message for the user,
    if any.

    Every file is written atomically (a temporary file renamed into place), so a failed or interrupted
    drawing leaves an existing ``out`` as it was. A PDF is scaled to ``width`` inches (see :func:`_pdf_scale`).
    When ``dot`` fails, or is not installed, the DOT text is saved in a new file beside ``out`` (see
    :func:`_save_dot_text`) and :class:`DotFailed` (or the message) says where.
    """
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "dot":
        write_output(out, dot_text.encode("utf-8"))
        return None
    exe = shutil.which("dot")
    if exe is None:
        return (f"Graphviz's `dot` program is not installed, so {display(out.name)} was not drawn. "
                f"{_save_dot_text(out, dot_text)}. Install it (Debian/Ubuntu: `apt-get install graphviz`, macOS: "
                f"`brew install graphviz`) and rerun.")
    timeout = limit("DOT_SECONDS")  # read first: a bad value is an error before dot starts
    if fmt == "tex":  # dot lays the picture out; the TikZ text is written from its coordinates
        layout, problem = _draw_text(exe, "json", dot_text, timeout)
        if layout is None:
            raise _failed(out, dot_text, problem)
        write_output(out, tikz(layout).encode("utf-8"))
        return None
    with replacing(out) as (_fd, tmp):
        extra = _pdf_scale(exe, dot_text, width, timeout) if fmt == "pdf" and width is not None else []
        problem = _run_dot(exe, fmt, tmp, dot_text, timeout, extra) if isinstance(extra, list) else extra
        if problem is not None:  # raised inside: the file being replaced is left as it was
            raise _failed(out, dot_text, problem)
    return None


def _failed(out: Path, dot_text: str, problem: str) -> DotFailed:
    return DotFailed(f"Graphviz's dot could not draw {display(out.name)}: {problem}. "
                     f"{_save_dot_text(out, dot_text)}; a smaller drawing (--depth N) may work.")


def draw_svg(dot_text: str) -> str:
    """``dot_text`` drawn as SVG text (for Jupyter) by ``dot`` within ``DOT_SECONDS`` like :func:`draw_file`;
    :class:`DotFailed` says why it could not be drawn."""
    exe = shutil.which("dot")
    if exe is None:
        raise DotFailed("Graphviz's `dot` program is not installed, so the diagram was not drawn. Install it "
                        "(Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`).")
    svg, problem = _draw_text(exe, "svg", dot_text, limit("DOT_SECONDS"))
    if svg is None:
        raise DotFailed(f"Graphviz's dot could not draw the diagram: {problem}; a smaller drawing (depth=N) may work.")
    return svg


def _draw_text(exe: str, fmt: str, dot_text: str, timeout: int) -> tuple[str | None, str]:
    """What ``dot`` writes in the text format ``fmt`` (svg, json), through a temporary file; (None, what went
    wrong) when it fails."""
    with tempfile.TemporaryDirectory(prefix="dlc-dot-") as folder:
        target = Path(folder) / f"drawing.{fmt}"
        problem = _run_dot(exe, fmt, target, dot_text, timeout)
        if problem is not None:
            return None, problem
        return target.read_text(encoding="utf-8"), ""


def _save_dot_text(out: Path, dot_text: str) -> str:
    """Save the DOT text of a drawing that was not drawn; returns a sentence saying where (or why not).

    The user did not name this file, so it must not replace one: it is ``out`` with the suffix ``.dot`` if no
    such file exists, else the first free ``NAME.dlc-N.dot``, created exclusively (never an existing file, so
    never an input of the command, and never through a symlink).
    """
    first = out.with_suffix(".dot")
    try:
        saved = create_new(_dot_names(out), dot_text.encode("utf-8"))
    except OSError as exc:
        return f"The DOT text could not be saved beside it ({display(exc.strerror or exc)})"
    if saved is None:
        return f"The DOT text was not saved: {display(first)} and its numbered variants exist"
    if saved != first:
        return f"The DOT text is in {display(saved)} ({display(first.name)} exists and is left as it was)"
    return f"The DOT text is in {display(saved)}"


def _dot_names(out: Path) -> Iterator[Path]:
    """``out.dot``, then ``out.dlc-1.dot`` ... ``out.dlc-99.dot``: where :func:`_save_dot_text` may save."""
    yield out.with_suffix(".dot")
    for n in range(1, 100):
        yield out.with_suffix(f".dlc-{n}.dot")


def _pdf_scale(exe: str, dot_text: str, width: float, timeout: int) -> list[str] | str:
    """The ``dot`` options that draw a PDF ``width`` inches wide, or what went wrong.

    Graphviz's cairo PDF writer sizes its page wrongly under the graph's ``size`` attribute (2.43 gives a
    252-point drawing a 324-point page) but scales page and drawing alike by ``dpi``: the PDF is drawn once
    unscaled to measure its page, then at the dpi that makes the page ``width`` wide.
    """
    with tempfile.TemporaryDirectory(prefix="dlc-pdf-") as folder:
        probe = Path(folder) / "probe.pdf"
        problem = _run_dot(exe, "pdf", probe, dot_text, timeout, ["-Gsize=", "-Gdpi=72"])
        if problem is not None:
            return problem
        box = re.search(rb"/MediaBox\s*\[\s*[\d.]+\s+[\d.]+\s+([\d.]+)", probe.read_bytes())
    if box is None:
        return "its PDF has no page size"
    return ["-Gsize=", f"-Gdpi={72 * width * 72 / float(box.group(1)):.4f}"]


def _run_dot(exe: str, fmt: str, target: Path, dot_text: str, timeout: int, extra: list[str] | None = None) \
        -> str | None:
    """Run ``dot`` writing ``target`` (``extra``: more options), for at most ``timeout`` seconds; None when it
    succeeds, otherwise what went wrong."""
    # its own session, so that on a timeout the whole process group (dot and anything it started) is killed
    proc = subprocess.Popen([exe, f"-T{fmt}", *(extra or []), "-o", str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(dot_text.encode("utf-8"), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return f"it ran longer than {timeout} seconds and was stopped (raise the limit with DLC_DOT_SECONDS)"
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        what = f"it was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        what = f"it exited with status {proc.returncode}"
    lines = err.decode("utf-8", errors="replace").strip().splitlines()
    if lines:  # its last words, escaped and cut: a crash can print anything
        what += ": " + display(" / ".join(lines[-3:]), 300)
    return what


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)


_UNITS = {"in": 1.0, "cm": 1 / 2.54, "mm": 1 / 25.4, "pt": 1 / 72.27, "bp": 1 / 72}


def parse_width(text: str) -> float:
    """A width such as ``3.5in``, ``8.5cm``, ``85mm``, ``252pt`` (TeX points) or ``3.5`` (inches), in inches;
    ValueError says what is expected."""
    value = text.strip().lower()
    unit = next((u for u in _UNITS if value.endswith(u)), "")
    try:
        number = float(value[:len(value) - len(unit)])
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf") or (number * _UNITS.get(unit, 1.0)) > 1000:
        raise ValueError(f"expected a positive width up to 1000 inches such as 3.5in, 8.5cm, 85mm or 252pt, "
                         f"got {display(text, 40)}")
    return number * _UNITS.get(unit, 1.0)
