import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import lljax as ll
from lljax import geometry
from lljax.experiments import Measurement, flat_minima, measure


def test_registered_with_presets():
    exp = ll.experiments.get("flat_minima")
    full = exp.presets["full"]
    n_full = (
        len(full["widths"])
        * len(full["batch_sizes"])
        * len(full["learning_rates"])
        * full["num_seeds"]
    )
    assert n_full >= 64
    for preset in exp.presets.values():  # intervals over seeds, not conditional on them
        assert preset["num_seeds"] >= ll.experiments.MIN_CLUSTERS
    assert set(exp.presets["quick"]) == set(full)
    assert exp.claim == flat_minima.CLAIM


@pytest.mark.parametrize(
    "low, high, sign, expected",
    [
        (0.1, 0.5, +1, "supports"),
        (-0.5, -0.1, +1, "contradicts"),
        (-0.1, 0.5, +1, "inconclusive"),
        (-0.5, -0.1, -1, "supports"),
        (0.1, 0.5, -1, "contradicts"),
        (float("nan"), 0.5, +1, "inconclusive"),
    ],
)
def test_correlation_status(low, high, sign, expected):
    assert flat_minima.correlation_status(low, high, sign) == expected


def test_difference_status():
    assert flat_minima.difference_status(Measurement(0.5, 0.2, 8)) == "supports"
    assert flat_minima.difference_status(Measurement(0.3, 0.2, 8)) == "inconclusive"
    assert flat_minima.difference_status(Measurement(-0.5, 0.2, 8)) == "contradicts"
    assert flat_minima.difference_status(Measurement(0.5, float("nan"), 8)) == "inconclusive"
    assert flat_minima.difference_status(Measurement(0.5, 0.0, 1)) == "inconclusive"


def test_difference_status_uses_the_t_margin():
    # 0.45 = 2.25 s.e.: beyond 2 s.e., but not beyond t₄(0.975) = 2.78 s.e. with 5 seeds;
    # with 30 seeds (t₂₉ = 2.05) it is.
    assert flat_minima.difference_status(Measurement(0.45, 0.2, 5)) == "inconclusive"
    assert flat_minima.difference_status(Measurement(0.45, 0.2, 30)) == "supports"
    assert flat_minima.difference_status(Measurement(-0.45, 0.2, 30)) == "contradicts"


def test_jackknife_kendall_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    seed = np.repeat(np.arange(5), 6)
    a = rng.normal(size=5)[seed] + rng.normal(size=30)
    b = 0.5 * a + rng.normal(size=30)
    a[4] = np.nan  # dropped pairwise
    jk = flat_minima.jackknife_kendall(a, b, seed)
    ok = np.isfinite(a)
    loo = np.array(
        [scipy.stats.kendalltau(a[ok & (seed != g)], b[ok & (seed != g)])[0] for g in range(5)]
    )
    se = math.sqrt(4 / 5 * np.sum((loo - loo.mean()) ** 2))
    tau = scipy.stats.kendalltau(a[ok], b[ok])[0]
    half = scipy.stats.t.ppf(0.975, 4) * se
    assert jk["num_groups"] == 5
    assert jk["tau"] == pytest.approx(tau, abs=1e-12)
    assert jk["stderr"] == pytest.approx(se, abs=1e-12)
    assert (jk["low"], jk["high"]) == pytest.approx((tau - half, tau + half), abs=1e-12)
    one = flat_minima.jackknife_kendall(a, b, np.zeros(30))  # one group: no interval
    assert one["tau"] == pytest.approx(tau) and math.isnan(one["low"]) and math.isnan(one["stderr"])


def _corr(tau, low, high):
    return {"tau": tau, "low": low, "high": high}


