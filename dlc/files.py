"""Reading inputs and writing outputs without surprises.

dlc reads only what it means to read: spec files are regular files whose name (and, through symlinks, whose
target's name) ends in ``.dln``, within the limits ``MAX_SPEC_BYTES`` each and ``MAX_TOTAL_BYTES`` and
``MAX_SPEC_FILES`` per program (:mod:`dlc.limits`). A file is checked with ``stat`` before it is opened and
opened non-blocking, so a FIFO or device (even one swapped in at the last moment) cannot hang or flood the
compiler, and at most one byte past the limit is read.

Outputs are written to a temporary file in the target's folder, flushed to disk and renamed over the target, so
a reader (or a failure half-way, a full disk, ``ulimit -f``) never sees a truncated file; an output that is one of
the inputs read by the same command is refused.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from dlc.diagnostics import DlcError, display
from dlc.limits import raise_hint

if TYPE_CHECKING:
    from dlc.grammar.ast import Import

SPEC_SUFFIX = ".dln"


class FileProblem(Exception):
    """Why a file was not read. ``kind`` is one of ``not-found``, ``not-a-spec`` (wrong suffix, not a regular
    file), ``too-large`` or ``unreadable``; ``reason`` is a short phrase for a message."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class OutputRefused(Exception):
    """An output path that must not be written (it is an input of the same command)."""


# The (device, inode) of every input read while a collector is active: outputs must not replace them.
_INPUTS: contextvars.ContextVar[set[tuple[int, int]] | None] = contextvars.ContextVar("dlc_inputs", default=None)


@contextlib.contextmanager
def tracking_inputs() -> Iterator[set[tuple[int, int]]]:
    """Collect the files read by :func:`read_text` inside the ``with`` block (for :func:`write_output`)."""
    inputs: set[tuple[int, int]] = set()
    token = _INPUTS.set(inputs)
    try:
        yield inputs
    finally:
        _INPUTS.reset(token)


def _check_path(path: Path) -> None:
    """A path with a NUL byte names no file (the OS calls refuse it with a ValueError, not an OSError)."""
    if "\x00" in str(path):
        raise FileProblem("unreadable", "the path contains a NUL character")


def resolve_spec(path: Path) -> Path:
    """The real path of spec ``path``, checking that both its name and its target's end in ``.dln``."""
    _check_path(path)
    if path.suffix.lower() != SPEC_SUFFIX:
        raise FileProblem("not-a-spec", f"not a `{SPEC_SUFFIX}` file")
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        raise _problem(exc) from None
    if real.suffix.lower() != SPEC_SUFFIX:  # a symlink `x.dln` -> /etc/passwd
        raise FileProblem("not-a-spec", f"a link to a file that is not a `{SPEC_SUFFIX}` file")
    return real


def check_regular(path: Path) -> None:
    """Raise :class:`FileProblem` unless ``path`` is a regular file (or a link to one); nothing is opened, so a
    FIFO or a device is refused without blocking or reading."""
    _check_path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _problem(exc) from None
    _check_regular(st.st_mode, 0, 0)


