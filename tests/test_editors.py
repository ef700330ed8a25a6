"""The editor grammars: the TextMate grammar of editors/vscode and the Pygments lexer of dlc/pygments_lexer.py.

No TextMate engine exists for Python, so :class:`TextMate` below is a small one: it runs the grammar's ``match``
and ``begin``/``end`` rules (with ``include``) line by line the way TextMate does (leftmost match wins, ties go to
the ``end`` rule and then to the earlier pattern) with Python's ``re``. It is not Oniguruma; the grammar keeps to
the regex syntax both share, which the first test checks. Both highlighters are compared with dlc's own parser:
every token Lark finds in a spec or a docs example (keywords, numbers, strings, comments, dtypes, ``->``, labels,
definitions, op calls) must get the expected class.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
from lark import Lark, Token, Tree
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, String, _TokenType

from dlc.compiler.ops.registry import all_ops
from dlc.pygments_lexer import DTYPES, KEYWORDS, OPS, DlnLexer

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "editors" / "vscode" / "syntaxes" / "dln.tmLanguage.json"
LARK = ROOT / "grammar" / "dln.lark"

SPECS = sorted((ROOT / "specs").rglob("*.dln"))
_DLN_BLOCK = re.compile(r"^```dln[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def _doc_examples() -> list[tuple[str, str]]:
    out = []
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for m in _DLN_BLOCK.finditer(text):
            out.append((f"{doc.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1)))
    return out


SOURCES = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in SPECS] + _doc_examples()
OP_NAMES = set(all_ops()) | {op.spelled for op in all_ops().values() if op.spelled}


def _lark_keywords() -> set[str]:
    """The words dln.lark writes as literals (`block`, `input`, `true`, ...)."""
    return {w for w in re.findall(r'"([a-z]+)"', LARK.read_text(encoding="utf-8"))}


def _lark_dtypes() -> set[str]:
    m = re.search(r"^DTYPE[^(]*\(([^)]*)\)", LARK.read_text(encoding="utf-8"), re.M)
    assert m, "DTYPE not found in dln.lark"
    return set(m.group(1).split("|"))


# ---- the expected classes, from dlc's grammar --------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A token of the source and the class a highlighter must give it."""

    line: int  # 1-based
    col: int  # 1-based
    text: str
    cls: str  # keyword, constant, number, string, comment, dtype, pipe, label, definition, op, builtin, parameter


@dataclass
class _Oracle:
    keywords: set[str] = field(default_factory=_lark_keywords)
    parser: Lark | None = None

    def expected(self, text: str) -> list[Expected] | None:
        """The classified tokens of ``text``, or None when dlc's grammar does not parse it (an error example)."""
        comments: list[Token] = []
        if self.parser is None:
            self.parser = Lark(LARK.read_text(encoding="utf-8"), parser="lalr", keep_all_tokens=True,
                               maybe_placeholders=True, lexer_callbacks={"COMMENT": comments.append})
        self.parser.lexer_conf.callbacks["COMMENT"] = comments.append
        try:
            tree = self.parser.parse(text)
        except Exception:  # noqa: BLE001 -- lark's errors: the example shows a syntax error on purpose
            return None
        out = [Expected(c.line, c.column, str(c), "comment") for c in comments]
        out.extend(self._walk(tree))
        return out

    def _walk(self, tree: Tree) -> Iterator[Expected]:
        kids = tree.children
        for i, kid in enumerate(kids):
            if isinstance(kid, Tree):
                yield from self._walk(kid)
                continue
            if not isinstance(kid, Token):
                continue
            cls = self._classify(tree, i, kid)
            if cls:
                yield Expected(kid.line, kid.column, str(kid), cls)

    def _classify(self, tree: Tree, i: int, tok: Token) -> str | None:
        rule = tree.data
        if tok.type in ("TRUE", "FALSE"):
            return "constant"
        if str(tok) in self.keywords and tok.type == str(tok).upper():
            return "keyword"
        simple = {"NUMBER": "number", "STRING": "string", "DTYPE": "dtype", "__ANON_0": "pipe"}
        if tok.type in simple:
            return simple[tok.type]
        if tok.type not in ("NAME", "LABEL_PATTERN"):
            return None
        if rule == "label":
            return "label"
        if rule in ("block_def", "network_def", "extern_def") and i == 1:
            return "definition"
        if rule == "param":
            return "parameter"
        if rule in ("stage_name", "stage_call") and str(tok) in OP_NAMES:
            return "op"
        return None


ORACLE = _Oracle()

# What a TextMate scope must start with for each class.
TM_SCOPE = {
    "keyword": "keyword.", "constant": "constant.language.boolean", "number": "constant.numeric",
    "string": "string.quoted.double", "comment": "comment.line.number-sign", "dtype": "storage.type.dtype",
    "pipe": "keyword.operator.pipe", "label": "entity.name.tag.label", "definition": "entity.name.type",
    "op": "support.function", "parameter": "variable.parameter",
}


# ---- a small TextMate engine ---------------------------------------------------------------------------------


