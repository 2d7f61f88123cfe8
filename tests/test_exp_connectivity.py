import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lljax as ll
from lljax.experiments import connectivity as conn


def test_masked_sgd_stops_after_budget():
    # Constant gradient g: after n steps of budget b the params are p0 − lr·g·min(n, b).
    opt = conn.masked_sgd(0.1, 3)
    p = jnp.array([1.0, -2.0])
    g = jnp.array([0.5, 1.0])
    state = opt.init(p)
    for _ in range(6):
        u, state = opt.update(g, state)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(p, jnp.array([1.0, -2.0]) - 0.1 * 3 * g, rtol=1e-6)


def test_masked_sgd_per_member_budgets_under_vmap():
    # GD on ½‖p − c‖² with rate η: p_n = c + (1 − η)^n (p_0 − c), frozen after the budget;
    # budgets and rates are traced per-member values, as in the experiment's population.
    c, p0 = jnp.array([1.0, -1.0]), jnp.array([3.0, 2.0])
    budgets, rates = jnp.array([0, 3, 7, 20]), jnp.array([0.1, 0.2, 0.3, 0.1])

    def run(lr, budget):
        opt = conn.masked_sgd(lr, budget)

        def body(_, carry):
            p, s = carry
            u, s = opt.update(p - c, s)
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 10, body, (p0, opt.init(p0)))[0]

    got = jax.jit(jax.vmap(run))(rates, budgets)
    n = np.minimum(np.asarray(budgets), 10)[:, None]
    want = np.asarray(c) + (1 - np.asarray(rates))[:, None] ** n * np.asarray(p0 - c)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_paired_stats_matches_closed_form():
    a, b = [3.0, 2.0, 4.0], [1.0, 1.5, 0.5]
    m = conn.paired_stats(a, b)
    d = np.array([2.0, 0.5, 3.5])
    assert m.value == pytest.approx(d.mean())
    assert m.stderr == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    assert m.n == 3


K = [0, 0, 0, 10, 10, 10, 100, 100, 100]
FALLING = [0.2, 0.25, 0.22, 0.1, 0.12, 0.08, 0.01, 0.0, 0.02]
LIN, CUR = [2.0, 2.2, 1.9], [0.1, 0.2, 0.15]


def test_verdict_supported_when_all_three_parts_hold():
    v, parts = conn.verdict(
        [2.0, 2.2, 1.9], [0.1, 0.2, 0.15], K, FALLING, tau_interval=(-0.9, -0.5)
    )
    assert v.supported is True and v.label == "SUPPORTED"
    assert parts == {"barrier": True, "curve": True, "instability": True}


def test_verdict_negative_parts():
    # The curve lowers the barrier significantly but not below a quarter of it.
    v, parts = conn.verdict([2.0, 2.2, 1.9], [1.0, 1.1, 1.05], K, FALLING, tau_interval=None)
    assert parts["curve"] is False and v.supported is False
    # No barrier at all between the seeds.
    v, parts = conn.verdict([0.01, -0.01, 0.0], [0.0, 0.0, 0.0], K, FALLING)
    assert parts["barrier"] is False and v.supported is False
    # Instability rising with the spawn step.
    v, parts = conn.verdict([2.0, 2.2, 1.9], [0.1, 0.2, 0.15], K, FALLING[::-1], tau_interval=None)
    assert parts["instability"] is False and v.supported is False
    v, parts = conn.verdict(LIN, CUR, K, FALLING[::-1], tau_interval=(0.2, 0.9))
    assert parts["instability"] is False and v.supported is False


def test_verdict_undecided_cases():
    # One pair has no standard error; a negative τ whose interval reaches 0 is not decisive.
    v, parts = conn.verdict([2.0], [0.1], K, FALLING, tau_interval=(-0.9, -0.5))
    assert parts["barrier"] is None and v.supported is None
    v, parts = conn.verdict([2.0, 2.2, 1.9], [0.1, 0.2, 0.15], K, FALLING, tau_interval=(-0.8, 0.1))
    assert parts["instability"] is None and v.supported is None
    v, parts = conn.verdict(LIN, CUR, K, FALLING[::-1], tau_interval=(-0.3, 0.9))
    assert parts["instability"] is None and v.supported is None
    # All instabilities tied: τ is undefined.
    v, parts = conn.verdict([2.0, 2.2, 1.9], [0.1, 0.2, 0.15], K, [0.0] * 9)
    assert parts["instability"] is None
    # Too few parents to resample: no interval, so a falling τ cannot decide.
    v, parts = conn.verdict(LIN, CUR, K, FALLING, tau_interval=(-math.inf, math.inf))
    assert parts["instability"] is None and v.supported is None
    assert "no interval" in v.evidence


def test_verdict_uses_t_intervals_not_two_standard_errors():
    # Reduction 2.5 ± 0.87 over 3 pairs: 2 s.e. (1.73) would call it significant, the t₂
    # interval (± 3.73) reaches below 0; the barrier itself, 3.1 ± 0.64 (t₂ ± 2.73), stays
    # significant, and the curve is below a quarter of it.
    lin, cur = [2.0, 3.1, 4.2], [1.0, 0.6, 0.2]
    diff = conn.paired_stats(lin, cur)
    assert diff.value - 2 * diff.stderr > 0 > diff.value - diff.margin()
    _, parts = conn.verdict(lin, cur, K, FALLING, tau_interval=(-0.9, -0.5))
    assert parts["barrier"] is True and parts["curve"] is False


def test_symlog_threshold_without_positive_spawn_steps():
    # spawn_steps=(0,) is accepted by run; min() over no positive step raised ValueError.
    assert conn.symlog_threshold((0,)) == 1.0
    assert conn.symlog_threshold(()) == 1.0
    assert conn.symlog_threshold((0, 10, 30)) == 10.0
    assert conn.symlog_threshold((0, 0.5)) == 1.0


@pytest.mark.slow  # a whole (tiny) run; CI runs the slow experiment tests in their own step
def test_tiny_run_record():
    settings = dict(
        hidden=(8,),
        num_pairs=2,
        steps=30,
        batch_size=16,
        spawn_steps=(0, 10, 20),
        num_spawn_pairs=2,
        curve_steps=10,
        num_points=5,
        num_bootstrap=50,
    )
    r = ll.experiments.run("connectivity", "quick", overrides=settings, write=False)
    assert r.verdict is not None and r.verdict.label in ("NOT SUPPORTED", "UNDECIDED")
    assert "no interval" in r.verdict.evidence  # 2 parents are too few to resample
    assert len(r.summary) == 3 + 3
    d = r.data
    assert d["linear_losses"].shape == (2, 5) and d["curve_losses"].shape == (2, 5)
    assert d["instability"].shape == (3, 2)
    assert d["spawn_test_accuracies"].shape == (3, 2, 5)
    # A curve and the line share their endpoints.
    np.testing.assert_allclose(d["linear_losses"][:, [0, -1]], d["curve_losses"][:, [0, -1]])
    m = r.measurements
    assert m["linear_loss_barrier"].n == 2 and set(m["instability"]) == {"0", "10", "20"}
    assert np.all(d["linear_barrier"] >= 0) and np.all(d["instability"] >= 0)
    assert r.record["verdict"]["label"] == r.verdict.label
    assert {"barrier_paths", "instability_vs_spawn", "spawn_paths"} <= set(r.figures)


def test_bad_spawn_steps():
    with pytest.raises(ValueError, match="spawn_steps"):
        ll.experiments.run(
            "connectivity", "quick", overrides={"spawn_steps": (0, 5000)}, write=False
        )