def test_verdict_rule():
    good = {n: _corr(0.5 * s, 0.2 * s, 0.8 * s) for n, (_, s) in flat_minima.MEASURES.items()}
    up = Measurement(0.5, 0.1, 8)
    v = flat_minima.decide(good, up, num_members=20)
    assert v.supported is True and "τ = +0.50" in v.evidence
    # One headline measure on the wrong side refutes.
    bad = dict(good, llc=_corr(-0.5, -0.8, -0.2))
    assert flat_minima.decide(bad, up, num_members=20).supported is False
    # Keskar's comparison on the wrong side refutes too.
    assert flat_minima.decide(good, Measurement(-0.5, 0.1, 8), num_members=20).supported is False
    # An interval straddling 0 leaves it undecided; so does a tiny population.
    unsure = dict(good, top_eigenvalue=_corr(0.1, -0.2, 0.4))
    assert flat_minima.decide(unsure, up, num_members=20).supported is None
    assert flat_minima.decide(good, up, num_members=4).supported is None
    # Non-headline measures do not enter the rule.
    other = dict(good, epsilon_sharpness=_corr(-0.5, -0.8, -0.2))
    assert flat_minima.decide(other, up, num_members=20).supported is True


def test_granulated_kendall_matches_scipy():
    rng = np.random.default_rng(0)
    a = np.repeat([0, 1, 2], 4)  # factor "a": 3 levels
    b = np.tile([0, 1, 2, 3], 3)  # factor "b": 4 levels
    values = rng.normal(size=12)
    gap = rng.normal(size=12)
    g = flat_minima.granulated_kendall(values, gap, {"a": a, "b": b})
    # Varying "a" with "b" fixed: 4 groups of 3 members.
    ref_a = np.mean([scipy.stats.kendalltau(values[b == k], gap[b == k])[0] for k in range(4)])
    ref_b = np.mean([scipy.stats.kendalltau(values[a == k], gap[a == k])[0] for k in range(3)])
    assert g["a"] == pytest.approx(ref_a, abs=1e-12)
    assert g["b"] == pytest.approx(ref_b, abs=1e-12)
    assert g["psi"] == pytest.approx((ref_a + ref_b) / 2, abs=1e-12)


def test_granulated_kendall_perfect_and_missing():
    a = np.array([0, 1, 0, 1])
    b = np.array([0, 0, 1, 1])
    gap = np.array([1.0, 2.0, 3.0, 4.0])
    g = flat_minima.granulated_kendall(gap, gap, {"a": a, "b": b})
    assert g["a"] == pytest.approx(1.0) and g["b"] == pytest.approx(1.0)
    # A factor with one level only has no comparison.
    g = flat_minima.granulated_kendall(gap, gap, {"a": a, "c": np.zeros(4)})
    assert math.isnan(g["a"]) is False and math.isnan(g["c"])


def test_granulated_psi_averages_hyperparameter_axes_only():
    # 2 learning rates x 2 seeds; the measure follows the gap along the learning rate and
    # against it along the seed. Ψ is the mean over hyperparameter axes: the seed fixes the
    # groups but is not one of them.
    lr = np.array([0.1, 0.2, 0.1, 0.2])
    seed = np.array([0, 0, 1, 1])
    gap = np.array([1.0, 2.0, 3.0, 4.0])
    values = np.array([2.0, 3.0, 1.0, 4.0])
    g = flat_minima.granulated_kendall(values, gap, {"lr": lr, "seed": seed}, axes=("lr",))
    assert g["lr"] == pytest.approx(1.0) and g["seed"] == pytest.approx(0.0)
    assert g["psi"] == pytest.approx(1.0)
    # The experiment passes its hyperparameter axes.
    r = flat_minima._correlations(
        values, gap, gap, {"batch_size": np.full(4, 16), "learning_rate": lr,
                           "width": np.full(4, 8), "seed": seed},
        key=jr.key(0), num_bootstrap=10,
    )  # fmt: skip
    assert r["granulated"]["psi"] == pytest.approx(1.0)


