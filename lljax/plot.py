"""Matplotlib figures for experiment results (optional extra: ``pip install 'lljax[plot]'``).

matplotlib is imported on first use, with the non-interactive ``Agg`` backend unless a
backend was already chosen, so figures render on headless machines and in CI. Every
function returns a ``matplotlib.figure.Figure``; :func:`save` writes it as PNG and closes it.

Examples:
  >>> from lljax import plot
  >>> fig = plot.curves({"a": ([0, 1, 2], [0.1, 0.5, 0.7])}, ylabel="accuracy")
  >>> len(fig.axes)
  1
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["available", "bars", "curves", "heatmap", "histogram", "pyplot", "save"]


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    """``matplotlib.pyplot``, imported on demand with the ``Agg`` backend.

    Raises:
      ImportError: if matplotlib is missing, naming the extra that installs it.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            "lljax.plot needs matplotlib, an optional extra: pip install 'lljax[plot]'"
        ) from e
    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, x, y, err, label, color=None):
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    (line,) = ax.plot(x, y, label=label, color=color, lw=1.6)
    if err is not None:
        err = np.asarray(err, float)
        ax.fill_between(x, y - err, y + err, color=line.get_color(), alpha=0.2, lw=0)
    return line


def curves(
    series: Mapping[str, tuple],
    *,
    xlabel: str = "step",
    ylabel: str = "",
    title: str = "",
    references: Mapping[str, float] | None = None,
    logx: bool = False,
    logy: bool = False,
    ax=None,
):
    """Line plot of named curves, with optional ±error bands and horizontal reference lines.

    Args:
      series: name -> ``(x, y)`` or ``(x, y, err)``; ``err`` is drawn as a band ``y ± err``.
      xlabel, ylabel, title: axis labels and title.
      references: name -> value drawn as a dashed horizontal line in the colour of the
        curve with the same name (e.g. a published number).
      logx, logy: logarithmic axes.
      ax: an existing axes to draw into (a new figure is made otherwise).

    Returns:
      The figure.
    """
    plt = pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    else:
        fig = ax.figure
    colors = {}
    for name, s in series.items():
        if len(s) not in (2, 3):
            raise ValueError(f"series: {name!r} must be (x, y) or (x, y, err), got {len(s)} items")
        line = _band(ax, s[0], s[1], s[2] if len(s) == 3 else None, name)
        colors[name] = line.get_color()
    for name, value in (references or {}).items():
        ax.axhline(value, ls="--", lw=1.0, color=colors.get(name, "0.4"), alpha=0.8)
    if references:
        ax.plot([], [], ls="--", color="0.4", label="published")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(frameon=False, fontsize="small")
    return fig


def bars(
    groups: Mapping[str, Mapping[str, tuple]],
    *,
    ylabel: str = "",
    title: str = "",
    annotate: bool = True,
):
    """Grouped bar chart: ``groups[group][series] = (value, err)`` (``err`` may be None/nan).

    Args:
      groups: e.g. ``{"cnn": {"published": (94, None), "measured": (93.1, 0.4)}}``.
      ylabel, title: labels.
      annotate: write each value above its bar.

    Returns:
      The figure.
    """
    import numpy as np

    plt = pyplot()
    names = list(groups)
    series = []
    for g in groups.values():
        series += [s for s in g if s not in series]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        x = np.arange(len(names)) + (i - (len(series) - 1) / 2) * width
        vals = [groups[n].get(s, (np.nan, None)) for n in names]
        y = np.array([v[0] for v in vals], float)
        err = np.array([np.nan if len(v) < 2 or v[1] is None else v[1] for v in vals], float)
        has_err = np.isfinite(err).any()
        rects = ax.bar(
            x, y, width, label=s, yerr=np.nan_to_num(err) if has_err else None, capsize=3
        )
        if annotate:
            ax.bar_label(
                rects,
                labels=[f"{v:.3g}" if np.isfinite(v) else "" for v in y],
                fontsize="x-small",
                padding=2,
            )
    ax.set_xticks(np.arange(len(names)), names)
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.12)  # room for the legend above the bars
    ax.grid(axis="y", alpha=0.3)
    if series:
        ax.legend(frameon=False, fontsize="small")
    return fig


