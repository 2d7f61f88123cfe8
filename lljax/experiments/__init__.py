"""Experiments: plain functions registered by name, run by ``lljax run NAME``.

An experiment is a function ``fn(preset, seed, out_dir, **settings) -> Result`` registered
with :func:`register`. Its presets are named settings dicts (``quick`` finishes in minutes on
a 2-core CPU and is what the tests run; ``full`` is the publication-sized run); the framework
merges a preset with any overrides and passes the result as keyword arguments, so the same
function is called from the command line, from a notebook and from the tests.

:func:`run` times the call and writes into ``out_dir``: ``results.json`` (settings, seeds,
versions, device, measurements with uncertainties, the claim's verdict, elapsed time), one
PNG per figure, and a self-contained ``report.html``. Modules in this package are discovered
on first use: adding an experiment is adding a file that calls :func:`register`.

Examples:
  >>> import lljax as ll
  >>> "quickstart" in ll.experiments.names()
  True
  >>> m = ll.experiments.measure([0.9, 0.8, 1.0])
  >>> round(m.value, 6), round(m.stderr, 6), m.n
  (0.9, 0.057735, 3)
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import math
import os
import pkgutil
import platform
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "MIN_CLUSTERS",
    "Experiment",
    "Measurement",
    "Result",
    "Verdict",
    "all_of",
    "environment",
    "get",
    "measure",
    "names",
    "progress",
    "register",
    "resolve_settings",
    "run",
    "to_json",
]


#: Fewest clusters (seeds, parents, initialisations) a cluster bootstrap resamples. With
#: fewer, resamples repeat one cluster too often to describe their spread (with 3 there are
#: only 10 distinct resamples, and a ninth of them hold a single cluster), so the
#: experiments report no such interval, or one conditional on the clusters, and say so.
MIN_CLUSTERS = 5


class Measurement(NamedTuple):
    """A measured quantity with its uncertainty.

    Attributes:
      value: the estimate (mean over ``values`` when made by :func:`measure`).
      stderr: its standard error (``nan`` when unknown, e.g. a single seed).
      n: number of independent samples (seeds, chains, probes) behind it.
      values: the individual samples, if any.
      unit: unit of ``value`` (``"%"``, ``"s"``, ...), empty if none.
    """

    value: float
    stderr: float = math.nan
    n: int = 1
    values: tuple[float, ...] = ()
    unit: str = ""

    def __str__(self) -> str:
        from lljax.report import format_measurement

        return format_measurement(self.value, self.stderr, self.unit)

    def margin(self, level: float = 0.95) -> float:
        """Half-width of the two-sided ``level`` interval: Student's t(n − 1) quantile × stderr.

        Verdicts use this rather than 2 standard errors, which is anti-conservative for the
        few seeds experiments run: with 3 seeds P(|t₂| > 2) = 0.18, not 0.05. ``nan`` without
        a standard error (fewer than 2 samples), so every comparison with it is False.

        Examples:
          >>> round(measure([1.0, 2.0, 3.0]).margin(), 3)   # t₂(0.975) = 4.303, s.e. 0.577
          2.484
        """
        if not (self.n >= 2 and math.isfinite(self.stderr)):
            return math.nan
        from scipy.stats import t

        return float(t.ppf(0.5 + level / 2, self.n - 1) * self.stderr)


def measure(values: Sequence[float] | Any, *, unit: str = "") -> Measurement:
    """Mean and standard error (sample std with ``ddof=1`` over √n) of independent samples.

    Args:
      values: one number per independent repetition (e.g. per seed); non-empty.
      unit: recorded with the measurement.

    Raises:
      ValueError: if ``values`` is empty.
    """
    import numpy as np

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("values: expected at least one sample, got none")
    stderr = float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return Measurement(float(v.mean()), stderr, int(v.size), tuple(float(x) for x in v), unit)


class Verdict(NamedTuple):
    """Whether a measurement supports a claim.

    Attributes:
      claim: the statement tested, in one sentence.
      supported: ``True``/``False``, or ``None`` when the run cannot decide (e.g. too few
        steps on a quick preset).
      evidence: the numbers and rule behind the decision, in one or two sentences.
    """

    claim: str
    supported: bool | None
    evidence: str

    @property
    def label(self) -> str:
        return {True: "SUPPORTED", False: "NOT SUPPORTED", None: "UNDECIDED"}[self.supported]


def all_of(parts) -> bool | None:
    """Three-valued "and" of a claim's parts: ``False`` if any part is refuted, ``True`` if
    every part is supported, else ``None`` (undecided).

    Examples:
      >>> all_of([True, None]), all_of([True, False, None]), all_of([True, True])
      (None, False, True)
    """
    parts = [None if p is None else bool(p) for p in parts]  # numpy bools too
    if False in parts:
        return False
    return None if None in parts else True


@dataclasses.dataclass
class Result:
    """What an experiment returns; :func:`run` adds provenance and writes it out.

    Attributes:
      summary: rows (dicts with the same keys) of the table printed after a run.
      measurements: named :class:`Measurement` s, numbers or nested dicts of them.
      verdict: the claim's :class:`Verdict`, if the experiment tests one.
      figures: name -> matplotlib figure, a zero-argument callable returning one (called
        only when matplotlib is installed), or a path of an image already written.
      settings: extra settings worth recording (optimizer, architecture, ...); the preset's
        settings are recorded by :func:`run` anyway.
      seeds: the seeds actually used.
      data: extra arrays (curves, histories) stored under ``"data"`` in ``results.json``.
      notes: free-text remarks (deviations from a paper's protocol, skipped parts).
      record: filled by :func:`run`: the dict written to ``results.json``.
      out_dir: filled by :func:`run`: the folder written to.
    """

    summary: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    measurements: dict[str, Any] = dataclasses.field(default_factory=dict)
    verdict: Verdict | None = None
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=list)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    record: dict[str, Any] | None = None
    out_dir: Path | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: the name ``lljax run`` takes.
      fn: ``fn(preset, seed, out_dir, **settings) -> Result | dict``.
      description: one line shown by ``lljax list``.
      presets: preset name -> settings dict passed to ``fn`` as keyword arguments.
      preset_notes: preset name -> one line (what it runs, expected time).
      claim: the claim tested, if any (repeated in the report).
    """

    name: str
    fn: Callable[..., Any]
    description: str
    presets: Mapping[str, Mapping[str, Any]]
    preset_notes: Mapping[str, str]
    claim: str | None = None


_REGISTRY: dict[str, Experiment] = {}
_DISCOVERY_ERRORS: dict[str, str] = {}
_DISCOVERED = False


def register(
    name: str,
    *,
    description: str,
    presets: Mapping[str, Mapping[str, Any]] | Sequence[str] = ("quick", "full"),
    preset_notes: Mapping[str, str] | None = None,
    claim: str | None = None,
) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(preset, seed, out_dir, **settings)`` as experiment ``name``.

    Args:
      name: a short identifier (letters, digits, ``_``, ``-``).
      description: one line for ``lljax list``.
      presets: preset name -> settings dict (keyword arguments of ``fn``), or a sequence of
        preset names when ``fn`` reads only ``preset``. Must include ``"quick"``.
      preset_notes: preset name -> one line such as ``"~2 min on a 2-core CPU"``.
      claim: the claim the experiment tests, in one sentence.

    Returns:
      The decorator; it returns ``fn`` unchanged.

    Raises:
      ValueError: on a bad name, a duplicate name, or presets without ``"quick"``.
    """
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"name: expected letters, digits, '_' or '-', got {name!r}")
    if isinstance(presets, Mapping):
        table = {str(k): dict(v) for k, v in presets.items()}
    else:
        table = {str(k): {} for k in presets}
    if "quick" not in table:
        raise ValueError(f"presets: experiment {name!r} must define a 'quick' preset")

    def decorator(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"name: experiment {name!r} is already registered by {old.fn}")
        _REGISTRY[name] = Experiment(name, fn, description, table, dict(preset_notes or {}), claim)
        return fn

    return decorator


def _discover() -> None:
    """Imports every public module of this package once, so their decorators register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # noqa: BLE001 - one broken experiment must not hide the rest
            _DISCOVERY_ERRORS[info.name] = f"{type(e).__name__}: {e}"


def names() -> list[str]:
    """Sorted names of the registered experiments."""
    _discover()
    return sorted(_REGISTRY)


def experiments() -> list[Experiment]:
    """The registered :class:`Experiment` s, sorted by name."""
    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def discovery_errors() -> dict[str, str]:
    """Modules of this package that failed to import (module name -> error)."""
    _discover()
    return dict(_DISCOVERY_ERRORS)


def get(name: str) -> Experiment:
    """The :class:`Experiment` called ``name``.

    Raises:
      ValueError: if no experiment has that name (the message lists the known ones).
    """
    _discover()
    if name not in _REGISTRY:
        hint = ""
        if name in _DISCOVERY_ERRORS:
            hint = f" (its module failed to import: {_DISCOVERY_ERRORS[name]})"
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"name: unknown experiment {name!r}{hint}; available: {known}")
    return _REGISTRY[name]


