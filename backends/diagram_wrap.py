"""Wrapping a left-to-right diagram into rows, as text wraps into lines, so that it is not a long strip.

A network drawn left to right is one rank per layer wide and one branch high: ResNet-18 came out 13,510 x 681
pixels. Its top-level parts (the inputs, the layers and the block instances at the network's level, in order)
are split into rows of about the same number of ranks; edges between rows do not constrain the layout, and the
first node of each row is put in the same rank as the first of the row before, below it. A part is never split,
so every cluster stays in one row. The number of rows grows with the square root of the length, which keeps the
picture near a landscape page's aspect ratio for the networks in specs/.
"""

from __future__ import annotations

import math

# R ranks are drawn in round(sqrt(R / RANKS_PER_ROW)) rows: a longer network, more and longer rows.
RANKS_PER_ROW = 4
# Shorter networks (an MLP, LeNet's 14 ranks are still one row) are not wrapped.
MIN_RANKS = 15


def ranks(edges: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's rank: the length of the longest path of ``edges`` (a DAG) that reaches it."""
    incoming: dict[str, list[str]] = {}
    nodes: dict[str, None] = {}
    for src, dst in edges:
        incoming.setdefault(dst, []).append(src)
        nodes.setdefault(src)
        nodes.setdefault(dst)
    rank: dict[str, int] = {}
    for start in nodes:  # iterative depth-first: a long network must not exhaust Python's stack
        stack, opened = [start], {start}
        while stack:
            node = stack[-1]
            if node in rank:
                stack.pop()
                continue
            # a node already open further down the stack would be a cycle: its edge is not followed
            pending = [src for src in incoming.get(node, ()) if src not in rank and src not in opened]
            if pending:
                stack.extend(pending)
                opened.update(pending)
                continue
            rank[node] = 1 + max((rank.get(src, -1) for src in incoming.get(node, ())), default=-1)
            stack.pop()
    return rank


def rows(parts: list[list[str]], edges: list[tuple[str, str]]) -> dict[str, int]:
    """The row of each node of ``parts`` (the top-level parts, in order, as lists of DOT node names), from the
    flow ``edges``; empty when the diagram is short enough for one row."""
    rank = ranks(edges)
    total = 1 + max(rank.values(), default=0)
    count = round(math.sqrt(total / RANKS_PER_ROW))
    if count <= 1 or total < MIN_RANKS:
        return {}
    length = math.ceil(total / count)
    row_of: dict[str, int] = {}
    row = 0
    for part in parts:
        spans = [rank.get(n, 0) for n in part]
        middle = (min(spans) + max(spans)) // 2 if spans else 0
        row = max(row, min(count - 1, middle // length))  # rows only go forward: the parts' order is kept
        for n in part:
            row_of[n] = row
    return row_of
