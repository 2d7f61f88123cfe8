"""The ``lljax`` command: ``info``, ``list`` and ``run`` experiments; ``lljax --version``.

``lljax run NAME [--preset quick|full] [--out DIR] [--seed N] [--set KEY=VALUE ...]`` runs a
registered experiment (see :mod:`lljax.experiments`), writes ``results.json``, PNG figures
and ``report.html`` into the output folder (default ``runs/NAME-PRESET``), then prints a
summary table and the folder.

Bad arguments (an unknown command, experiment, preset or setting, a ``--set`` value of the
wrong type, an unwritable output folder) print one line and exit with status 2 before
anything is written. A failed experiment prints one line, keeps its traceback in
``error.log`` in the output folder and exits with status 1. That includes a ``--set`` value
of the right type that the experiment itself rejects (``--set baselines=foo`` for
``quickstart`` raises ValueError when the experiment starts): experiments have no separate
validation step the command could run before creating the folder.

Examples:
  >>> from lljax import cli
  >>> cli.parse_value("300"), cli.parse_value("1e-2"), cli.parse_value("[64, 64]")
  (300, 0.01, [64, 64])
  >>> cli.parse_value("relu"), cli.parse_value("-inf")
  ('relu', -inf)
"""

from __future__ import annotations

import argparse
import ast
import math
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "parse_value"]


class UsageError(Exception):
    """A bad command-line argument: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the full usage and exits itself; we want one line and a return code.
    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# Python's spellings of the non-finite floats (float() accepts them, literal_eval does not).
_NON_FINITE = frozenset(
    sign + word for sign in ("", "+", "-") for word in ("inf", "infinity", "nan")
)


def parse_value(text: str) -> Any:
    """A ``--set`` value: a Python literal (number, bool, list, ...) or else the bare string.

    ``inf``, ``-inf`` and ``nan`` (any case, as :func:`float` spells them) are floats, for
    float settings (``--set tolerance=inf``); a string setting given one of these words
    keeps the word.
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if lowered in _NON_FINITE:
        return float(lowered)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Matches an override to the preset default's type (``steps=1e3`` -> 1000).

    For a list/tuple setting, ``a,b`` and a single value are accepted too, and each item
    must be like the default's items (``widths=64,x`` is refused for ``widths=(64, 256)``).
    """
    if default is None or value is None:
        return value
    if isinstance(default, (list, tuple)):
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:  # one value for a list setting: widths=128 -> (128,)
            items = [value]
        return type(default)(_coerce_item(key, item, default) for item in items)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UsageError(f"--set {key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise UsageError(
            f"--set {key}: expected {type(default).__name__} like {default!r}, got {value!r}"
        )
    return value


def _coerce_item(key: str, item: Any, default: Sequence[Any]) -> Any:
    """One item of a list/tuple override, matched to the kinds of the default's items."""
    examples = list({type(d): d for d in default if d is not None}.values())
    if not examples:
        return item
    # "64" from "64,128" is parsed (-> 64), but a string item stays available for string
    # lists ("none" in norms=none,batch must not become None).
    candidates = [parse_value(item), item] if isinstance(item, str) else [item]
    for candidate in candidates:
        if candidate is None:
            continue
        for example in examples:
            try:
                return _coerce(key, candidate, example)
            except UsageError:
                pass
    kinds = " or ".join(dict.fromkeys(type(d).__name__ for d in examples))
    raise UsageError(f"--set {key}: expected {kinds} items like {tuple(default)!r}, got {item!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lljax`` command."""
    from lljax import __version__

    parser = _Parser(
        prog="lljax",
        description="lljax: the science of deep-learning loss landscapes in JAX.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lljax {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="{info,list,run}", parser_class=_Parser)
    p_info = sub.add_parser("info", help="versions, backend and devices")
    p_info.add_argument("--json", action="store_true", help="print as JSON")
    p_list = sub.add_parser("list", help="registered experiments")
    p_list.add_argument(
        "-v", "--verbose", action="store_true", help="also show presets and their settings"
    )
    p_list.add_argument("--names", action="store_true", help="print only the names, one per line")
    p_run = sub.add_parser("run", help="run an experiment and write its results")
    p_run.add_argument("name", help="experiment name (see 'lljax list')")
    p_run.add_argument(
        "--preset",
        default="quick",
        help="settings preset: quick (minutes on a CPU, default) or full",
    )
    p_run.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default runs/NAME-PRESET)"
    )
    p_run.add_argument("--seed", default=0, type=int, metavar="N", help="base seed (default 0)")
    p_run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one preset setting (repeatable)",
    )
    p_run.add_argument(
        "--traceback",
        action="store_true",
        help="on failure, show the full traceback instead of one line",
    )
    return parser


