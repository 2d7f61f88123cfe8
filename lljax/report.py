"""Readable summaries of an experiment record: a text table and a self-contained HTML page.

Both read the dict written to ``results.json`` (see :func:`lljax.experiments.run`), so a
report can be rebuilt from a results file alone. The HTML embeds its PNG figures as base64,
so the page is one file that can be mailed or attached to an issue.

Examples:
  >>> from lljax import report
  >>> print(report.format_table([{"model": "mlp", "acc": 0.5}, {"model": "cnn", "acc": 0.91234}]))
  model  acc
  -----  ------
  mlp    0.5
  cnn    0.9123
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "format_cell",
    "format_measurement",
    "format_table",
    "summary_text",
    "to_html",
    "write_html",
]


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a non-integer real number (Python, NumPy or a 0-d array)."""
    if isinstance(value, (numbers.Integral, np.bool_)):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    dtype = getattr(value, "dtype", None)
    if getattr(value, "ndim", None) == 0 and getattr(dtype, "kind", "b") not in "biuOSU":
        return float(value)  # NumPy/JAX 0-d float arrays (bfloat16 has kind "V")
    return None


def format_cell(value: Any) -> str:
    """A compact string for a table cell: floats to 4 significant digits, None as ``-``.

    Floats of any kind (Python, NumPy scalars, 0-d JAX/NumPy arrays) are formatted alike;
    non-finite ones show as ``-``.

    Examples:
      >>> [format_cell(v) for v in (3.14159, None, True, float("nan"), "sgd")]
      ['3.142', '-', 'yes', '-', 'sgd']
    """
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    real = _real(value)
    if real is not None:
        if not math.isfinite(real):
            return "-"
        return f"{real:.4g}"
    if isinstance(value, tuple) and hasattr(value, "stderr"):  # a Measurement
        value = {"value": value.value, "stderr": value.stderr, "unit": value.unit}
    if isinstance(value, Mapping) and "value" in value:
        return format_measurement(value.get("value"), value.get("stderr"), value.get("unit", ""))
    return str(value)


def format_measurement(value: float | None, stderr: float | None = None, unit: str = "") -> str:
    """``value ± stderr`` with the stderr to two significant digits and the value to match.

    Numbers too small for eight decimals are written with a shared power of ten. NumPy and
    0-d JAX numbers are accepted like Python floats.

    Examples:
      >>> format_measurement(29.3512, 0.25), format_measurement(48.0, 1.0, "%")
      ('29.35 ± 0.25', '48.0 ± 1.0%')
      >>> format_measurement(3.2e-9, 1.5e-10)
      '(3.20 ± 0.15)e-09'
    """
    if value is None or not math.isfinite(value := float(value)):
        return "-"
    if isinstance(stderr, bool) or stderr is None:
        stderr = None
    elif isinstance(stderr, numbers.Integral):
        stderr = float(stderr)
    else:
        stderr = _real(stderr)
    if stderr is None or not math.isfinite(stderr):
        return f"{format_cell(value)}{unit}"
    if stderr == 0:
        return f"{format_cell(value)} ± 0{unit}"
    decimals = max(0, 1 - math.floor(math.log10(abs(stderr))))
    if decimals <= 8:
        return f"{value:.{decimals}f} ± {stderr:.{decimals}f}{unit}"
    # Fixed point would round both to zero: scale by the larger magnitude's power of ten.
    exponent = math.floor(math.log10(max(abs(value), abs(stderr))))
    decimals = max(0, 1 - math.floor(math.log10(abs(stderr))) + exponent)
    if decimals > 8:  # the value is known far better than it is large: stderr on its own
        return f"{format_cell(value)} ± {stderr:.1e}{unit}"
    scale = 10.0**exponent
    return f"({value / scale:.{decimals}f} ± {stderr / scale:.{decimals}f})e{exponent:+03d}{unit}"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table (columns from the first row by default).

    Examples:
      >>> print(format_table([{"seed": 0, "loss": 0.25}, {"seed": 1, "loss": 0.5}]))
      seed  loss
      ----  ----
      0     0.25
      1     0.5
    """
    if not rows:
        return ""
    if columns is None:
        columns = list(rows[0])
        for r in rows[1:]:
            columns += [k for k in r if k not in columns]
    cells = [[format_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def summary_text(record: Mapping[str, Any]) -> str:
    """The text printed after a run: header, table, verdict, time, notes."""
    env = record.get("environment") or {}
    head = (
        f"{record.get('experiment')} (preset {record.get('preset')}, seed {record.get('seed')}) "
        f"on {env.get('backend', '?')} [{env.get('device_kind', '?')}] "
        f"in {format_cell(record.get('elapsed_s'))} s"
    )
    parts = [head, ""]
    table = format_table(record.get("summary") or [])
    if table:
        parts += [table, ""]
    verdict = record.get("verdict")
    if verdict:
        parts.append(f"Claim: {verdict['claim']}")
        parts.append(f"Verdict: {verdict['label']} - {verdict['evidence']}")
        parts.append("")
    for note in record.get("notes") or []:
        parts.append(f"Note: {note}")
    return "\n".join(parts).rstrip() + "\n"


def _html_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    for r in rows[1:]:
        columns += [k for k in r if k not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(format_cell(r.get(c)))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_rows(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v}
        for k, v in d.items()
    ]


_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border-bottom:1px solid #ddd;padding:.25rem .75rem;text-align:left;font-size:.9rem}
th{background:#f4f4f4}.verdict{padding:.75rem 1rem;border-radius:.4rem;margin:1rem 0}
.SUPPORTED{background:#e6f4ea}.NOT{background:#fce8e6}.UNDECIDED{background:#fef7e0}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}code{background:#f4f4f4;padding:0 .2rem}
"""