def heatmap(
    values,
    *,
    x: Sequence[float],
    y: Sequence[float],
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    colorbar: str = "",
    overlays: Mapping[str, tuple] | None = None,
    cmap: str = "viridis",
):
    """Heat-map of ``values[i, j]`` at ``(x[j], y[i])`` with optional overlaid curves.

    Args:
      values: ``(len(y), len(x))`` array.
      x, y: grid coordinates (cell centres).
      overlays: name -> ``(xs, ys)`` curves drawn on top (e.g. a theoretical critical line).
      colorbar: colorbar label.

    Returns:
      The figure.
    """
    import numpy as np

    plt = pyplot()
    v = np.asarray(values, float)
    if v.shape != (len(y), len(x)):
        raise ValueError(f"values: expected shape {(len(y), len(x))} from (y, x), got {v.shape}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    mesh = ax.pcolormesh(
        np.asarray(x, float), np.asarray(y, float), v, cmap=cmap, shading="nearest"
    )
    fig.colorbar(mesh, ax=ax, label=colorbar)
    for name, (xs, ys) in (overlays or {}).items():
        ax.plot(xs, ys, lw=1.8, label=name)
    if overlays:
        ax.legend(frameon=False, fontsize="small")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return fig


def histogram(
    samples: Mapping[str, Any],
    *,
    bins: int = 60,
    xlabel: str = "",
    title: str = "",
    density: bool = True,
    logy: bool = False,
):
    """Overlaid histograms of named sample arrays (e.g. eigenvalues per population).

    Non-finite samples (±inf, NaN) cannot be binned: they are dropped, and the legend entry
    says how many (``"name (2 non-finite dropped)"``).

    Examples:
      >>> import numpy as np
      >>> from lljax import plot
      >>> fig = plot.histogram({"eigs": [1.0, 2.0, 2.5, np.inf, np.nan]})
      >>> fig.axes[0].get_legend().get_texts()[0].get_text()
      'eigs (2 non-finite dropped)'
      >>> plot.pyplot().close(fig)
    """
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for name, s in samples.items():
        s = np.asarray(s, float).ravel()
        finite = np.isfinite(s)
        dropped = int(s.size - finite.sum())
        label = f"{name} ({dropped} non-finite dropped)" if dropped else name
        ax.hist(s[finite], bins=bins, density=density, alpha=0.5, label=label)
    ax.set(xlabel=xlabel, ylabel="density" if density else "count", title=title)
    if logy:
        ax.set_yscale("log")
    if samples:
        ax.legend(frameon=False, fontsize="small")
    return fig


def save(fig, path: str | os.PathLike, *, dpi: int = 120) -> str:
    """Writes ``fig`` as PNG to ``path`` (exactly that name) and closes it; returns the path.

    A suffix naming another format matplotlib writes (``.pdf``, ``.svg``, ...) picks that
    format; any other name (no suffix, ``run.v1``) gets PNG bytes, with no suffix appended.

    Examples:
      >>> import os, tempfile, numpy as np, lljax as ll
      >>> x = np.arange(4)
      >>> fig = ll.plot.curves({"train": (x, 1 / (1 + x), 0.1 * np.ones(4))}, ylabel="loss")
      >>> path = ll.plot.save(fig, os.path.join(tempfile.mkdtemp(), "loss.png"))
      >>> os.path.getsize(path) > 0
      True
    """
    plt = pyplot()
    suffix = os.path.splitext(os.fspath(path))[1][1:].lower()
    fmt = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"
    try:
        fig.savefig(path, dpi=dpi, format=fmt)
    finally:
        plt.close(fig)
    return str(path)
