"""Regenerate docs/gallery.md and its diagrams (docs/images/gallery/*.svg) from specs/, and the pictures of
docs/diagrams.md (docs/images/diagrams/*.svg, one per option shown there): `make gallery`.

Each spec is drawn with `dlc render`'s defaults, so the gallery shows what a user gets. The output is
deterministic: rerunning without changes to specs/ or the renderer changes no file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
IMAGES = ROOT / "docs" / "images" / "gallery"
PAGE = ROOT / "docs" / "gallery.md"
OPTION_IMAGES = ROOT / "docs" / "images" / "diagrams"
# The pictures of docs/diagrams.md: the `dlc render` arguments of each (docs/diagrams.md shows these commands,
# which tests/test_render.py runs).
OPTIONS = {
    "vit_rolled": ["specs/vit_b_16.dln", "--set", "num_layers=4"],
    "written_out": ["docs/examples/written_out.dln"],
    "mlp_fusion": ["specs/mlp.dln", "--fusion"],
    "vit_paper": ["specs/vit_b_16.dln", "--style", "paper", "--width", "3.5in"],
    "gpt_paper_no_shapes": ["specs/gpt.dln", "--style", "paper", "--no-shapes"],
    "resnet18_lr": ["specs/resnet18.dln", "--rankdir", "LR"],
    "resnet50_depth1": ["specs/resnet50.dln", "--depth", "1", "--style", "paper"],
}

INTRO = """# Gallery

Every bundled spec as `dlc render` draws it (`make gallery` regenerates this page and its images).
Clusters are block instances and labelled groups; edges carry tensor shapes; dashed clusters and
lines mark shared instances. Runs of identical block instances are drawn once, marked `×N`, and
large networks collapse deeper blocks. [diagrams.md](diagrams.md) shows every option (`--no-roll`,
`--depth N`, `--fusion`, `--style paper`, `--rankdir LR`, `--width`, `.pdf` and `.tex` output).
"""


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    sections = [INTRO]
    for spec in sorted(SPECS.glob("*.dln")):
        image = IMAGES / f"{spec.stem}.svg"
        subprocess.run([sys.executable, "-m", "dlc", "render", str(spec), "-o", str(image)], check=True,
                       capture_output=True)
        source = spec.read_text(encoding="utf-8").rstrip("\n")
        rel = image.relative_to(PAGE.parent).as_posix()
        sections.append(f"## {spec.stem}\n\n<img src=\"{rel}\" alt=\"{spec.stem} as drawn by dlc render\" "
                        f"width=\"420\">\n\n<details><summary>specs/{spec.name}</summary>\n\n```dln\n{source}\n"
                        f"```\n\n</details>\n")
    PAGE.write_text("\n".join(sections), encoding="utf-8")
    OPTION_IMAGES.mkdir(parents=True, exist_ok=True)
    for name, args in OPTIONS.items():
        subprocess.run([sys.executable, "-m", "dlc", "render", *args, "-o", str(OPTION_IMAGES / f"{name}.svg")],
                       check=True, capture_output=True, cwd=ROOT)
    print(f"wrote {PAGE.relative_to(ROOT)}, {len(sections) - 1} diagrams in {IMAGES.relative_to(ROOT)} and "
          f"{len(OPTIONS)} in {OPTION_IMAGES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
