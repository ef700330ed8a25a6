"""Names from a spec in generated Python: which are valid, and which the generated module reserves.

Every table here is literal data, so ``dlc compile`` needs neither torch nor triton to consult them and
the names a spec gets do not depend on the installed versions. ``tests/test_hostile_names.py`` checks
them against ``dir(torch.nn.Module())``, ``dir(builtins)``, the helpers and the fused runtime, so they
cannot drift.

Two kinds of spec name reach the generated module. Layer labels (and group labels) are module
attributes, and so the state_dict keys: they cannot be renamed, and one that an ``nn.Module`` (or the
generated classes) already uses is ``error[bad-name]``. Every other name (block classes, constructor
arguments, local variables, kernels) is handed out by the backend's namespace
(``dlc.backends.torch.namespace``), which renames it around the reserved names below. The network's
class name is the module's public API, so it is never renamed: a reserved one is ``error[bad-name]``.
"""

from __future__ import annotations

import keyword
import re

from dlc.diagnostics import DlcError, Span

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# .dln keywords that are not Python keywords (those are refused anyway); the lexer would read them as
# names where no keyword fits, so `input true: [4]` would parse but `true` could never be referenced.
DLN_KEYWORDS = frozenset({"true", "false", "then", "input", "output", "block", "network"})
# Keywords that only begin a definition or a statement: a layer's label, never read back as a value, may be one
# (torchvision's MBConv keeps its layers in a child called `block`).
LABEL_KEYWORDS = frozenset({"input", "output", "block", "network"})

# Attributes of an ``nn.Module`` instance (``dir(torch.nn.Module())`` without dunders, which `__` rejects),
# with those of recent and older torch versions. A child module of the same name would be shadowed by the
# method or break the module's bookkeeping (`self.compile`, `self._modules`, `self.training`).
MODULE_ATTRS = frozenset({
    "T_destination", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers", "_call_impl",
    "_compiled_call_impl", "_forward_hooks", "_forward_hooks_always_called", "_forward_hooks_with_kwargs",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_get_backward_hooks", "_get_backward_pre_hooks",
    "_get_name", "_is_full_backward_hook", "_load_from_state_dict", "_load_state_dict_post_hooks",
    "_load_state_dict_pre_hooks", "_maybe_warn_non_full_backward_hook", "_modules", "_named_members",
    "_non_persistent_buffers_set", "_parameters", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict", "_slow_forward",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_version", "_wrapped_call_impl", "add_module", "apply",
    "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu", "cuda", "double", "dump_patches",
    "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer", "register_forward_hook",
    "register_forward_pre_hook", "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module",
    "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train", "training",
    "type", "xpu", "zero_grad",
})
# What ``nn.Sequential`` adds (a labelled group is one): ``add_module`` refuses a child named like these.
SEQUENTIAL_ATTRS = frozenset({"_get_item_by_idx", "append", "extend", "insert", "pop"})
# Attributes the generated classes add: the network's ``output_names`` and ``shard_units``, FoldingSequential's
# ``fold``.
GENERATED_ATTRS = frozenset({"output_names", "shard_units", "fold"})
# Every attribute a layer label must not take.
RESERVED_ATTRS = MODULE_ATTRS | SEQUENTIAL_ATTRS | GENERATED_ATTRS