def to_html(record: Mapping[str, Any], out_dir: str | os.PathLike | None = None) -> str:
    """A self-contained HTML page for ``record``; figures are read from ``out_dir``."""
    esc = html.escape
    title = f"lljax · {record.get('experiment')} ({record.get('preset')})"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
    ]
    if record.get("description"):
        parts.append(f"<p>{esc(record['description'])}</p>")
    verdict = record.get("verdict")
    if verdict:
        cls = verdict["label"].split()[0]
        parts.append(
            f"<div class='verdict {cls}'><b>Claim.</b> {esc(verdict['claim'])}<br>"
            f"<b>Verdict: {esc(verdict['label'])}.</b> {esc(verdict['evidence'])}</div>"
        )
    elif record.get("claim"):
        parts.append(f"<p><b>Claim.</b> {esc(record['claim'])}</p>")
    if record.get("summary"):
        parts += ["<h2>Results</h2>", _html_table(record["summary"])]
    for name in record.get("figures") or []:
        path = Path(out_dir or ".") / name
        if path.suffix.lower() == ".png" and path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{esc(name)}</figcaption></figure>"
            )
    for note in record.get("notes") or []:
        parts.append(f"<p><i>Note:</i> {esc(note)}</p>")
    parts += ["<h2>Settings</h2>", _html_table(_kv_rows(record.get("settings") or {}))]
    env = record.get("environment") or {}
    run_info = {
        "seed": record.get("seed"),
        "seeds": record.get("seeds"),
        "started": record.get("started"),
        "elapsed_s": record.get("elapsed_s"),
        "command": record.get("command"),
        "backend": env.get("backend"),
        "device_kind": env.get("device_kind"),
        "num_devices": env.get("num_devices"),
        "x64": env.get("x64"),
        **(env.get("versions") or {}),
    }
    parts += [
        "<h2>Provenance</h2>",
        _html_table(_kv_rows(run_info)),
        "<p>Full record: <code>results.json</code>.</p></body></html>",
    ]
    return "\n".join(parts)


def write_html(record: Mapping[str, Any], out_dir: str | os.PathLike) -> Path:
    """Writes ``report.html`` for ``record`` into ``out_dir`` and returns its path."""
    path = Path(out_dir) / "report.html"
    path.write_text(to_html(record, out_dir), encoding="utf-8")
    return path
