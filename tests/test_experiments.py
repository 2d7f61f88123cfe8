import json
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lljax as ll
from lljax import experiments, report
from lljax.experiments import Measurement, Result, Verdict, measure, quickstart


@pytest.fixture
def registry(monkeypatch):
    """A registry copy: experiments registered by a test vanish afterwards."""
    experiments.names()  # discover the built-in ones first
    monkeypatch.setattr(experiments, "_REGISTRY", dict(experiments._REGISTRY))
    return experiments._REGISTRY


def _toy(registry):
    @experiments.register(
        "toy",
        description="a toy experiment",
        presets={"quick": {"n": 3, "scale": 1.0}, "full": {"n": 30, "scale": 1.0}},
        preset_notes={"quick": "instant"},
        claim="the mean of n uniforms is about 1/2",
    )
    def toy(preset, seed, out_dir, *, n, scale):
        u = np.asarray(jr.uniform(jr.key(seed), (n,))) * scale
        m = measure(u)
        return Result(
            summary=[{"quantity": "mean", "value": m}],
            measurements={"mean": m, "n": n},
            verdict=Verdict("mean near 1/2", abs(m.value - 0.5) < 0.5, f"mean {m}"),
            figures={"samples": lambda: _hist(u)},
            seeds=[seed],
            data={"u": u},
            notes=["toy"],
        )

    return toy


def _hist(u):
    from lljax import plot

    return plot.histogram({"u": u}, bins=5)


def test_measure_mean_and_standard_error():
    v = [1.0, 2.0, 4.0, 5.0]
    m = measure(v, unit="s")
    assert m.value == 3.0 and m.n == 4 and m.unit == "s" and m.values == tuple(v)
    assert math.isclose(m.stderr, np.std(v, ddof=1) / 2.0)
    single = measure([0.7])
    assert single.value == 0.7 and math.isnan(single.stderr)
    with pytest.raises(ValueError, match="values"):
        measure([])
    assert str(Measurement(48.0, 1.0, 2, unit="%")) == "48.0 ± 1.0%"


def test_register_validates(registry):
    with pytest.raises(ValueError, match="quick"):
        experiments.register("noquick", description="x", presets=("full",))
    with pytest.raises(ValueError, match="name"):
        experiments.register("bad name", description="x")
    _toy(registry)

    @experiments.register("other", description="x")
    def other(preset, seed, out_dir):
        return {}

    with pytest.raises(ValueError, match="already registered"):
        experiments.register("toy", description="dup")(other)
    assert "toy" in experiments.names() and "other" in experiments.names()


def test_get_and_resolve_settings(registry):
    _toy(registry)
    with pytest.raises(ValueError, match="unknown experiment 'nope'.*quickstart"):
        experiments.get("nope")
    assert experiments.resolve_settings("toy", "full") == {"n": 30, "scale": 1.0}
    assert experiments.resolve_settings("toy", "quick", {"n": 7})["n"] == 7
    with pytest.raises(ValueError, match="preset"):
        experiments.resolve_settings("toy", "huge")
    with pytest.raises(ValueError, match="'m' is not a setting"):
        experiments.resolve_settings("toy", "quick", {"m": 1})


def test_run_writes_results_figures_and_report(registry, tmp_path):
    _toy(registry)
    out = tmp_path / "toy-run"
    result = experiments.run("toy", "quick", seed=3, out_dir=out, overrides={"n": 5})
    record = json.loads((out / "results.json").read_text())
    assert record == result.record and result.out_dir == out
    assert record["experiment"] == "toy" and record["preset"] == "quick"
    assert record["seed"] == 3 and record["seeds"] == [3]
    assert record["settings"] == {"n": 5, "scale": 1.0} and record["overrides"] == {"n": 5}
    assert record["elapsed_s"] >= 0 and record["started"]
    env = record["environment"]
    assert env["versions"]["jax"] == jax.__version__ and env["versions"]["lljax"]
    assert env["backend"] == jax.default_backend() and env["num_devices"] == len(jax.devices())
    mean = record["measurements"]["mean"]
    u = np.asarray(jr.uniform(jr.key(3), (5,)))
    np.testing.assert_allclose(mean["value"], u.mean(), rtol=1e-6)
    np.testing.assert_allclose(mean["stderr"], u.std(ddof=1) / math.sqrt(5), rtol=1e-6)
    assert mean["n"] == 5 and len(mean["values"]) == 5
    assert record["verdict"]["supported"] is True and record["verdict"]["label"] == "SUPPORTED"
    assert record["figures"] == ["samples.png"]
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "SUPPORTED" in html and "mean near 1/2" in html
    text = report.summary_text(record)
    assert "toy (preset quick, seed 3)" in text and "Verdict: SUPPORTED" in text


