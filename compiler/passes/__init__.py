"""Passes and analyses over the IR.

- :mod:`.manager`: the pass manager and the pipeline of each optimisation level;
- :mod:`.verify`: the IR's invariants and shape inference;
- :mod:`.dead`: dead code removal (every level);
- :mod:`.fold_batchnorm`, :mod:`.in_place`: the inference rewrites;
- :mod:`.params`: parameter counts.

The fusion plan, the analysis the fused backends read, is :func:`dlc.compiler.fusion.fusion_plan`.
"""

from __future__ import annotations

from dlc.compiler.passes.dead import live_nodes, remove_dead_code
from dlc.compiler.passes.fold_batchnorm import fold_batchnorm
from dlc.compiler.passes.in_place import compute_in_place
from dlc.compiler.passes.manager import OPTIMIZATIONS, PIPELINES, Pass, PassManager, PassRun, pipeline
from dlc.compiler.passes.params import count_params, tied_to, total_params
from dlc.compiler.passes.verify import VerifyError, infer_shapes, verify

__all__ = ["OPTIMIZATIONS", "PIPELINES", "Pass", "PassManager", "PassRun", "VerifyError", "compute_in_place",
           "count_params", "fold_batchnorm", "infer_shapes", "live_nodes", "pipeline", "remove_dead_code", "tied_to",
           "total_params", "verify"]