def resolve_settings(
    name: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings ``fn`` receives: preset ``preset`` of ``name`` updated by ``overrides``.

    Raises:
      ValueError: for an unknown preset or an override naming no setting of the preset.
    """
    exp = get(name)
    if preset not in exp.presets:
        raise ValueError(
            f"preset: experiment {name!r} has no preset {preset!r}; "
            f"expected one of {', '.join(exp.presets)}"
        )
    settings = dict(exp.presets[preset])
    for key, value in (overrides or {}).items():
        if key not in settings:
            known = ", ".join(settings) or "none"
            raise ValueError(
                f"overrides: {key!r} is not a setting of {name!r} (preset {preset!r} has: {known})"
            )
        settings[key] = value
    return settings


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, backend and devices: the provenance recorded with every result."""
    import jax

    import lljax

    versions = {"python": platform.python_version(), "lljax": lljax.__version__}
    for dist in ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "mnist1d", "matplotlib"):
        versions[dist] = _version(dist)
    devices = jax.devices()
    return {
        "versions": versions,
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "devices": [str(d) for d in devices],
        "num_devices": len(devices),
        "x64": bool(jax.config.jax_enable_x64),
    }


def to_json(obj: Any) -> Any:
    """Converts measurements, NamedTuples, dataclasses and arrays to JSON-ready values.

    Non-finite floats become ``None`` (JSON has no NaN).
    """
    import numpy as np

    if isinstance(obj, Measurement):
        d = {"value": obj.value, "stderr": obj.stderr, "n": obj.n}
        if obj.values:
            d["values"] = list(obj.values)
        if obj.unit:
            d["unit"] = obj.unit
        return to_json(d)
    if isinstance(obj, Verdict):
        return {
            "claim": obj.claim,
            "supported": obj.supported,
            "label": obj.label,
            "evidence": obj.evidence,
        }
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_json({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return to_json(obj._asdict())
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if hasattr(obj, "__array__") and hasattr(obj, "dtype"):
        import jax

        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            return to_json(jax.random.key_data(obj))  # keys as their raw uint32 data
        return to_json(np.asarray(obj).tolist())
    if obj is None or isinstance(obj, str):
        return obj
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return repr(obj)


def progress(items: Sequence[Any], label: str = "", *, enabled: bool = True):
    """Yields ``items``, printing ``label [i/n] item (elapsed)`` to stderr before each.

    For experiments that loop over configurations on the host (training runs show their
    own bar from :func:`lljax.train.fit`).

    Examples:
      >>> [x for x in progress([1, 2], "demo", enabled=False)]
      [1, 2]
    """
    import sys

    items = list(items)
    t0 = time.perf_counter()
    for i, item in enumerate(items):
        if enabled:
            print(
                f"{label} [{i + 1}/{len(items)}] {item} ({time.perf_counter() - t0:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
        yield item


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"out_dir: cannot create {str(out_dir)!r}: {e.strerror or e}") from e
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"out_dir: {str(out_dir)!r} is not a writable folder")


def _save_figures(figures: Mapping[str, Any], out_dir: Path) -> tuple[list[str], list[str]]:
    from lljax import plot

    saved, notes = [], []
    for fig_name, fig in figures.items():
        if isinstance(fig, (str, Path)):
            saved.append(os.path.relpath(Path(fig), out_dir))
            continue
        if callable(fig) and not hasattr(fig, "savefig"):
            if not plot.available():
                notes.append(f"figure {fig_name!r} skipped: matplotlib is not installed")
                continue
            fig = fig()
        path = out_dir / f"{fig_name}.png"
        plot.save(fig, path)
        saved.append(path.name)
    return saved, notes


def run(
    name: str,
    preset: str = "quick",
    *,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    write: bool = True,
    command: str | None = None,
) -> Result:
    """Runs experiment ``name`` and writes ``results.json``, PNG figures and ``report.html``.

    Args:
      name: a registered experiment (see :func:`names`).
      preset: one of the experiment's presets (``"quick"``, ``"full"``, ...).
      seed: base seed; the experiment derives all its keys from it.
      out_dir: output folder, created if needed; default ``runs/<name>-<preset>``.
      overrides: settings replacing the preset's (keys must be settings of the preset).
      write: if false, nothing is written (figures are still made and returned).
      command: the command line that started the run, recorded as is.

    Returns:
      The experiment's :class:`Result` with ``record`` (the ``results.json`` content) and
      ``out_dir`` filled in.

    Raises:
      ValueError: unknown experiment or preset, bad override, or an unwritable ``out_dir``.
    """
    exp = get(name)
    settings = resolve_settings(name, preset, overrides)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"{name}-{preset}"
    if write:
        _check_writable(out)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    result = exp.fn(preset=preset, seed=seed, out_dir=out, **settings)
    elapsed = time.perf_counter() - t0
    if isinstance(result, Mapping):
        fields = {f.name for f in dataclasses.fields(Result)}
        extra = {k: v for k, v in result.items() if k not in fields}
        result = Result(**{k: v for k, v in result.items() if k in fields})
        result.measurements.update(extra)
    if not isinstance(result, Result):
        raise TypeError(f"experiment {name!r} returned {type(result).__name__}, not a Result")
    record = {
        "experiment": name,
        "description": exp.description,
        "claim": exp.claim,
        "preset": preset,
        "preset_note": exp.preset_notes.get(preset),
        "seed": seed,
        "seeds": list(result.seeds) or [seed],
        "settings": {**settings, **result.settings},
        "overrides": dict(overrides or {}),
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "environment": environment(),
        "measurements": result.measurements,
        "summary": result.summary,
        "verdict": result.verdict,
        "notes": list(result.notes),
        "figures": [],
        "data": result.data,
    }
    if write:
        figures, fig_notes = _save_figures(result.figures, out)
        record["figures"] = figures
        record["notes"] += fig_notes
        record = to_json(record)
        (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
        from lljax import report

        try:
            report.write_html(record, out)
        except Exception:  # noqa: BLE001 - a report bug must not lose the results
            (out / "report_error.log").write_text(traceback.format_exc())
    else:
        record = to_json(record)
    result.record = record
    result.out_dir = out
    return result