def test_run_accepts_plain_dict_and_default_out_dir(registry, tmp_path, monkeypatch):
    @experiments.register("plain", description="returns a dict")
    def plain(preset, seed, out_dir):
        return {"answer": 42.0, "nan": float("nan")}

    monkeypatch.chdir(tmp_path)
    r = experiments.run("plain", "full")
    assert r.out_dir == tmp_path.joinpath("runs", "plain-full").relative_to(tmp_path)
    record = json.loads((tmp_path / "runs" / "plain-full" / "results.json").read_text())
    assert record["measurements"] == {"answer": 42.0, "nan": None}  # NaN is not JSON
    assert record["verdict"] is None


def test_run_rejects_bad_arguments(registry, tmp_path):
    _toy(registry)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="out_dir"):
        experiments.run("toy", out_dir=blocker / "sub")
    with pytest.raises(ValueError, match="preset"):
        experiments.run("toy", "medium", out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        experiments.run("toy", seed=1.5, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.run("nope")
    r = experiments.run("toy", out_dir=tmp_path / "nowrite", write=False)
    assert r.record["measurements"]["n"] == 3 and not (tmp_path / "nowrite").exists()


def test_to_json_handles_arrays_and_tuples():
    out = experiments.to_json(
        {"a": np.float32(1.5), "b": jax.numpy.arange(3), "c": (1, np.inf), "k": jr.key(0)}
    )
    assert out["a"] == 1.5 and out["b"] == [0, 1, 2] and out["c"] == [1, None]
    assert out["k"] == np.asarray(jr.key_data(jr.key(0))).tolist()
    json.dumps(out)


def test_environment_lists_versions_and_devices():
    env = experiments.environment()
    for k in ("python", "lljax", "jax", "jaxlib", "flax", "optax", "numpy"):
        assert env["versions"][k]
    assert env["devices"] and env["device_kind"]


def test_quickstart_models_match_paper_parameter_counts():
    # Parameter counts printed by the paper's code: 410, 15210, 5210.
    expected = {"logistic": 410, "mlp": 15210, "cnn": 5210}
    x = ll.data.mnist1d().x_test[:3]
    for name, count in expected.items():
        model = quickstart.build_model(name)
        params = model.init(jr.key(0))
        assert sum(p.size for p in jax.tree.leaves(params)) == count, name
        assert model.apply(params, x).shape == (3, 10)
    with pytest.raises(ValueError, match="baseline"):
        quickstart.build_model("resnet")


def test_torch_uniform_init_bounds():
    scheme = quickstart.torch_uniform()
    w = scheme.kernel(jr.key(0), (25, 4000))
    assert float(abs(w).max()) <= 1 / 5 and float(abs(w).max()) > 0.99 / 5
    np.testing.assert_allclose(float(w.var()), 1 / (3 * 25), rtol=0.05)
    assert float(abs(scheme.bias(jr.key(0), (7,))).max()) == 0.0


def _assert_torch_gru_variances(groups, hidden):
    bound, var = 1 / math.sqrt(hidden), 1 / (3 * hidden)
    for name, leaves in groups.items():
        w = np.concatenate([np.asarray(a).ravel() for a in leaves])
        # The sample variance of U(±b) has s.d. √(4/45) b² / √n: relative s.e. 0.894/√n.
        rel_se = math.sqrt(4 / 45) * bound**2 / var / math.sqrt(w.size)
        assert abs(w.var() / var - 1) < 5 * rel_se, (name, w.var(), var)
        # The largest |w| of n draws falls short of b by a fraction ~1/n: below 1 − 10/n
        # with probability (1 − 10/n)^n ≈ e^-10 at the right bound; a wrong bound fails.
        assert 1 - 10 / w.size < np.abs(w).max() / bound <= 1, name


def test_quickstart_gru_cells_start_like_torch_gru():
    # torch.nn.GRU draws every weight and bias from U(±1/√hidden): variance 1/(3 hidden).
    # flax's defaults (LeCun-normal input, orthogonal recurrent kernels, zero biases) gave
    # 18x, 3x and 0x that at 6 hidden units. Drawn here with the cell's own initialisers,
    # 2048 rows of 6 each (one compiled draw, reused); initialising the 40-step model takes
    # seconds (the slow test below checks the wiring).
    hidden = 6
    cell = quickstart.torch_gru_cell(hidden)
    inits = {
        "input kernels": cell.kernel_init,
        "recurrent kernels": cell.recurrent_kernel_init,
        "biases": cell.bias_init,
    }
    groups = {
        name: [init(jr.key(i), (2048, hidden), jnp.float32)]
        for i, (name, init) in enumerate(inits.items())
    }
    _assert_torch_gru_variances(groups, hidden)


@pytest.mark.slow  # initialises the 40-step bidirectional GRU (seconds of tracing)
def test_quickstart_gru_model_params_start_like_torch_gru():
    hidden = 64  # 384 input-kernel entries, 24576 recurrent, 512 biases
    params = quickstart.build_model("gru", gru_hidden=hidden).init(jr.key(0))
    cells = [params[k] for k in params if k.startswith("GRUCell")]
    assert len(cells) == 2  # the two directions
    groups = {
        "input kernels": [c[g]["kernel"] for c in cells for g in ("ir", "iz", "in")],
        "recurrent kernels": [c[g]["kernel"] for c in cells for g in ("hr", "hz", "hn")],
        "biases": [c[g]["bias"] for c in cells for g in ("ir", "iz", "in", "hn")],
    }
    _assert_torch_gru_variances(groups, hidden)


def test_quickstart_verdict_rule():
    acc = {"logistic": measure([32.0]), "mlp": measure([66.0]), "cnn": measure([93.0])}
    assert quickstart._verdict(acc, 5.0, 6000).supported is True
    off = dict(acc, mlp=measure([50.0]))
    assert quickstart._verdict(off, 5.0, 6000).supported is False
    assert quickstart._verdict(off, 5.0, 100).supported is None  # too short to judge
    swapped = dict(acc, logistic=measure([70.0]))
    v = quickstart._verdict(swapped, 50.0, 6000)
    assert v.supported is False and "violated" in v.evidence


def test_quickstart_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="baselines"):
        experiments.run("quickstart", out_dir=tmp_path, overrides={"baselines": ("svm",)})
    with pytest.raises(ValueError, match="num_seeds"):
        experiments.run("quickstart", out_dir=tmp_path, overrides={"num_seeds": 0})


def test_quickstart_population_matches_per_seed_fits():
    data = ll.data.mnist1d()
    model = quickstart.build_model("logistic")
    opt = quickstart.paper_optimizer()
    kw = dict(steps=12, eval_every=6, optimizer=opt, progress=False)
    pop = quickstart.train_population(model, data, seeds=[0, 1], **kw)
    for seed, member in zip([0, 1], pop, strict=True):
        single = quickstart.train_baseline(model, data, seed=seed, **kw)
        np.testing.assert_array_equal(member["eval_step"], single["eval_step"])
        np.testing.assert_allclose(member["test_loss"], single["test_loss"], rtol=1e-4)
        np.testing.assert_allclose(member["test_accuracy"], single["test_accuracy"], atol=0.21)
    assert not np.allclose(pop[0]["test_loss"][1:], pop[1]["test_loss"][1:])