# ``dir(builtins)`` without dunders, for every supported Python (3.10 to 3.13) and with what `site` adds.
PYTHON_BUILTINS = frozenset({
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "BaseExceptionGroup",
    "BlockingIOError", "BrokenPipeError", "BufferError", "BytesWarning", "ChildProcessError",
    "ConnectionAbortedError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
    "DeprecationWarning", "EOFError", "Ellipsis", "EncodingWarning", "EnvironmentError", "Exception",
    "ExceptionGroup", "False", "FileExistsError", "FileNotFoundError", "FloatingPointError", "FutureWarning",
    "GeneratorExit", "IOError", "ImportError", "ImportWarning", "IndentationError", "IndexError",
    "InterruptedError", "IsADirectoryError", "KeyError", "KeyboardInterrupt", "LookupError", "MemoryError",
    "ModuleNotFoundError", "NameError", "None", "NotADirectoryError", "NotImplemented", "NotImplementedError",
    "OSError", "OverflowError", "PendingDeprecationWarning", "PermissionError", "ProcessLookupError",
    "PythonFinalizationError", "RecursionError", "ReferenceError", "ResourceWarning", "RuntimeError",
    "RuntimeWarning", "StopAsyncIteration", "StopIteration", "SyntaxError", "SyntaxWarning", "SystemError",
    "SystemExit", "TabError", "TimeoutError", "True", "TypeError", "UnboundLocalError", "UnicodeDecodeError",
    "UnicodeEncodeError", "UnicodeError", "UnicodeTranslateError", "UnicodeWarning", "UserWarning",
    "ValueError", "Warning", "ZeroDivisionError", "_IncompleteInputError", "abs", "aiter", "all", "anext",
    "any", "ascii", "bin", "bool", "breakpoint", "bytearray", "bytes", "callable", "chr", "classmethod",
    "compile", "complex", "copyright", "credits", "delattr", "dict", "dir", "divmod", "enumerate", "eval",
    "exec", "exit", "filter", "float", "format", "frozenset", "getattr", "globals", "hasattr", "hash", "help",
    "hex", "id", "input", "int", "isinstance", "issubclass", "iter", "len", "license", "list", "locals", "map",
    "max", "memoryview", "min", "next", "object", "oct", "open", "ord", "pow", "print", "property", "quit",
    "range", "repr", "reversed", "round", "set", "setattr", "slice", "sorted", "staticmethod", "str", "sum",
    "super", "tuple", "type", "vars", "zip",
})

# What the generated module imports. A block of one of the first four names is refused in the front end
# (as it always was); everything else reserved is renamed.
GENERATED_GLOBALS = frozenset({"torch", "nn", "F", "OrderedDict"})
IMPORTED = GENERATED_GLOBALS | {"os"}
# The classes and functions of the helper runtime (backends/torch/runtime/*.py, embedded where used).
HELPER_NAMES = frozenset({
    "Abs", "AlwaysDropout", "Apply", "FoldingSequential", "Permute", "Reshape", "Scale", "SelfAttention", "SequenceGRU",
    "SequenceLSTM", "SequenceOutput", "SequenceRNN", "Shift", "folded_batchnorm", "merge_directions",
    "PositionIds", "PositionalEncoding", "position_ids", "sinusoidal_encoding", "LayerStack",
    "last_steps", "run_packed", "StochasticDepth", "stochastic_depth", "external_layer",
    "folded_without_bias", "folded_parameters", "apply_layer",
})
# The top-level names of the fused runtime (backends/triton/runtime/*.py, embedded in --fuse modules).
RUNTIME_NAMES = frozenset({
    "ELEMENTWISE_BLOCK", "ElementwiseKernel", "LAUNCHES", "LINEAR_TILES", "LinearKernel", "ROW_LIMIT", "RowKernel",
    "TRITON_INTERPRET", "_Elementwise", "_Linear", "_RNN_AVE", "_RNN_BLOCK_B", "_RNN_BLOCK_H", "_RNN_MERGES",
    "_RNN_MUL", "_RNN_OWN", "_RNN_SKIP", "_RNN_SUM", "_RnnLayerFn", "_Row", "_compute_dtype",
    "_compute_torch_dtype", "_empty", "_epilogue_inputs", "_in_order", "_memory_order", "_need_mask",
    "_reduce_to", "_rnn_dout", "_rnn_fused", "_rnn_grid", "_rnn_gru_bwd_kernel", "_rnn_gru_fwd_kernel",
    "_rnn_lstm_bwd_kernel", "_rnn_lstm_fwd_kernel", "_rnn_put", "_rnn_shape", "_rows", "attention_sdpa",
    "batchnorm_affine", "conv_without_bias", "dlc_dropout_keep", "dlc_gelu_grad", "dlc_gelu_tanh",
    "dlc_gelu_tanh_grad", "dlc_mish_grad", "dlc_softplus", "dlc_tanh", "dropout_seed", "jit", "launch",
    "recurrent_forward", "tl", "triton", "use_triton", "version_key",
})
# Generated kernels (and their _forward, _backward, _reference functions) are named with this prefix.
KERNEL_PREFIX = "fused_"
# Names the generated module binds at its top level besides its classes and kernels, or that its code
# relies on: a class, constructor argument or local variable of one of these names would shadow it.
MODULE_RESERVED = (frozenset(keyword.kwlist) | PYTHON_BUILTINS | IMPORTED | HELPER_NAMES | RUNTIME_NAMES
                   | {"self", "_"})