def test_correlations_resample_whole_seeds_when_given():
    # 6 seeds x 4 networks; a shared seed effect moves both the measure and the gap, so the
    # networks are not independent and the seed bootstrap's interval is the wider one.
    rng = np.random.default_rng(0)
    seed = np.repeat(np.arange(6), 4)
    effect = rng.normal(size=6)[seed]
    values, gap = effect + 0.3 * rng.normal(size=24), effect + 0.3 * rng.normal(size=24)
    factors = {"batch_size": np.tile([16, 128], 12), "learning_rate": np.full(24, 0.1),
               "width": np.full(24, 8), "seed": seed}  # fmt: skip
    kw = dict(key=jr.key(1), num_bootstrap=400)
    by_seed = flat_minima._correlations(values, gap, gap, factors, groups=seed, **kw)
    by_net = flat_minima._correlations(values, gap, gap, factors, **kw)
    ref = ll.ensemble.rank_correlation(
        values, gap, method="kendall", key=jr.split(jr.key(1))[0], num_bootstrap=400, groups=seed
    )
    assert (by_seed["boot_low"], by_seed["boot_high"]) == (ref.low, ref.high)
    assert by_seed["tau"] == by_net["tau"]
    # With seeds the verdict's interval is the leave-one-seed-out jackknife-t one; without,
    # the network bootstrap's.
    jk = flat_minima.jackknife_kendall(values, gap, seed)
    assert by_seed["interval"] == "jackknife" and by_net["interval"] == "bootstrap"
    assert (by_seed["low"], by_seed["high"], by_seed["n_se"]) == (jk["low"], jk["high"], 6)
    assert (by_net["low"], by_net["high"]) == (by_net["boot_low"], by_net["boot_high"])
    # Fixed draws (cannot flake): the seed bootstrap is wider than the network bootstrap,
    # 0.73 against 0.61, and the jackknife-t interval wider still.
    assert by_seed["boot_high"] - by_seed["boot_low"] > 1.1 * (by_net["high"] - by_net["low"])
    assert by_seed["high"] - by_seed["low"] > by_seed["boot_high"] - by_seed["boot_low"]


def test_paired_log_ratio():
    values = np.array([1.0, 2.0, 3.0, 12.0, 5.0, 7.0])
    batch = np.array([16, 128, 16, 128, 16, 64])
    keys = [("w", 1), ("w", 1), ("w", 2), ("w", 2), ("w", 3), ("w", 3)]
    m = flat_minima.paired_log_ratio(values, batch, keys, 16, 128)
    ref = measure([math.log(2.0), math.log(4.0)])  # the third pair has no batch-128 member
    assert m.n == 2
    assert m.value == pytest.approx(ref.value) and m.stderr == pytest.approx(ref.stderr)
    with pytest.raises(ValueError, match="no matched"):
        flat_minima.paired_log_ratio(values, batch, keys, 16, 256)
    # Grouped (e.g. by seed): pairs are averaged within a group, the error is over groups.
    values = np.array([1.0, 2.0, 1.0, 8.0, 2.0, 2.0, 1.0, 1.0])
    batch = np.tile([16, 128], 4)
    keys = [(lr, s) for lr, s in [(1, 0), (1, 0), (2, 0), (2, 0), (1, 1), (1, 1), (2, 1), (2, 1)]]
    seed = np.array([k[1] for k in keys])
    g = flat_minima.paired_log_ratio(values, batch, keys, 16, 128, groups=seed)
    ref = measure([math.log(16.0) / 2, 0.0])  # seed 0: mean(log 2, log 8); seed 1: 0
    assert g.n == 2
    assert g.value == pytest.approx(ref.value) and g.stderr == pytest.approx(ref.stderr)


def _key_set(keys) -> set:
    return {tuple(row) for row in np.asarray(jr.key_data(keys)).reshape(-1, 2).tolist()}


def _folds(key, num) -> jax.Array:
    return jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(num, dtype=jnp.uint32))


def test_measurement_keys_differ_from_training_keys():
    # jr.split(k) == (fold_in(k, 0), fold_in(k, 1)): keys folded straight from key(seed)
    # were replicate 0's init/data-order keys, and their part keys its minibatch keys.
    seed, num_seeds = 3, 2
    train = set()
    for init, order in flat_minima.replicate_keys(seed, num_seeds):
        train |= _key_set(jnp.stack([init, order]))
        train |= _key_set(_folds(init, 300))  # init keys of widths < 300
        train |= _key_set(_folds(order, 64))  # data-order keys of the first 64 chunks
    meas = flat_minima.measurement_keys(seed, 0, 24)
    used = _key_set(meas) | _key_set(jax.vmap(lambda k: _folds(k, len(flat_minima.PARTS)))(meas))
    assert len(used) == 24 * (1 + len(flat_minima.PARTS))
    assert not used & train
    # Members of later widths continue the stream.
    tail = flat_minima.measurement_keys(seed, 10, 4)
    assert _key_set(tail) == _key_set(meas[10:14])


