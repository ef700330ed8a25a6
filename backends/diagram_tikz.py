"""A TikZ picture from the layout Graphviz computed: ``dot -Tjson``'s xdot drawing operations, one by one.

``dot -Tjson`` gives, for the graph, every cluster, node and edge, the shapes it draws (polygons, Bézier curves,
ellipses, polylines), the texts and the pen and fill colours, in points. Each becomes one TikZ command, so the
picture is the one ``dot`` draws as SVG, and no LaTeX tool (dot2tex, pdflatex) is needed to write it. The picture
is scaled to the column (``\\resizebox{\\columnwidth}{!}``); the file is ``\\input`` inside a figure and needs
the ``tikz`` and ``graphicx`` packages.
"""

from __future__ import annotations

import json

# LaTeX's special characters, and the few non-ASCII characters dlc's labels use, as text-mode LaTeX
_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
          "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "×": r"$\times$", "→": r"$\rightarrow$", "…": r"\dots{}"}
_ANCHOR = {"l": "base west", "c": "base", "r": "base east"}


def latex_text(text: str) -> str:
    """``text`` escaped for LaTeX's text mode (any label is safe: none can end the group or run a command)."""
    return "".join(_LATEX.get(ch, ch) for ch in text)


class _Writer:
    def __init__(self) -> None:
        self.colours: dict[str, str] = {}  # "#rrggbb" -> its \definecolor name
        self.body: list[str] = []
        self.pen: str | None = "black"  # None: transparent, not drawn
        self.fill: str | None = None
        self.dashed = False
        self.size = 10.0

    def colour(self, value: str) -> str | None:
        """The TikZ colour name of an xdot colour; None for a transparent one."""
        value = value.lower()
        if value.startswith("#") and len(value) == 9:
            if value.endswith("00"):
                return None
            value = value[:7]
        if not (value.startswith("#") and len(value) == 7):
            return "black" if value != "transparent" else None
        if value not in self.colours:
            self.colours[value] = f"dlc{len(self.colours)}"
        return self.colours[value]

    def op(self, op: dict) -> None:
        kind = op["op"]
        if kind == "c":
            self.pen = self.colour(op["color"])
        elif kind == "C":
            self.fill = self.colour(op["color"])
        elif kind == "S":
            self.dashed = op.get("style") in ("dashed", "dotted")
        elif kind == "F":
            self.size = float(op["size"])
        elif kind in "PpBbLEe":
            self.shape(kind, op)
        elif kind == "T":
            x, y = op["pt"]
            self.body.append(f"  \\node[anchor={_ANCHOR.get(op.get('align'), 'base')}, inner sep=0pt, "
                             f"font=\\fontsize{{{self.size:g}}}{{{self.size * 1.2:g}}}\\selectfont, "
                             f"text={self.pen or 'black'}] "
                             f"at ({x:.2f},{y:.2f}) {{{latex_text(op['text'])}}};")

    def shape(self, kind: str, op: dict) -> None:
        filled = kind in "PBE" and self.fill is not None
        style = [f"draw={self.pen or 'none'}"] + ([f"fill={self.fill}"] if filled else [])
        style += ["dashed"] if self.dashed else []
        if kind in "Ee":
            (x, y), (rx, ry) = op["rect"][:2], op["rect"][2:]
            path = f"({x:.2f},{y:.2f}) ellipse [x radius={rx:.2f}, y radius={ry:.2f}]"
        elif kind in "Bb":
            pts = [f"({x:.2f},{y:.2f})" for x, y in op["points"]]
            path = pts[0] + "".join(f" .. controls {pts[i]} and {pts[i + 1]} .. {pts[i + 2]}"
                                    for i in range(1, len(pts) - 2, 3))
        else:
            path = " -- ".join(f"({x:.2f},{y:.2f})" for x, y in op["points"])
        closed = " -- cycle" if kind in "Pp" or (kind in "Bb" and filled) else ""
        self.body.append(f"  \\path[{', '.join(style)}] {path}{closed};")

    def element(self, obj: dict) -> None:
        for key in ("_draw_", "_ldraw_", "_hdraw_", "_tdraw_", "_hldraw_", "_tldraw_"):
            self.pen, self.fill, self.dashed = "black", None, False
            for op in obj.get(key, ()):
                self.op(op)


def tikz(layout_json: str) -> str:
    """The TikZ text of the picture ``dot -Tjson`` laid out (``layout_json``), scaled to the column's width."""
    layout = json.loads(layout_json)
    w = _Writer()
    w.element({k: v for k, v in layout.items() if k == "_draw_"})
    for obj in layout.get("objects", ()):  # clusters first (dot lists them first), so nodes are drawn over them
        w.element(obj)
    for edge in layout.get("edges", ()):
        w.element(edge)
    lines = [f"% {latex_text(layout.get('name', 'diagram'))}: drawn by dlc render from Graphviz's layout",
             "% \\input this file in a figure; it needs \\usepackage{tikz} and \\usepackage{graphicx}"]
    lines += [f"\\definecolor{{{name}}}{{HTML}}{{{value[1:].upper()}}}" for value, name in w.colours.items()]
    lines += ["\\resizebox{\\columnwidth}{!}{%", "\\begin{tikzpicture}[x=1bp, y=1bp, line width=0.5bp]"]
    lines += w.body
    lines += ["\\end{tikzpicture}%", "}"]
    return "\n".join(lines) + "\n"