class TextMate:
    """Runs a TextMate grammar's ``match``, ``begin``/``end``, ``captures`` and ``include`` rules over text."""

    def __init__(self, grammar: dict[str, Any]) -> None:
        self.repo = grammar["repository"]
        self.root = {"patterns": grammar["patterns"]}
        self._compiled: dict[str, re.Pattern[str]] = {}

    def regex(self, source: str) -> re.Pattern[str]:
        if source not in self._compiled:
            self._compiled[source] = re.compile(source)
        return self._compiled[source]

    def flat(self, patterns: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``patterns`` with every include replaced by the rules it names."""
        out: list[dict[str, Any]] = []
        for p in patterns:
            if "include" in p:
                out.extend(self.flat([self.repo[p["include"].lstrip("#")]]))
            elif "match" in p or "begin" in p:
                out.append(p)
            else:
                out.extend(self.flat(p["patterns"]))
        return out

    def scopes(self, text: str) -> list[list[list[str]]]:
        """For each line and column, the scope names that apply there (outermost first)."""
        stack: list[tuple[dict[str, Any], list[str]]] = [(self.root, [])]
        result = []
        for line in text.split("\n"):
            cols: list[list[str]] = [list(stack[-1][1]) for _ in line]
            pos = 0
            while pos <= len(line):
                rule, outer = stack[-1]
                best: tuple[int, int, re.Match[str], dict[str, Any] | None] | None = None
                if "end" in rule:
                    m = self.regex(rule["end"]).search(line, pos)
                    if m:
                        best = (m.start(), -1, m, None)
                for order, p in enumerate(self.flat(rule["patterns"])):
                    m = self.regex(p.get("match") or p["begin"]).search(line, pos)
                    if m and (best is None or m.start() < best[0]):
                        best = (m.start(), order, m, p)
                if best is None:
                    break
                _, _, m, p = best
                if p is None:  # the end of the region
                    self._paint(cols, m, outer, rule.get("endCaptures", {}))
                    stack.pop()
                elif "match" in p:
                    self._paint(cols, m, outer + [p["name"]] if "name" in p else outer, p.get("captures", {}))
                else:
                    inner = outer + [p["name"]] if "name" in p else outer
                    self._paint(cols, m, inner, p.get("beginCaptures", {}))
                    stack.append((p, inner))
                    for c in range(m.end(), len(line)):
                        cols[c] = list(inner)
                pos = m.end() if m.end() > pos else pos + 1
            result.append(cols)
        return result

    @staticmethod
    def _paint(cols: list[list[str]], m: re.Match[str], base: list[str], captures: dict[str, Any]) -> None:
        for c in range(m.start(), m.end()):
            cols[c] = list(base)
        for group, cap in captures.items():
            g = int(group)
            if m.group(g) is not None:
                for c in range(m.start(g), m.end(g)):
                    cols[c] = list(base) + [cap["name"]]


@pytest.fixture(scope="module")
def grammar() -> dict[str, Any]:
    return json.loads(GRAMMAR.read_text(encoding="utf-8"))


def _regexes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("match", "begin", "end") and isinstance(value, str):
                yield value
            else:
                yield from _regexes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _regexes(item)


def test_every_textmate_regex_compiles_in_python(grammar: dict[str, Any]) -> None:
    regexes = list(_regexes(grammar))
    assert len(regexes) > 20
    for source in regexes:
        re.compile(source)
        # constructs that Python's re and Oniguruma read differently are kept out
        assert not re.search(r"\\[hHzAGK]|\(\?[<=!]*[a-z]+>|\\p\{|\(\?>|[*+?}]\+", source), source


def test_textmate_op_list_is_the_registry(grammar: dict[str, Any]) -> None:
    m = re.fullmatch(r"\\b\(\?:([\w|]+)\)(.*)", grammar["repository"]["op"]["match"])
    assert m, grammar["repository"]["op"]["match"]
    listed = set(m.group(1).split("|"))
    assert listed == OP_NAMES, (f"update the `op` pattern of {GRAMMAR.relative_to(ROOT)}: add "
                                f"{sorted(OP_NAMES - listed)}, remove {sorted(listed - OP_NAMES)}")


def test_textmate_knows_every_keyword_and_dtype(grammar: dict[str, Any]) -> None:
    # each word of dln.lark alone on a line, where no context can help
    engine = TextMate(grammar)
    for word in sorted(_lark_keywords() | _lark_dtypes()):
        cls = "constant" if word in ("true", "false") else "dtype" if word in _lark_dtypes() else "keyword"
        scopes = engine.scopes(word)[0]
        assert all(s and s[-1].startswith(TM_SCOPE[cls]) for s in scopes), (word, scopes)


def test_extension_manifest_names_the_grammar() -> None:
    folder = ROOT / "editors" / "vscode"
    manifest = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    (lang,) = manifest["contributes"]["languages"]
    assert lang["id"] == "dln" and lang["extensions"] == [".dln"]
    config = json.loads((folder / lang["configuration"]).read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    (gram,) = manifest["contributes"]["grammars"]
    assert (folder / gram["path"]).resolve() == GRAMMAR and gram["scopeName"] == "source.dln"


@pytest.mark.parametrize("where, text", SOURCES, ids=[s[0] for s in SOURCES])
def test_textmate_classifies_every_token(grammar: dict[str, Any], where: str, text: str) -> None:
    scopes = TextMate(grammar).scopes(text)
    expected = ORACLE.expected(text)
    if expected is None:  # an example of a syntax error: the grammar only has to get through it
        return
    wrong = []
    for e in expected:
        for c in range(e.col - 1, e.col - 1 + len(e.text)):
            names = scopes[e.line - 1][c]
            if not names or not names[-1].startswith(TM_SCOPE[e.cls]):
                wrong.append(f"{where} {e.line}:{e.col} {e.text!r}: expected {e.cls}, got {names}")
                break
    assert not wrong, "\n".join(wrong[:20])


# ---- the Pygments lexer ----------------------------------------------------------------------------------------

# The Pygments token types each class may get.
PYGMENTS_TYPE: dict[str, tuple[_TokenType, ...]] = {
    "keyword": (Keyword.Declaration, Keyword.Reserved, Keyword, Operator.Word), "constant": (Keyword.Constant,),
    "number": (Number,), "string": (String.Double,), "comment": (Comment.Single,), "dtype": (Keyword.Type,),
    "pipe": (Operator,), "label": (Name.Label,), "definition": (Name.Class,), "op": (Name.Builtin,),
    "parameter": (Name.Variable,),
}


def test_lexer_word_lists_are_the_grammars_and_the_registrys() -> None:
    assert set(KEYWORDS) == _lark_keywords()
    assert set(DTYPES) == _lark_dtypes()
    assert set(OPS) == OP_NAMES, (f"update OPS in dlc/pygments_lexer.py: add {sorted(OP_NAMES - set(OPS))}, "
                                  f"remove {sorted(set(OPS) - OP_NAMES)}")


def test_lexer_is_registered_for_pygments() -> None:
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("dln"), DlnLexer)
    assert isinstance(get_lexer_for_filename("net.dln"), DlnLexer)


@pytest.mark.parametrize("where, text", SOURCES, ids=[s[0] for s in SOURCES])
def test_lexer_classifies_every_token(where: str, text: str) -> None:
    tokens = list(DlnLexer().get_tokens_unprocessed(text))
    assert "".join(value for _, _, value in tokens) == text  # it round-trips
    expected = ORACLE.expected(text)
    if expected is None:  # an example of a syntax error: it may hold characters dln has no token for
        return
    assert not [t for t in tokens if t[1] in Error], where
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    at = {offset: (ttype, value) for offset, ttype, value in tokens}
    wrong = []
    for e in expected:
        got = at.get(starts[e.line - 1] + e.col - 1)
        if got is None or got[1] != e.text or not any(got[0] in t for t in PYGMENTS_TYPE[e.cls]):
            wrong.append(f"{where} {e.line}:{e.col} {e.text!r}: expected {e.cls}, got {got}")
    assert not wrong, "\n".join(wrong[:20])


def test_pygmentize_highlights_a_spec() -> None:
    out = subprocess.run([sys.executable, "-m", "pygments", "-l", "dln", "-f", "html", str(ROOT / "specs" / "mlp.dln")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert '<span class="nb">linear</span>' in out and '<span class="kd">network</span>' in out


# ---- docs/editors.md ---------------------------------------------------------------------------------------------

EDITORS_DOC = (ROOT / "docs" / "editors.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```[ \t]*$", EDITORS_DOC, flags=re.MULTILINE | re.DOTALL)


def test_editors_doc_example_compiles() -> None:
    from dlc.pipeline import build_graph

    (example,) = _blocks("dln")
    graph = build_graph("example.dln", text=example)
    assert [name for name, _ in graph.outputs] == ["tags"]


def test_editors_doc_configurations_start_dlc_lsp() -> None:
    import tomllib

    (helix,) = _blocks("toml")
    config = tomllib.loads(helix)
    assert config["language-server"]["dlc"] == {"command": "dlc", "args": ["lsp"]}
    (language,) = config["language"]
    assert language["file-types"] == ["dln"] and language["language-servers"] == ["dlc"]
    lua = _blocks("lua")
    assert len(lua) == 2 and all('cmd = { "dlc", "lsp" }' in block for block in lua)
    assert "--install-extension dln-0.1.0.vsix" in EDITORS_DOC  # the name vsce gives the package
    manifest = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text(encoding="utf-8"))
    assert (manifest["name"], manifest["version"]) == ("dln", "0.1.0")


def test_gitattributes_line_is_the_documented_one() -> None:
    line = "*.dln linguist-language=Python linguist-detectable=false"
    assert line in EDITORS_DOC
    assert line in (ROOT / ".gitattributes").read_text(encoding="utf-8").splitlines()


def test_pygments_example_in_the_doc_runs() -> None:
    (example,) = _blocks("python")
    scope: dict[str, Any] = {}
    exec(compile(example.replace('"specs/mlp.dln"', repr(str(ROOT / "specs" / "mlp.dln"))), "editors.md", "exec"),
         scope)
    assert '<span class="nb">linear</span>' in scope["html"]
