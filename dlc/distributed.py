"""Training generated modules on several devices with torch.distributed: FSDP2 units from the IR.

A generated module is a plain ``nn.Module``, so ``DistributedDataParallel`` wraps it as it is. FSDP2
(``torch.distributed.fsdp.fully_shard``) wants one call per unit of parameters that are gathered together; the
IR knows the natural units, the block instances and labelled groups (``layer1.0``, ``layer1``, ...), and the
generated network class lists them, innermost first, as ``shard_units``. :func:`shard` calls ``fully_shard`` on
each and then on the root. Importing this module does not import torch: ``dlc compile`` uses :func:`shard_units`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlc.compiler.ir import Graph

if TYPE_CHECKING:
    from torch import nn

    from dlc.api import Compiled


def shard_units(g: Graph) -> tuple[str, ...]:
    """The module paths of ``g``'s block instances and labelled groups, each once, every unit after the units
    inside it (FSDP2 shards bottom-up: a unit's parameters are those no inner unit took)."""
    seen: dict[str, int] = {}  # path -> depth, in the order the spec first applies them
    for node in g.nodes:
        for depth, scope in enumerate(node.scope):
            seen.setdefault(scope.path, depth)
    # deepest first; within a depth, in the spec's order (a stable sort keeps it)
    return tuple(sorted(seen, key=lambda path: -seen[path]))


def shard(model: nn.Module, compiled: Compiled | None = None, **fsdp_kwargs: Any) -> nn.Module:
    """Apply FSDP2's ``fully_shard`` to each block instance and labelled group of ``model`` (innermost first),
    then to ``model`` itself; returns ``model`` (its class becomes FSDP's subclass, in place).

    The units are ``compiled``'s when given (:func:`dlc.compile`), else the generated class's ``shard_units``.
    ``fsdp_kwargs`` go to every call (``mesh=``, ``reshard_after_forward=``, ``mp_policy=``, ...). Call it after
    ``torch.distributed.init_process_group`` and before creating the optimizer, as for ``fully_shard``.
    """
    from torch.distributed.fsdp import fully_shard

    if compiled is not None:
        units = shard_units(compiled.graph)
    else:
        units = getattr(type(model), "shard_units", None)
        if units is None:
            raise TypeError(f"{type(model).__name__} has no `shard_units`: pass the module dlc generated, or "
                            "its `dlc.compile(...)` result as `compiled=`")
    for path in units:
        fully_shard(model.get_submodule(path), **fsdp_kwargs)
    fully_shard(model, **fsdp_kwargs)
    return model
