"""Regenerate docs/gallery.md and its diagrams (docs/images/gallery/*.svg) from specs/: `make gallery`.

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

INTRO = """# Gallery

Every bundled spec as `dlc render` draws it (`make gallery` regenerates this page and its images).
Clusters are block instances and labelled groups; edges carry tensor shapes; shaded boxes are
the fusion groups that `dlc compile --fuse` runs as one kernel; dashed clusters and lines mark
shared instances. Large networks collapse deeper blocks and roll repeats (`×N`) by default:
`--depth N`, `--roll`, `--no-fusion` and `--rankdir LR` change that.
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
    print(f"wrote {PAGE.relative_to(ROOT)} and {len(sections) - 1} diagrams in {IMAGES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
