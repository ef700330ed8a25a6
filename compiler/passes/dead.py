"""Dead code: the nodes whose results reach no network output are removed, so they are neither computed in
``forward`` nor built in ``__init__`` (their parameters are not in the state_dict, nor in the counts).

What stays although it reaches no output:

- the network's inputs (``forward`` takes every declared input; an unused one gets the warning
  ``unused-input`` from :mod:`dlc.compiler.lint`);
- everything a live block application needs: its ``forward`` takes all its inputs and returns all its
  outputs, so one output in use keeps the nodes computing the others;
- a layer whose weight a live layer shares (``tie=``): the live layer reads that module.

The lint (which warns ``unused-layer``) looks at the graph before this pass runs: :func:`live_nodes` is the one
analysis both use.
"""

from __future__ import annotations

from dlc.compiler.ir import CallKey, Graph, call_key
from dlc.compiler.ops.registry import op_of
from dlc.compiler.passes.params import tied_to


def live_nodes(g: Graph) -> tuple[set[int], set[CallKey]]:
    """The ids of the nodes whose results reach a network output, and the keys of the live block calls: computed
    once for the lint and this pass (``g.analyses``, until a pass changes the graph); read them, do not change
    them."""
    return g.analyses.get(("live nodes",), lambda: _live_nodes(g))


def _live_nodes(g: Graph) -> tuple[set[int], set[CallKey]]:
    producer = g.producer()
    by_path: dict[str, list[int]] = {}  # module path -> an output of each node of that module (for `tie=`)
    for n in g.nodes:
        if n.module_path is not None and n.outputs:
            by_path.setdefault(n.module_path, []).append(n.outputs[0])
    nodes: set[int] = set()
    calls: set[CallKey] = set()
    work = [v for _, v in g.outputs]
    seen: set[int] = set()
    while work:
        v = work.pop()
        if v in seen:
            continue
        seen.add(v)
        node = producer.get(v)
        if node is None or node.id in nodes:
            continue
        nodes.add(node.id)
        work.extend(node.inputs)
        tied = tied_to(node)
        if tied is not None:
            work.extend(by_path.get(tied, ()))
        for scope in node.scope:
            key = call_key(scope)
            call = g.calls.get(key)
            if call is not None and key not in calls:
                calls.add(key)
                work.extend(call.inputs)
                work.extend(call.outputs)
    # a block application without nodes of its own (`return x`) is live when its result is
    calls |= {k for k, c in g.calls.items() if any(v in seen for v in c.outputs)}
    return nodes, calls


def remove_dead_code(g: Graph) -> bool:
    """Remove the nodes whose results reach no network output (and the block applications left empty)."""
    live, live_calls = live_nodes(g)
    kept = [n for n in g.nodes if n.id in live or op_of(n.op).declared]
    if len(kept) == len(g.nodes) and len(live_calls) == len(g.calls):
        return False
    for n in g.nodes:
        if n.id not in live and not op_of(n.op).declared:
            for v in n.outputs:
                g.types.pop(v, None)
    for i, n in enumerate(kept):
        n.id = i
    g.nodes = kept
    g.calls = {k: c for k, c in g.calls.items() if k in live_calls}
    return True
