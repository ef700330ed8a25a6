"""The looks of a diagram: ``default`` (a colour per op family, parameter counts, a legend) and ``paper``.

``paper`` is for a figure in a paper: a serif font, no legend, labels that are the op and its key attributes
only, and fills in five shades of grey whose lightness tells the kinds of layer apart when printed in black and
white (layers with weights darkest, then attention and recurrence, norms, activations and shape ops lightest).
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILY_COLOURS = {
    "conv": "#cfe2f3", "linear": "#c9daf8", "pool": "#d9ead3", "norm": "#fff2cc", "activation": "#f4cccc",
    "merge": "#d9d2e9", "shape": "#eeeeee", "recurrent": "#d0e0e3", "attention": "#b4dcd6",
    "embedding": "#fce5cd", "regularization": "#f3f3f3", "arith": "#e6def0", "wrapper": "#e0e0f0",
    "block": "#ffffff", "io": "#ffffff",
    "param": "#e8f4e0", "external": "#f6e3d3", "index": "#eeeeee", "reduce": "#e6def0", "compare": "#ead1dc",
    "random": "#fdf3e7", "fill": "#f3f3f3", "position": "#fce5cd",
}
FUSION_FILL = "#fff4c2"

# The paper palette's shades, darkest first; each family takes one (unlisted families: the lightest).
PAPER_SHADES = ("#b3b3b3", "#cccccc", "#e0e0e0", "#f0f0f0", "#ffffff")
_PAPER_SHADE_OF = {
    "conv": 0, "linear": 0, "embedding": 0, "external": 0, "param": 0,
    "attention": 1, "recurrent": 1, "wrapper": 1,
    "norm": 2, "pool": 2, "reduce": 2,
    "activation": 3, "regularization": 3, "random": 3,
}
PAPER_COLOURS = {family: PAPER_SHADES[_PAPER_SHADE_OF.get(family, 4)] for family in FAMILY_COLOURS}


@dataclass(frozen=True)
class Style:
    """How a diagram looks; :data:`STYLES` holds the two there are."""

    name: str
    font: str
    colours: dict[str, str]
    legend: bool  # a legend of the families drawn
    details: bool  # layer names and parameter counts in labels, block arguments on clusters
    fusion_fill: str
    edge: str  # edges' colour
    cluster: str  # clusters' outline colour


STYLES = {
    "default": Style("default", "Helvetica", FAMILY_COLOURS, legend=True, details=True, fusion_fill=FUSION_FILL,
                     edge="#555555", cluster="#666666"),
    "paper": Style("paper", "Times-Roman", PAPER_COLOURS, legend=False, details=False, fusion_fill="#eeeeee",
                   edge="#000000", cluster="#000000"),
}


def luminance(colour: str) -> float:
    """The relative luminance (WCAG's, 0 black to 1 white) of a ``#rrggbb`` colour: what a greyscale print keeps."""
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
