"""`python -m dlkernels.bench readme`: the README's speed tables, regenerated from the result files."""
from __future__ import annotations

import os
from pathlib import Path

from dlkernels.bench import DEFAULT_RESULTS_DIR, REPO_ROOT
from dlkernels.bench.results import device_slug, load_all, render_markdown

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
NO_RESULTS = "No GPU results are committed yet."


def section(results_dir: Path, readme_dir: Path) -> str:
    """Every <device>/<family>.json as a table (with its plot when there is one); NO_RESULTS says when no
    GPU speed table exists (the host-overhead rows are measured on CPU machines too)."""
    from dlkernels.bench import overhead

    parts, speed_tables = [], 0
    for results in load_all(results_dir):
        if results["family"] == overhead.FAMILY:
            parts.append(overhead.render_markdown(results))
            continue
        speed_tables += 1
        parts.append(render_markdown(results, heading="###"))
        selection = f"-{device_slug(results['selection'])}" if results.get("selection") else ""
        plot = Path(results_dir) / device_slug(results["device"]) / f"{results['family']}{selection}.png"
        if plot.exists():
            parts.append(f"![{results['family']} on {results['device']}]({os.path.relpath(plot, readme_dir)})")
    return "\n\n".join(parts if speed_tables else [NO_RESULTS, *parts])


def update(readme: Path = REPO_ROOT / "README.md", results_dir: Path = DEFAULT_RESULTS_DIR) -> bool:
    """Replaces the text between the markers; returns whether README changed."""
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new_text = f"{head}{BEGIN}\n{section(results_dir, Path(readme).resolve().parent)}\n{END}{tail}"
    Path(readme).write_text(new_text)
    return new_text != text