def test_log_basin_radius_of_a_ball():
    for d, r in ((2, 0.5), (7, 3.0), (1000, 0.01)):
        log_v = geometry.log_unit_ball_volume(d) + d * math.log(r)
        assert float(flat_minima.log_basin_radius(log_v, d)) == pytest.approx(math.log(r))


def test_train_until_stops_and_freezes():
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=64, num_test=32, separation=4.0)
    model = ll.models.mlp([2, 8, 2])
    loss_fn = ll.losses.cross_entropy(model)
    keys = jr.split(jr.key(1), 3)
    out = flat_minima.train_until(
        model,
        loss_fn,
        data,
        init_keys=keys,
        data_keys=jr.split(jr.key(2), 3),
        learning_rates=[0.0, 0.05, 0.05],
        batch_size=16,
        momentum=0.9,
        max_steps=200,
        check_every=20,
        target_loss=0.3,
    )
    init = jax.vmap(model.init)(keys)
    # lr 0: never moves, never converges, uses the whole budget.
    for a, b in zip(jax.tree.leaves(out["params"]), jax.tree.leaves(init), strict=True):
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert not out["converged"][0] and out["steps"][0] == 200
    # The others stop at the first check below the target, and the loss reported is theirs.
    assert out["converged"][1:].all() and (out["steps"][1:] < 200).all()
    assert (out["steps"] % 20 == 0).all()
    losses = jax.vmap(lambda p: loss_fn(p, (data.x_train, data.y_train)))(out["params"])
    np.testing.assert_allclose(np.asarray(losses), out["train_loss"], rtol=1e-5)
    assert (out["train_loss"][1:] <= 0.3).all() and not out["diverged"].any()
    with pytest.raises(ValueError, match="max_steps"):
        flat_minima.train_until(
            model,
            loss_fn,
            data,
            init_keys=keys,
            data_keys=keys,
            learning_rates=[0.1] * 3,
            batch_size=16,
            momentum=0.0,
            max_steps=30,
            check_every=20,
            target_loss=0.1,
        )


@pytest.mark.slow
def test_member_measures_top_eigenvalue_matches_dense_hessian():
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=64, num_test=32)
    model = ll.models.mlp([2, 4, 2])
    loss_fn = ll.losses.cross_entropy(model)
    params = model.init(jr.key(1))
    batch = (data.x_train, data.y_train)
    fn = flat_minima.MemberMeasures(
        loss_fn, basin_directions=4, llc_draws=8, llc_burnin=4, llc_batch_size=16
    )
    out = fn((params, jr.key(2)), batch, batch)
    assert set(flat_minima.MEASURES) <= set(out)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = jax.hessian(lambda v: loss_fn(unravel(v), batch))(flat)
    top = float(jnp.linalg.eigvalsh(h)[-1])
    assert float(out["top_eigenvalue"]) == pytest.approx(top, rel=1e-3)
    assert float(out["hessian_trace"]) == pytest.approx(
        float(jnp.trace(h)), abs=4 * float(out["hessian_trace_stderr"]) + 1e-4
    )


@pytest.mark.slow
def test_tiny_run_record():
    overrides = dict(
        num_samples=300,
        widths=(8,),
        batch_sizes=(8, 32),
        learning_rates=(0.05,),
        num_seeds=2,
        max_steps=40,
        check_every=20,
        target_loss=100.0,
        measure_examples=32,
        num_samples_flatness=2,
        num_probes=6,
        basin_directions=4,
        llc_chains=2,
        llc_draws=8,
        llc_burnin=4,
        llc_batch_size=16,
        num_bootstrap=50,
        member_chunk_size=4,
    )
    r = ll.experiments.run("flat_minima", "quick", overrides=overrides, write=False)
    members = r.data["members"]
    assert members["gap"].shape == (4,)
    assert members["converged"].all() and (members["steps"] == 20).all()
    assert set(r.measurements["kendall_tau"]) == set(flat_minima.MEASURES)
    assert r.verdict.supported is None  # 4 networks cannot decide
    assert len(r.summary) == len(flat_minima.MEASURES) + 1
    assert r.record["verdict"]["label"] == "UNDECIDED"
    assert r.seeds == [0, 1]
