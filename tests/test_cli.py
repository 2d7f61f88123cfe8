import json
import os
import shlex
import subprocess
import sys

import jax
import pytest

from lljax import cli, experiments
from lljax.experiments import Result


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    for name in ("lljax:", "jax:", "jaxlib:", "flax:", "optax:", "backend:", "devices:"):
        assert name in out
    assert jax.__version__ in out and jax.default_backend() in out
    code, out, _ = run_cli(capsys, "info", "--json")
    env = json.loads(out)
    assert code == 0 and env["versions"]["jax"] == jax.__version__
    assert env["num_devices"] == len(jax.devices())


def test_list(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("quickstart"))
    assert "MNIST-1D" in line
    code, out, _ = run_cli(capsys, "list", "-v")
    assert code == 0 and "--preset quick" in out and "--preset full" in out and "steps = " in out
    code, out, _ = run_cli(capsys, "list", "--names")
    assert code == 0 and "quickstart" in out.split() and "MNIST-1D" not in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "nope"], "unknown experiment 'nope'"),
        (["run", "quickstart", "--preset", "huge"], "no preset 'huge'"),
        (["run", "quickstart", "--seed", "abc"], "invalid int value"),
        (["run", "quickstart", "--set", "stepz=3"], "'stepz' is not a setting"),
        (["run", "quickstart", "--set", "steps"], "expected KEY=VALUE"),
        (["run", "quickstart", "--set", "steps=many"], "expected int"),
        (["run"], "required: name"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, tmp_path, argv, fragment):
    code, out, err = run_cli(
        capsys, *argv, *(["--out", str(tmp_path)] if argv[:1] == ["run"] and len(argv) > 1 else [])
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lljax: error:") and fragment in lines[0]
    assert "Traceback" not in err + out


def test_unwritable_out_dir_exit_2(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "run", "quickstart", "--out", str(blocker / "sub"))
    assert code == 2 and "out_dir" in err and len(err.strip().splitlines()) == 1


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: lljax" in out
    assert run_cli(capsys, "--help")[0] == 0


def test_parse_value_and_coerce():
    assert cli.parse_value("true") is True and cli.parse_value("None") is None
    assert cli.parse_value("(1, 2)") == (1, 2) and cli.parse_value("a,b") == "a,b"
    assert cli._coerce("steps", 1e3, 10) == 1000 and cli._coerce("lr", 1, 0.1) == 1.0
    assert cli._coerce("models", "a, b", ("x",)) == ("a", "b")
    with pytest.raises(cli.UsageError, match="expected true or false"):
        cli._coerce("flag", 1, True)


def test_failed_experiment_exits_1_and_keeps_traceback(capsys, tmp_path, monkeypatch):
    experiments.names()
    monkeypatch.setattr(experiments, "_REGISTRY", dict(experiments._REGISTRY))

    @experiments.register("broken", description="always fails")
    def broken(preset, seed, out_dir):
        raise FloatingPointError("loss is nan at step 7\nmore detail")

    code, _, err = run_cli(capsys, "run", "broken", "--out", str(tmp_path))
    assert code == 1
    assert "failed: FloatingPointError: loss is nan at step 7;" in err and "Traceback" not in err
    assert "Traceback" in (tmp_path / "error.log").read_text()


def test_run_prints_summary_and_writes_folder(capsys, tmp_path, monkeypatch):
    experiments.names()
    monkeypatch.setattr(experiments, "_REGISTRY", dict(experiments._REGISTRY))

    @experiments.register("tiny", description="instant", presets={"quick": {"x": 2}})
    def tiny(preset, seed, out_dir, *, x):
        return Result(summary=[{"name": "x squared", "value": float(x * x)}], seeds=[seed])

    code, out, _ = run_cli(
        capsys, "run", "tiny", "--out", str(tmp_path), "--set", "x=3", "--seed", "5"
    )
    assert code == 0
    assert "x squared  9" in out and str(tmp_path) in out
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["settings"] == {"x": 3} and record["seed"] == 5
    assert record["command"].startswith("lljax run tiny --preset quick --seed 5")


def test_run_quickstart_end_to_end(capsys, tmp_path):
    # The quick preset itself takes minutes; the same code path on a few steps.
    out_dir = tmp_path / "qs"
    code, out, err = run_cli(
        capsys,
        "run",
        "quickstart",
        "--out",
        str(out_dir),
        "--seed",
        "1",
        "--set",
        "steps=30",
        "--set",
        "eval_every=10",
        "--set",
        "baselines=logistic,mlp",
    )
    assert code == 0, err
    assert "logistic" in out and "mlp" in out and "published" in out and "Verdict:" in out
    record = json.loads((out_dir / "results.json").read_text())
    assert record["preset"] == "quick" and record["seeds"] == [1]
    assert record["settings"]["steps"] == 30 and record["settings"]["baselines"] == [
        "logistic",
        "mlp",
    ]
    assert record["settings"]["learning_rate"] == 1e-2 and record["settings"]["batch_size"] == 100
    acc = record["measurements"]["test_accuracy"]
    assert set(acc) == {"logistic", "mlp"}
    for m in acc.values():
        assert 0 <= m["value"] <= 100 and m["n"] == 1
    curves = record["data"]["curves"]["mlp"]
    assert curves["eval_step"] == [0, 10, 20, 30]
    # Better than chance (10%) after 30 Adam steps.
    assert acc["mlp"]["value"] > 20
    assert record["verdict"]["label"] == "UNDECIDED"  # 30 steps cannot decide the claim
    assert set(record["figures"]) == {"test_accuracy.png", "accuracy_vs_published.png"}
    for name in record["figures"] + ["report.html"]:
        assert (out_dir / name).stat().st_size > 1000


def test_python_dash_m_lljax(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "lljax", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "quickstart" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "lljax", "run", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_coerce_list_items():
    # Items of a list setting are checked like scalar settings, not passed on as strings.
    with pytest.raises(cli.UsageError, match="widths: expected int items"):
        cli._coerce("widths", "64,x", (64, 256))
    with pytest.raises(cli.UsageError, match="widths: expected int items"):
        cli._coerce("widths", (64.5, 128), (64, 256))
    assert cli._coerce("widths", "64,128", (64, 256)) == (64, 128)
    assert cli._coerce("widths", 128, (64, 256)) == (128,)
    assert cli._coerce("lrs", [1, 0.5], [0.1]) == [1.0, 0.5]
    assert cli._coerce("norms", "none,batch", ("none", "batch")) == ("none", "batch")
    assert cli._coerce("sigma", "1,critical", (0.5, "critical")) == (1.0, "critical")


def test_bad_list_item_exits_2_before_running(capsys, tmp_path, monkeypatch):
    ran = []
    _register_tiny(
        monkeypatch,
        fn=lambda preset, seed, out_dir, **settings: ran.append(settings),
        presets={"quick": {"widths": (64, 256), "learning_rates": (0.01, 0.02)}},
    )
    for item, fragment in [
        ("widths=64,x", "widths: expected int items like (64, 256), got 'x'"),
        ("learning_rates=0.01,fast", "learning_rates: expected float items"),
    ]:
        code, _, err = run_cli(capsys, "run", "tiny", "--out", str(tmp_path), "--set", item)
        assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert ran == []


def _register_tiny(monkeypatch, fn=None, presets=None):
    experiments.names()
    monkeypatch.setattr(experiments, "_REGISTRY", dict(experiments._REGISTRY))

    def tiny(preset, seed, out_dir, **settings):
        return Result(summary=[{"name": "seed", "value": seed}], seeds=[seed])

    experiments.register("tiny", description="instant", presets=presets or {"quick": {}})(
        fn or tiny
    )


def test_recorded_command_reruns_in_a_shell(capsys, tmp_path, monkeypatch):
    _register_tiny(monkeypatch, presets={"quick": {"hidden": (4, 4)}})
    out_dir = tmp_path / "my runs"
    code, _, err = run_cli(capsys, "run", "tiny", "--out", str(out_dir), "--set", "hidden=(8, 8)")
    assert code == 0, err
    record = json.loads((out_dir / "results.json").read_text())
    assert record["settings"]["hidden"] == [8, 8]
    argv = shlex.split(record["command"])
    assert argv[:2] == ["lljax", "run"]
    args = cli.build_parser().parse_args(argv[1:])
    assert (args.name, args.out, args.overrides) == ("tiny", str(out_dir), ["hidden=(8, 8)"])


def test_experiment_calling_sys_exit_is_a_failure(capsys, tmp_path, monkeypatch):
    def exits(preset, seed, out_dir):
        sys.exit("cannot continue")

    _register_tiny(monkeypatch, fn=exits)
    code, _, err = run_cli(capsys, "run", "tiny", "--out", str(tmp_path))
    assert code == 1
    assert "failed: SystemExit: cannot continue" in err
    assert "Traceback" in (tmp_path / "error.log").read_text()
    assert not (tmp_path / "results.json").exists()


def test_successful_run_removes_a_stale_error_log(capsys, tmp_path, monkeypatch):
    _register_tiny(monkeypatch)
    (tmp_path / "error.log").write_text("Traceback of an earlier failed run\n")
    code, _, err = run_cli(capsys, "run", "tiny", "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "results.json").exists() and not (tmp_path / "error.log").exists()


def test_version(capsys):
    from lljax import __version__

    code, out, err = run_cli(capsys, "--version")
    assert code == 0 and out == f"lljax {__version__}\n" and err == ""


def test_non_finite_float_settings(capsys, tmp_path, monkeypatch):
    # literal_eval refuses "inf": `--set tolerance=inf` was "expected float like 5.0".
    assert cli.parse_value("inf") == float("inf") and cli.parse_value("-Inf") == float("-inf")
    assert cli.parse_value(" nan ") != cli.parse_value("nan")  # a NaN float
    ran = []
    _register_tiny(
        monkeypatch,
        fn=lambda preset, seed, out_dir, **settings: ran.append(settings) or Result(seeds=[seed]),
        presets={"quick": {"tol": 5.0, "lo": 0.0, "tols": (1.0, 2.0), "label": "x", "n": 3}},
    )
    sets = ["tol=inf", "lo=-inf", "tols=1,nan", "label=nan"]
    argv = ["run", "tiny", "--out", str(tmp_path), *(p for s in sets for p in ("--set", s))]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    [got] = ran
    assert got["tol"] == float("inf") and got["lo"] == float("-inf")
    assert got["tols"][0] == 1.0 and got["tols"][1] != got["tols"][1]
    assert got["label"] == "nan"  # a string setting keeps the word
    code, _, err = run_cli(capsys, "run", "tiny", "--out", str(tmp_path), "--set", "n=inf")
    assert code == 2 and "--set n: expected int like 3, got 'inf'" in err


def test_setting_the_experiment_rejects_is_a_failed_run(capsys, tmp_path, monkeypatch):
    # As the module docstring says: a well-typed value the experiment itself refuses
    # (quickstart's baselines=foo) surfaces when it starts: exit 1, traceback in error.log.
    def picky(preset, seed, out_dir, *, models):
        raise ValueError(f"models: unknown {models!r}")

    _register_tiny(monkeypatch, fn=picky, presets={"quick": {"models": ("a",)}})
    code, _, err = run_cli(capsys, "run", "tiny", "--out", str(tmp_path), "--set", "models=foo")
    assert code == 1 and "failed: ValueError: models: unknown ('foo',)" in err
    assert "Traceback" in (tmp_path / "error.log").read_text()
    doc = " ".join(cli.__doc__.split())
    assert "``--set baselines=foo`` for ``quickstart`` raises ValueError" in doc