def read_text(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, if it has at most ``limit`` bytes."""
    _check_path(path)
    try:
        st = os.stat(path)
        _check_regular(st.st_mode, st.st_size, limit)
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the open (it is refused by fstat below)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            _check_regular(st.st_mode, st.st_size, limit)
            data = _read_at_most(fd, limit + 1)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _problem(exc) from None
    if len(data) > limit:  # a file that grew, or one whose size stat does not know
        raise FileProblem("too-large", f"larger than {limit:,} bytes")
    inputs = _INPUTS.get()
    if inputs is not None:
        inputs.add((st.st_dev, st.st_ino))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem("unreadable", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") \
            from None


def spec_error(problem: FileProblem, path: Path, importer: Import | None = None) -> DlcError:
    """The diagnostic for a spec file (the root, or one named by ``importer``) that was not read."""
    span = importer.span if importer else None
    if problem.kind == "not-found":
        if importer is None:
            return DlcError("file-not-found", f"no such file: {path}")
        return DlcError("import-not-found", f"cannot find imported file `{importer.path}` (looked for {path})",
                        span, hint="imports are relative to the importing file")
    what = str(path)
    if importer is not None:
        what = f"imported file `{importer.path}`" + (f" ({path})" if str(path) != importer.path else "")
    if problem.kind == "not-a-spec":
        return DlcError("not-a-spec", f"cannot read {what}: {problem.reason}", span,
                        hint=f"dlc reads only regular files whose name ends in `{SPEC_SUFFIX}`")
    if problem.kind == "too-large":
        return DlcError("file-too-large", f"cannot read {what}: {problem.reason}", span,
                        hint=raise_hint("MAX_SPEC_BYTES"))
    return DlcError("file-unreadable", f"cannot read {what}: {problem.reason}", span)


def _check_regular(mode: int, size: int, limit: int) -> None:
    if stat.S_ISDIR(mode):
        raise FileProblem("not-a-spec", "a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "a special file"
        raise FileProblem("not-a-spec", f"{kind}, not a regular file")
    if size > limit:
        raise FileProblem("too-large", f"{size:,} bytes, more than the limit of {limit:,}")


def _read_at_most(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _problem(exc: OSError) -> FileProblem:
    if isinstance(exc, FileNotFoundError):
        return FileProblem("not-found", "no such file")
    if exc.errno == errno.ELOOP:
        return FileProblem("unreadable", "too many levels of symbolic links (a symlink loop?)")
    return FileProblem("unreadable", exc.strerror or type(exc).__name__)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replacing`); an existing special file (``/dev/null``,
    ``/dev/stdout``, a pipe) is written in place, as there is nothing to replace."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        with open(path, "wb") as f:
            f.write(data)
        return
    with replacing(path) as (fd, _tmp):
        _write_all(fd, data)


def create_new(candidates: Iterable[Path], data: bytes) -> Path | None:
    """Write ``data`` to a new file: the first of ``candidates`` that does not exist; None if they all do.

    For files the user did not name (the DOT text of a failed drawing): each is created with ``O_EXCL``, which
    fails for any existing file, and so for every input, and for a symlink, even a dangling one. A failed write
    removes the new file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for path in candidates:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        try:
            _write_all(fd, data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(fd)
        return path
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[tuple[int, Path]]:
    """Yield ``(fd, tmp)``: a new temporary file next to ``path``, open for writing. When the block ends
    normally the file is flushed to disk, given the mode of the file it replaces (or the default mode for a
    new file) and renamed over ``path``; on any failure it is removed and ``path`` is left as it was.
    Refuses (:class:`OutputRefused`) a path that is an input read under :func:`tracking_inputs`."""
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    old_mode = None
    with contextlib.suppress(FileNotFoundError):
        old_mode = stat.S_IMODE(os.stat(target).st_mode)
    fd, tmp = _create_temp(target)
    try:
        yield fd, tmp
        os.fsync(fd)
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _target(path: Path) -> Path:
    """Where writing ``path`` lands: through a symlink to its target; refused when that is an input."""
    target = Path(os.path.realpath(path))
    inputs = _INPUTS.get() or set()
    with contextlib.suppress(OSError):
        st = os.stat(target)
        if (st.st_dev, st.st_ino) in inputs:
            raise OutputRefused(f"{display(path)} is an input of this command; refusing to overwrite it")
    return target


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new file `.NAME.XXXX.tmp` beside ``target``; created with mode 0o666 so the umask applies as it would
    to a plain write (tempfile.mkstemp would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        # the name is cut so the temporary name stays within 255 bytes (60 characters of up to 4 bytes each)
        tmp = target.with_name(f".{target.name[:60]}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(target.parent))
