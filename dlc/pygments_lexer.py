"""A Pygments lexer for .dln specs: ``pygmentize -l dln net.dln``, and ```dln blocks in Sphinx or MkDocs.

Registered as the ``dln`` lexer through the ``pygments.lexers`` entry point (``pip install "dlc[editors]"``). It
needs only Pygments: the op names are listed here rather than read from dlc's registry, so highlighting stays fast
and imports nothing of the compiler; tests/test_editors.py checks the list against the registry, the keywords
against grammar/dln.lark, and every spec and docs example against dlc's parser.
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String, Whitespace

__all__ = ["DlnLexer", "KEYWORDS", "OPS"]

# The words grammar/dln.lark writes as literals.
KEYWORDS = ("import", "block", "network", "extern", "input", "param", "output", "return", "if", "then", "else",
            "checkpoint", "and", "or", "not", "true", "false")
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
PARAM_TYPES = ("int", "float", "bool", "str", "list", "int2")
BUILTINS = ("channels", "size", "rank", "min", "max", "int", "float", "len")
# The ops a spec calls by name (the registry's, and `max`/`min`/`mean` of reductions with `dim=`).
OPS = (
    'abs', 'adaptive_avgpool', 'add', 'argmax', 'argmin', 'attention', 'avgpool', 'batchnorm', 'bidirectional',
    'chunk', 'clamp', 'concat', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d', 'conv_transpose2d',
    'conv_transpose3d', 'crop', 'div', 'dropout', 'elu', 'embedding', 'eq', 'exp', 'flatten', 'full_like', 'ge',
    'gelu', 'glu', 'groupnorm', 'gru', 'gt', 'hardsigmoid', 'hardswish', 'hardtanh', 'index', 'instancenorm',
    'layernorm', 'le', 'leaky_relu', 'linear', 'log', 'log_softmax', 'logical_and', 'logical_not', 'logical_or',
    'logsumexp', 'lstm', 'lt', 'masked_fill', 'matmul', 'max', 'maxpool', 'mean', 'min', 'mish', 'mul', 'ne',
    'ones_like', 'pad', 'permute', 'pixel_shuffle', 'pixel_unshuffle', 'positional_encoding', 'positions',
    'pow', 'prelu', 'prod', 'rand_like', 'randn_like', 'reduce_max', 'reduce_mean', 'reduce_min', 'relu',
    'relu6', 'reshape', 'rnn', 'rsqrt', 'scale', 'selu', 'shift', 'sigmoid', 'silu', 'softmax', 'softplus',
    'softsign', 'split', 'sqrt', 'stochastic_depth', 'sub', 'sum', 'tanh', 'timedistributed', 'transpose',
    'upsample', 'weightnorm', 'where', 'zeros_like',
)

_NAME = r"[^\W\d]\w*"
# a word followed by `:` is a label (`block: MBConv(...)`), and by `=` a keyword argument, whatever the word
_NOT_NAMED = r"\b(?!\s*(?:=(?!=)|:))"


class DlnLexer(RegexLexer):
    """Lexer for dlc's .dln network specs."""

    name = "DLN"
    aliases = ["dln"]
    filenames = ["*.dln"]

    tokens = {
        "root": [
            include("common"),
            (rf"\b(block|network|extern)(\s+)({_NAME})(\s*)(\()",
             bygroups(Keyword.Declaration, Whitespace, Name.Class, Whitespace, Punctuation), "params"),
            (rf"\b(block|network|extern)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"\b(input|param)(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            include("label"),
            include("expression"),
            (r"[)\]]", Punctuation),  # unbalanced: the parser reports it, the lexer goes on
        ],
        "common": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"(?:[^"\\\n]|\\.)*"', String.Double),
            (r'"[^\n]*', String.Double),  # unterminated: the parser reports it
        ],
        "label": [
            (rf"({_NAME}(?:\{{i\}}\w*)?)(\s*)(:)", bygroups(Name.Label, Whitespace, Punctuation)),
        ],
        "params": [
            include("common"),
            (rf"({_NAME})(\s*)(:)", bygroups(Name.Variable, Whitespace, Punctuation)),
            (words(PARAM_TYPES, prefix=r"\b", suffix=r"\b"), Keyword.Type),
            (r"\)", Punctuation, "#pop"),
            include("expression"),
        ],
        "parens": [
            include("common"),
            (rf"({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("label"),
            (r"\)", Punctuation, "#pop"),
            include("expression"),
        ],
        "brackets": [
            include("common"),
            (r"\]", Punctuation, "#pop"),
            include("expression"),
        ],
        "expression": [
            include("common"),
            (r"\(", Punctuation, "parens"),
            (r"\[", Punctuation, "brackets"),
            (r"(?<![\w.])(?:\d+(?:\.\d*)?|\.\d+)[eE][+-]?\d+", Number.Float),
            (r"(?<![\w.])(?:\d+\.\d*|\.\d+)", Number.Float),
            (r"(?<![\w.])\d+", Number.Integer),
            (words(("true", "false"), prefix=r"\b", suffix=_NOT_NAMED), Keyword.Constant),
            (words(DTYPES, prefix=r"\b", suffix=_NOT_NAMED), Keyword.Type),
            (words(("and", "or", "not"), prefix=r"\b", suffix=_NOT_NAMED), Operator.Word),
            (words(("import", "block", "network", "extern", "input", "param", "output"), prefix=r"\b",
                   suffix=_NOT_NAMED), Keyword.Declaration),
            (words(("return", "if", "then", "else", "checkpoint"), prefix=r"\b", suffix=_NOT_NAMED), Keyword),
            (words(BUILTINS, prefix=r"\b", suffix=r"\b(?=\s*\()"), Name.Builtin),
            (words(OPS, prefix=r"\b", suffix=_NOT_NAMED), Name.Builtin),
            (r"\b[A-Z][A-Z0-9_]*[a-z]\w*", Name.Class),  # CamelCase: a block, by convention
            (_NAME, Name),
            (r"->", Operator),
            (r"\.\.\.", Punctuation),
            (r"==|!=|<=|>=|//|[-+*/%@<>=|]", Operator),
            (r"[,:{}]", Punctuation),
            (r".", Error),  # no token of dln starts with it
        ],
    }