def _cmd_info(args) -> int:
    import json

    from lljax import experiments

    env = experiments.environment()
    if args.json:
        print(json.dumps(env, indent=1))
        return 0
    width = max(len(k) for k in env["versions"]) + 1
    for k, v in env["versions"].items():
        print(f"{k + ':':<{width}} {v or 'not installed'}")
    print(f"{'backend:':<{width}} {env['backend']}")
    print(f"{'devices:':<{width}} {env['num_devices']} x {env['device_kind']}")
    for d in env["devices"]:
        print(f"{'':<{width}}   {d}")
    print(f"{'x64:':<{width}} {env['x64']}")
    return 0


def _cmd_list(args) -> int:
    from lljax import experiments

    exps = experiments.experiments()
    if args.names:
        print("\n".join(e.name for e in exps))
        return 0 if exps else 1
    width = max((len(e.name) for e in exps), default=0)
    for e in exps:
        print(f"{e.name:<{width}}  {e.description}")
        if args.verbose:
            for preset, settings in e.presets.items():
                note = e.preset_notes.get(preset, "")
                print(f"{'':<{width}}    --preset {preset}: {note}")
                for k, v in settings.items():
                    print(f"{'':<{width}}        {k} = {v!r}")
    for module, err in experiments.discovery_errors().items():
        print(f"(experiments module {module!r} failed to import: {err})", file=sys.stderr)
    if not exps:
        print("no experiments registered")
    return 0


def _parse_overrides(name: str, preset: str, items: Sequence[str]) -> dict[str, Any]:
    from lljax import experiments

    try:
        defaults = experiments.resolve_settings(name, preset)
    except ValueError as e:
        raise UsageError(str(e)) from None
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set: expected KEY=VALUE, got {item!r}")
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise UsageError(f"--set: {key!r} is not a setting of {name!r} (settings: {known})")
        value = parse_value(text)
        non_finite = isinstance(value, float) and not math.isfinite(value)
        if non_finite and isinstance(defaults[key], (str, int)):
            value = text.strip()  # "nan" for a string setting is the word; an int refuses it
        overrides[key] = _coerce(key, value, defaults[key])
    return overrides


def _cmd_run(args) -> int:
    from lljax import experiments, report

    try:
        experiments.get(args.name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    overrides = _parse_overrides(args.name, args.preset, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / f"{args.name}-{args.preset}"
    try:
        experiments._check_writable(out)
    except ValueError as e:
        raise UsageError(str(e)) from None
    # Quoted for a POSIX shell, so the recorded command can be pasted to rerun the experiment.
    command = shlex.join(
        [
            "lljax",
            "run",
            args.name,
            "--preset",
            args.preset,
            "--seed",
            str(args.seed),
            "--out",
            str(out),
            *(part for o in args.overrides for part in ("--set", o)),
        ]
    )
    print(f"lljax run {args.name} --preset {args.preset} --seed {args.seed} -> {out}/", flush=True)
    try:
        result = experiments.run(
            args.name,
            args.preset,
            seed=args.seed,
            out_dir=out,
            overrides=overrides,
            command=command,
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (Exception, SystemExit) as e:  # noqa: BLE001 - one line; the traceback to a file
        # SystemExit too: an experiment that calls sys.exit() has not produced results.
        if args.traceback:
            raise
        log = out / "error.log"
        try:
            log.write_text(traceback.format_exc())
            where = f"; traceback in {log}"
        except OSError:
            where = ""
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"lljax run {args.name}: failed: {type(e).__name__}: {msg}{where}", file=sys.stderr)
        return 1
    try:
        (out / "error.log").unlink(missing_ok=True)  # a failed earlier run's, now misleading
    except OSError:
        pass
    print()
    print(report.summary_text(result.record), end="")
    figures = result.record.get("figures") or []
    print(
        f"\nWrote {out}/: results.json, report.html"
        + (f", {', '.join(figures)}" if figures else "")
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``lljax`` command with ``argv`` (default ``sys.argv[1:]``); returns the status.

    Status 0 on success (``--help`` and ``--version`` included), 1 when an experiment fails
    (also when it rejects a ``--set`` value itself, see the module docstring), 2 on bad
    arguments, 130 on Ctrl-C.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help()
            return 2
        handler = {"info": _cmd_info, "list": _cmd_list, "run": _cmd_run}[args.command]
        return handler(args)
    except UsageError as e:
        print(f"lljax: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help and --version exit through argparse
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)  # sys.exit("message") means failure, as in Python
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
