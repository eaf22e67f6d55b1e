"""The report's plots: measured curves drawn with matplotlib, as inline SVG (the HTML) or one PNG page.

Only the object-oriented API is used (``Figure``, never ``pyplot``): no global state, no GUI backend, the
same picture from a CLI, a test or a thread.  Matplotlib keeps its configuration and font cache in
``MPLCONFIGDIR``; where that is unset it is set to a folder of cardeval's cache before the first import, so
a clean CI machine builds the cache once, in a known place, instead of warning about an unwritable home.
The SVG is made deterministic (fixed id salt, no date) so that two renders of one result are one file,
and keeps its text as text, so the report stays small and searchable.

The operator never imports this module (an import-linter contract): its image has no matplotlib.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import textwrap
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


def _config_dir() -> str:
    base = Path(os.environ.get("CARDEVAL_CACHE") or Path.home() / ".cache" / "cardeval") / "matplotlib"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: a fixed folder under the system's temporary directory
        base = Path(tempfile.gettempdir()) / "cardeval-matplotlib"
        base.mkdir(parents=True, exist_ok=True)
    return str(base)


os.environ.setdefault("MPLCONFIGDIR", _config_dir())

from matplotlib import rc_context  # noqa: E402 - after MPLCONFIGDIR, which matplotlib reads on import
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from cardeval.api.models import Series  # noqa: E402

#: One plot: draws itself on the axes it is given.
Draw = Callable[[Axes], None]

#: The two evaluations of a comparison: A solid with round markers, B dashed with squares.
_STYLES = (("-", "o"), ("--", "s"))


def _style() -> AbstractContextManager[None]:
    """The report's look, and a fixed SVG id salt so that one result always renders to the same file."""
    return rc_context({"svg.hashsalt": "cardeval", "svg.fonttype": "none", "font.size": 9, "axes.grid": True,
                       "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})


@dataclass(frozen=True)
class Curve:
    label: str
    series: Series
    #: 0 for a report's only evaluation (or a comparison's A), 1 for a comparison's B.
    evaluation: int = 0


def human_bytes(value: float) -> str:
    """A message or transfer size as people say it: 64 KiB, 1 MiB, 2 GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def draw_curves(curves: Sequence[Curve], xlabel: str, ylabel: str, xlog: bool = False, ylog: bool = False,
                xbytes: bool = False) -> Draw:
    """Lines over a numeric x: one per series, each comparison evaluation in its own style."""
    def draw(ax: Axes) -> None:
        for i, c in enumerate(curves):
            line, marker = _STYLES[c.evaluation % 2]
            ax.plot(c.series.x, c.series.y, label=c.label, color=f"C{i % 10}", linestyle=line, marker=marker,
                    markersize=3, linewidth=1.2)
        if xlog:
            ax.set_xscale("log", base=2 if xbytes else 10)
        if ylog and all(v > 0 for c in curves for v in c.series.y):
            ax.set_yscale("log")
        if xbytes:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _legend(ax, len(curves))
    return draw


def draw_levels(curves: Sequence[Curve], ylabel: str) -> Draw:
    """Lines over named categories (load levels: idle, 20 %, ..., full), in the order of their first use."""
    def draw(ax: Axes) -> None:
        names: list[str] = []
        for c in curves:
            names += [n for n in c.series.x_labels if n not in names]
        for i, c in enumerate(curves):
            xs = [names.index(n) for n in c.series.x_labels]
            line, marker = _STYLES[c.evaluation % 2]
            ax.plot(xs, c.series.y, label=c.label, color=f"C{i % 10}", linestyle=line, marker=marker,
                    markersize=4, linewidth=1.2)
        ax.set_xticks(range(len(names)), [n if not n.replace(".", "").isdigit() else f"{n} %" for n in names])
        ax.set_xlabel("load level")
        ax.set_ylabel(ylabel)
        _legend(ax, len(curves))
    return draw


def draw_ratios(sets: Sequence[tuple[str, dict[str, float]]]) -> Draw:
    """Horizontal bars of each metric's ratio to the A100 (1 = as an A100), log scale: a CPU stand-in's
    0.001 and a newer card's 2.5 on one axis.  A comparison's two evaluations are paired bars."""
    def draw(ax: Axes) -> None:
        metrics: list[str] = []
        for _, scores in sets:
            metrics += [m for m in scores if m not in metrics]
        height = 0.8 / max(1, len(sets))
        for j, (label, scores) in enumerate(sets):
            ys = [i + (j - (len(sets) - 1) / 2) * height for i, m in enumerate(metrics) if m in scores]
            values = [scores[m] for m in metrics if m in scores]
            bars = ax.barh(ys, values, height=height * 0.9, label=label, color=f"C{j}",
                           hatch="//" if j % 2 else None)
            ax.bar_label(bars, labels=[f"{v:.3g}×" for v in values], padding=2, fontsize=7)
        ax.set_yticks(range(len(metrics)), metrics)
        ax.invert_yaxis()
        positive = [v for _, s in sets for v in s.values() if v > 0]
        if positive:
            ax.set_xscale("log")
            low, high = min(positive + [1.0]), max(positive + [1.0])
            ax.set_xlim(low / 3, high * 6)
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel("measured / A100 (1 = as an A100)")
        if len(sets) > 1:
            ax.legend(fontsize=7)
    return draw


def _legend(ax: Axes, n: int) -> None:
    """Beside the axes, not over the curves (a collective sweep has nine operations, a comparison twice that)."""
    if n:
        ax.legend(fontsize=7, ncols=2 if n > 12 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False)


def svg(draw: Draw, title: str, width: float = 7.0, height: float = 3.4) -> str:
    """One plot as an ``<svg>`` element, ready to be put inline into HTML."""
    with _style():
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        draw(ax)
        ax.set_title(title, fontsize=10)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML


def png_page(panels: Sequence[tuple[str, Draw]], path: Path, heading: str, columns: int = 2,
             dpi: int = 110) -> None:
    """The report's plots on one PNG page (for a document or a ticket, where HTML cannot go)."""
    rows = max(1, math.ceil(len(panels) / columns))
    with _style():
        fig = Figure(figsize=(7.0 * columns, 3.6 * rows + 0.5), layout="constrained")
        fig.suptitle(heading, fontsize=12)
        for i, (title, draw) in enumerate(panels):
            ax = fig.add_subplot(rows, columns, i + 1)
            draw(ax)
            ax.set_title(title, fontsize=10)
        fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})


def no_data(note: str, width: int = 80, lines: int = 9) -> Draw:
    """A panel that says plainly why there is nothing to draw (for the PNG page; the HTML says it in text).
    The note is wrapped and cut here, and kept out of the layout, so it never squeezes its neighbours."""
    wrapped = textwrap.wrap(note, width)
    shown = "\n".join(wrapped[:lines]) + ("\n…" if len(wrapped) > lines else "")

    def draw(ax: Axes) -> None:
        ax.set_axis_off()
        text = ax.text(0.5, 0.5, shown, ha="center", va="center", fontsize=8.5, color="#555",
                       transform=ax.transAxes)
        text.set_in_layout(False)
    return draw