# The network class keeps the spec's name, so it may not be one the module (or Python) reserves.
NETWORK_RESERVED = PYTHON_BUILTINS | IMPORTED | HELPER_NAMES | RUNTIME_NAMES


# Names longer than this are refused: nobody writes them, and each is repeated in the module path of every layer
# under it, so a long one would make the IR, summary and generated code grow with names x depth.
MAX_NAME_LENGTH = 128


def check_identifier(name: str, span: Span, what: str, *, module_attr: bool = False,
                     class_name: bool = False, label: bool = False) -> None:
    """Names from a spec end up in generated Python: only plain ASCII identifiers pass.

    ``module_attr``: the name becomes a module attribute (a state_dict key), so it may not be one
    the generated classes already have. ``class_name``: it may not be one of the module's imports. ``label``: a
    layer's label, which may be one of :data:`LABEL_KEYWORDS`.
    """
    if len(name) > MAX_NAME_LENGTH:
        raise DlcError("bad-name", f"`{name[:40]}...` cannot be used as {what}: it is {len(name):,} characters long",
                       span, hint=f"names are at most {MAX_NAME_LENGTH} characters (a name is repeated in every "
                                  "module path, summary row and line of generated code that uses it)")
    if class_name and name in GENERATED_GLOBALS:
        raise DlcError("bad-name", f"`{name}` cannot be used as {what}: the generated module uses that name", span,
                       hint=f"pick another name, e.g. `{name}Net`")
    reserved = name in DLN_KEYWORDS and not (label and name in LABEL_KEYWORDS)
    if not IDENT.match(name) or keyword.iskeyword(name) or name.startswith("__") or reserved:
        if reserved:
            why = "it is a keyword of the language"
        elif keyword.iskeyword(name):
            why = "it is a Python keyword"
        elif name.startswith("__"):
            why = "names starting with `__` are reserved"
        elif not name.isascii():
            why = "names must be ASCII"
        else:
            why = "it is not a plain identifier"
        raise DlcError("bad-name", f"`{name}` cannot be used as {what}: {why}", span,
                       hint="use ASCII letters, digits and `_`, not starting with a digit or `__`, "
                            "and not a Python keyword")
    if module_attr and name in RESERVED_ATTRS:
        if name in MODULE_ATTRS:
            owner = "torch.nn.Module already uses that name"
        elif name in SEQUENTIAL_ATTRS:
            owner = "torch.nn.Sequential (a labelled group) already uses that name"
        else:
            owner = "the generated module uses that attribute"
        raise DlcError("bad-name", f"`{name}` cannot name a layer: {owner}", span,
                       hint=f"pick another name, e.g. `{name.lstrip('_')}_layer`")


def check_network_name(name: str, span: Span) -> None:
    """The network's class keeps its spec name (it is what users import), so it must clash with nothing."""
    check_identifier(name, span, "a network name", class_name=True)
    if name in NETWORK_RESERVED:
        owner = "a Python builtin" if name in PYTHON_BUILTINS else "a name the generated module defines"
        raise DlcError("bad-name", f"`{name}` cannot be used as a network name: it is {owner}", span,
                       hint=f"pick another name, e.g. `{name[:1].upper()}{name[1:]}Net`")
