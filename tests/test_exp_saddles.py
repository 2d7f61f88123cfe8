"""Tests of the saddles experiment: its helpers against exact references, the verdict rule,
and a tiny run's record."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lljax as ll
from lljax.experiments import Measurement, measure, saddles


def test_num_params_matches_model():
    model = ll.models.mlp([4, 3, 1], activation="tanh")
    p = model.init(jax.random.key(0))
    assert saddles.num_params(4, 3) == sum(x.size for x in jax.tree.leaves(p))


def test_distinct_merges_symmetric_copies():
    loss = np.array([0.5, 0.1, 0.5 + 1e-12, 0.1, 0.3])
    index = np.array([2, 0, 2, 1, 1])
    # (0.5, 2) twice and (0.1, 0) once, (0.1, 1) differs by index.
    assert saddles.distinct(loss, index).tolist() == [0, 1, 3, 4]


def test_permuted_network_is_the_same_critical_point():
    # Permuting hidden units gives an equal loss and index: distinct() must merge them.
    model = ll.models.mlp([2, 3, 1], activation="tanh")
    loss_fn = ll.losses.mse(model)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    batch = (x, jnp.sin(x[:, :1]))
    p = model.init(jax.random.key(1))
    perm = jnp.array([2, 0, 1])
    q = {
        "Dense_0": {"kernel": p["Dense_0"]["kernel"][:, perm], "bias": p["Dense_0"]["bias"][perm]},
        "Dense_1": {"kernel": p["Dense_1"]["kernel"][perm], "bias": p["Dense_1"]["bias"]},
    }
    classify = jax.jit(lambda r: ll.critical.classify(loss_fn, r, batch))
    a, b = classify(p), classify(q)
    keep = saddles.distinct([a.loss, b.loss], [a.index, b.index], decimals=5)
    assert keep.tolist() == [0]


def test_gd_snapshots_match_a_python_loop(x64):
    model = ll.models.mlp([2, 2, 1], activation="tanh", dtype=jnp.float64)
    loss_fn = ll.losses.mse(model)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    batch = (x, x[:, :1] ** 2)
    p0 = ll.ensemble.init(model, key=jax.random.key(1), num_members=2)
    snaps = saddles._gd_snapshots(loss_fn, p0, batch, (0, 1, 3), 0.1)
    gd_step = jax.jit(
        lambda p: jax.tree.map(lambda a, b: a - 0.1 * b, p, jax.grad(loss_fn)(p, batch))
    )
    for m in range(2):
        p = jax.tree.map(lambda a: a[m], p0)
        ref = [p]
        for _ in range(3):
            p = gd_step(p)
            ref.append(p)
        for i, step in enumerate((0, 1, 3)):
            got = jax.tree.map(lambda a: a[i, m], snaps)
            for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(ref[step]), strict=True):
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)


def test_minima_fraction_per_seed():
    index = np.array([0, 1, 0, 0, 2, 0])
    conv = np.array([True, True, False, True, True, True])
    seed = np.array([0, 0, 0, 1, 1, 2])
    out = saddles.minima_fraction_per_seed(index, conv, seed, 4)
    np.testing.assert_allclose(out[:3], [0.5, 0.5, 1.0])
    assert math.isnan(out[3])


def _m(v, se):
    return Measurement(v, se, 5)


@pytest.mark.parametrize(
    "values, expected",
    [
        ([(0.7, 0.03), (0.3, 0.07), (0.0, 0.0)], "decreasing"),
        ([(0.0, 0.0), (0.3, 0.07), (0.7, 0.03)], "increasing"),
        ([(0.5, 0.2), (0.4, 0.2), (0.3, 0.2)], "flat"),  # within noise
    ],
)
def test_minima_trend(values, expected):
    trend, _ = saddles.minima_trend([_m(*v) for v in values], [7, 13, 19])
    assert trend == expected


def test_minima_trend_compares_smallest_and_largest_size_in_any_order():
    # The reviewer's example: widths listed (3, 2, 1) gave "flat", (2, 1, 3) compared 2 vs 3.
    fr = {1: measure([0.7, 0.6, 0.8, 0.7]), 2: measure([0.3, 0.2, 0.4, 0.3]),
          3: measure([0.0, 0.1, 0.0, 0.0])}  # fmt: skip
    for order in ((1, 2, 3), (3, 2, 1), (2, 1, 3), (3, 1, 2)):
        trend, tau = saddles.minima_trend(
            [fr[w] for w in order], [saddles.num_params(4, w) for w in order]
        )
        assert trend == "decreasing" and tau == pytest.approx(-1.0)


def test_minima_trend_uses_the_t_margin():
    # Difference 0.25 with combined s.e. 0.1 and 3 seeds each: above 2 s.e. (0.2), not above
    # the t₂ margin (4.30 × 0.1): flat. With 30 seeds each (t₂₉ = 2.05) it is decreasing.
    a, b = Measurement(0.3, 0.06, 3), Measurement(0.05, 0.08, 3)
    assert saddles.minima_trend([a, b], [7, 13])[0] == "flat"
    assert saddles.minima_trend([a._replace(n=30), b._replace(n=30)], [7, 13])[0] == "decreasing"
    # The degrees of freedom are those of the smaller sample (conservative Welch).
    assert saddles.minima_trend([a._replace(n=30), b], [7, 13])[0] == "flat"


def test_gd_stationary_and_resolve_trend():
    # 3 inits x snapshots (0, 100, 300) in the search's layout: init_seed tiled, step repeated.
    steps = np.repeat([0, 100, 300], 3)
    seeds = np.tile(np.arange(3), 3)
    loss = np.array([1.0, 1.0, 1.0, 0.5, 0.2, 0.3, 0.499, 0.1, 0.3])  # at 300: -0.2%, -50%, 0
    got = saddles.gd_stationary(loss, steps, seeds, 3)
    assert got.tolist() == [True, False, True]
    assert saddles.gd_stationary(loss, steps, seeds, 3, rtol=1.0).tolist() == [True] * 3
    # A rising loss is not stationary either; one snapshot step gives no GD interval.
    assert not saddles.gd_stationary([1.0, 1.5], [0, 10], [0, 0], 1)[0]
    assert saddles.gd_stationary([1.0, 1.0], [0, 0], [0, 1], 2).tolist() == [False, False]
    # The trend stands only when every width had stationary GD for most initialisations.
    assert saddles.resolve_trend("decreasing", {1: 1.0, 2: 0.75}) == ("decreasing", [])
    assert saddles.resolve_trend("decreasing", {1: 0.62, 2: 0.0, 3: 0.5}) == (
        "unresolved",
        [2, 3],
    )
    assert saddles.resolve_trend("flat", {1: math.nan}) == ("unresolved", [1])


def _corr(v, lo, hi):
    return ll.ensemble.RankCorrelation(v, lo, hi, 0.1, "kendall", 20, 0.95)


@pytest.mark.parametrize(
    "corr, trend, n, expected",
    [
        (_corr(0.5, 0.2, 0.8), "decreasing", 20, True),
        (_corr(0.5, 0.2, 0.8), "flat", 20, None),
        (_corr(0.3, -0.1, 0.6), "decreasing", 20, None),
        (_corr(-0.5, -0.8, -0.2), "decreasing", 20, False),
        (_corr(0.5, 0.2, 0.8), "increasing", 20, False),
        (_corr(0.5, 0.2, 0.8), "decreasing", 3, None),
        (_corr(0.5, 0.2, 0.8), "unresolved", 20, None),
        (_corr(-0.5, -0.8, -0.2), "unresolved", 20, False),
    ],
)
def test_verdict_rule(corr, trend, n, expected):
    v = saddles.verdict(corr, trend, n, trend_note="per-seed fractions 0.7, 0")
    assert v.supported is expected
    assert f"{corr.value:.3f}" in v.evidence
    assert f"{trend} (per-seed fractions 0.7, 0)" in v.evidence


def test_escape_saddle_choice():
    # Columns: λ_min ... λ_max. Rates γ/λ_max: 0.01, 0.5, 0.2, (min) 0.
    eig = np.array([[-0.01, 1.0], [-0.5, 1.0], [-0.2, 1.0], [0.1, 1.0]])
    index = np.array([1, 3, 2, 0])
    conv = np.array([True, True, True, True])
    assert saddles.escape_saddle(index, eig, conv, min_rate=0.1) == 2  # lowest fast index
    assert saddles.escape_saddle(index, eig, conv, min_rate=0.9) == 1  # fastest fallback
    assert saddles.escape_saddle(index, eig, conv & (index == 0), min_rate=0.1) is None


def test_predicted_mean_escape_of_perturbed_gd_closed_form():
    # Perturbed GD on a quadratic: |y_t| = a^t |y_0|, so τ = ceil(log(R/|y_0|)/log a); check
    # E[τ] from the CDF against Monte Carlo of that exact formula.
    law = dict(curvature=1.0, learning_rate=0.1, radius=1.0, initial_std=1e-3)
    y0 = np.abs(np.random.default_rng(0).normal(0, 1e-3, 200_000))
    tau = np.maximum(np.ceil(np.log(1.0 / y0) / np.log(1.1)), 0)
    pred = saddles.predicted_mean_escape(400, **law)
    assert abs(pred - tau.mean()) < 4 * tau.std() / np.sqrt(tau.size) + 0.05
    assert saddles.law_quantile(0.5, 400, **law) == int(np.ceil(np.median(tau)))


def test_escape_agreement_on_a_quadratic_saddle(x64):
    # Noisy GD on L = -γ/2 y²: the measured escape law matches the closed form.
    gamma, eta, sigma, radius = 1.0, 0.1, 1e-3, 0.1
    law = dict(curvature=gamma, learning_rate=eta, radius=radius, noise_std=sigma)

    def step(x, key):
        return x + eta * gamma * x + sigma * jax.random.normal(key, x.shape, x.dtype)

    keys = jax.random.split(jax.random.key(0), 400)
    times = np.asarray(
        ll.critical.escape_times(step, jnp.zeros(1), keys, num_steps=120, radius=radius)
    )
    ag = saddles.escape_agreement(times, 120, law)
    assert ag["escaped"] == 1.0
    assert ag["ks"] < 0.1
    assert abs(ag["mean"].value - ag["predicted_mean"]) < 4 * ag["mean"].stderr + 0.5


@pytest.mark.slow  # a whole (tiny) run; CI runs the slow experiment tests in their own step
def test_tiny_run_record():
    r = ll.experiments.run(
        "saddles",
        "quick",
        overrides=dict(
            widths=(1,),
            index_width=1,
            num_inits=4,
            snapshot_steps=(0, 30, 300),
            lm_steps=40,
            num_escape_seeds=8,
            escape_max_steps=200,
            num_bootstrap=50,
        ),
        write=False,
    )
    rec = r.record
    assert rec["verdict"]["label"] in {"SUPPORTED", "NOT SUPPORTED", "UNDECIDED"}
    assert [row["width"] for row in r.summary] == [1]
    assert set(rec["measurements"]["minima_fraction"]) == {"1"}
    cp = r.data["critical_points"][1]
    assert cp["loss"].shape == cp["index"].shape == (12,)
    assert set(r.figures) >= {"index_vs_loss", "minima_vs_size"}
    assert not jax.config.jax_enable_x64  # the experiment restores the setting
