"""The garbage collector's settings while a command runs.

Compiling a spec builds a parse tree, an AST, an IR graph and the generated text, all alive until the command
ends, and makes almost no reference cycles (at 8,000 layers a full collection finds about 200 objects to free).
With CPython's default thresholds (700, 10, 10) the collector still runs a full collection, which visits every
live object, each time the live heap has grown by a quarter: the bigger the spec, the more of these and the
longer each. Measured with ``benchmarks/scaling.py``, that made ``dlc check`` of a 20,000-layer pipe 1.5x and
``dlc compile`` of a 10,000-branch concat 1.6x slower than with the collector off, and bent their growth above
linear.

:func:`fewer_collections` keeps the collector on (a spec that does make cycles is still cleaned up) but starts a
young collection every 50,000 allocations instead of 700, and a full one after 100 middle ones instead of 10;
that recovers nearly all the time the collector cost (see docs/benchmarks.md). It restores the previous
thresholds afterwards, so a program calling :func:`dlc.cli.main` in its own process keeps its own.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# (young allocations, young collections per middle one, middle collections per full one)
THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with :data:`THRESHOLDS`, then put the previous thresholds back."""
    previous = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
