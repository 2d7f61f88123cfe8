import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import lljax as ll
from lljax.experiments import Measurement, measure
from lljax.experiments import langevin as L


@pytest.mark.parametrize("dim", [0, 3, 12])
def test_exact_bins_match_von_mises(dim):
    # a(x)^(−d/2) with a = exp(s cos x) is the von Mises law centred on π, κ = s d / 2.
    s, k = 0.7, 12
    p = L.exact_bin_probabilities(dim, s, k)
    edges = np.linspace(0, 2 * np.pi, k + 1)
    if dim == 0:
        ref = np.full(k, 1 / k)
    else:
        law = scipy.stats.vonmises(kappa=0.5 * s * dim, loc=np.pi)
        # scipy's support is [loc − π, loc + π] = [0, 2π].
        ref = np.diff(law.cdf(edges))
    np.testing.assert_allclose(p, ref, atol=1e-9)


def test_exact_marginal_is_normalised_power_of_curvature():
    s, d = 0.5, 6
    x = np.linspace(0, 2 * np.pi, 20001)
    f = L.exact_marginal(x, d, s)
    assert abs(np.trapezoid(f, x) - 1) < 1e-6
    a = np.exp(s * np.cos(x))
    ratio = f / a ** (-d / 2)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)  # ∝ a^(−d/2)
    assert math.isclose(f[len(x) // 2] / f[0], math.exp(s * d), rel_tol=1e-6)


def test_flat_loss_equals_per_chain_loss_and_gradients():
    dims, n, s = (0, 2, 3), 4, 0.8
    key = jr.key(0)
    x = jr.uniform(key, (len(dims) * n,), maxval=6.0)
    owner = jnp.asarray(L._flat_layout(dims, n))
    y = jr.normal(jr.key(1), owner.shape)
    flat = {"x": x, "y": y}
    per, start = 0.0, 0
    stacks = []
    for i, d in enumerate(dims):
        q = {"x": x[i * n : (i + 1) * n], "y": y[start : start + n * d].reshape(n, d)}
        stacks.append(q)
        per = per + L.toy_loss(q, s)
        start += n * d
    assert jnp.allclose(L.flat_toy_loss(flat, owner, s), per, rtol=1e-6)
    g = jax.grad(L.flat_toy_loss)(flat, owner, s)
    # ∂L/∂x = ½ a'(x) ‖y‖² with a' = −s sin x · a.
    gx = jnp.concatenate(
        [
            -0.5 * s * jnp.sin(q["x"]) * L.curvature_profile(q["x"], s) * jnp.sum(q["y"] ** 2, -1)
            for q in stacks
        ]
    )
    np.testing.assert_allclose(g["x"], gx, rtol=1e-5, atol=1e-6)
    gy = jnp.concatenate(
        [(L.curvature_profile(q["x"], s)[:, None] * q["y"]).ravel() for q in stacks]
    )
    np.testing.assert_allclose(g["y"], gy, rtol=1e-5, atol=1e-6)


def test_arcs_slope_and_crossing_helpers():
    flat, sharp = L.arc_masks(24)
    assert flat.sum() == sharp.sum() == 6 and not (flat & sharp).any()
    assert flat[11] and flat[12] and sharp[0] and sharp[23]
    with pytest.raises(ValueError, match="half_width"):
        L.arc_masks(4, 0.1)
    assert math.isclose(float(L.fit_slope([0, 1, 3], [1.0, 3.0, 7.0])), 2.0)
    np.testing.assert_allclose(
        L.fit_slope([0, 1, 2], np.array([[0, 1, 2], [0, -1, -2.0]])), [1, -1]
    )
    steps = np.array([0, 100, 200, 300])
    assert L.crossing_step(steps, [0.1, 0.5, 0.95, 0.99], 0.9) == 200
    assert math.isnan(L.crossing_step(steps, [0.1, 0.5, 0.6, 0.7], 0.9))
    assert L.value_at(steps, [1.0, 2.0, 3.0, 4.0], 300.0) == 4.0
    assert math.isnan(L.value_at(steps, [1.0, 2.0, 3.0, 4.0], math.nan))


def test_occupation_distance_detects_a_wrong_marginal():
    rng = np.random.default_rng(0)
    exact = L.exact_bin_probabilities(8, 0.5, 16)
    counts = rng.multinomial(20000, exact, size=16)
    ok = L.occupation_distance(counts, exact)
    assert ok["tv"] < 3 * ok["tv_noise"] and 0.4 < ok["chi2_per_bin"] < 2.0
    wrong = L.exact_bin_probabilities(4, 0.5, 16)  # a^(−d/4): half the exponent
    bad = L.occupation_distance(counts, wrong)
    assert bad["tv"] > 0.1 and bad["chi2_per_bin"] > 100


def test_toy_verdict_rule():
    slope = measure([0.45, 0.46, 0.44, 0.45])
    tv = {0: 0.004, 12: 0.006}
    noise = {0: 0.004, 12: 0.003}
    kw = dict(tv_tolerance=0.02, slope_rel_tolerance=0.05)
    assert L.toy_verdict(tv, noise, slope, 0.45, **kw).supported is True
    assert L.toy_verdict({0: 0.004, 12: 0.05}, noise, slope, 0.45, **kw).supported is False
    assert L.toy_verdict(tv, noise, slope, 0.6, **kw).supported is False
    assert L.toy_verdict(tv, noise, measure([-0.1, -0.1]), -0.1, **kw).supported is False


def test_toy_verdict_slope_needs_an_interval_inside_the_band():
    tv, noise = {0: 0.004, 12: 0.006}, {0: 0.004, 12: 0.003}
    kw = dict(tv_tolerance=0.02, slope_rel_tolerance=0.05)
    # One group: no standard error. It used to count as 0, so the mean alone decided.
    one = L.toy_verdict(tv, noise, measure([0.45]), 0.45, **kw)
    assert one.supported is None and "fewer than 2 groups" in one.evidence
    # 0.45 ± 0.01 over 3 groups: t₂ margin 0.043 > the 0.0225 band, so undecided (2 s.e.
    # = 0.02 would have called it an agreement).
    wide = Measurement(0.45, 0.01, 3)
    assert L.toy_verdict(tv, noise, wide, 0.45, **kw).supported is None
    # The same interval far from the band disagrees.
    assert L.toy_verdict(tv, noise, Measurement(0.6, 0.01, 3), 0.45, **kw).supported is False


def test_grokking_verdict_rule_and_combination():
    kw = dict(total_steps=2000, interval=200)
    ok = L.grokking_verdict(
        [200, 200, 200], [1200, 1400, 1000], [0.8, 0.85, 0.9], [-5, -6, -4], **kw
    )
    assert ok.supported is True
    norm_up = L.grokking_verdict(
        [200, 200, 200], [1200, 1400, 1000], [1.1, 1.12, 1.11], [-5, -6, -4], **kw
    )
    assert norm_up.supported is False and "does not fall" in norm_up.evidence
    # Test accuracy crossing with train accuracy in every seed: delay 0 ± 0.
    no_delay = L.grokking_verdict([200, 400, 200], [200, 400, 200], [0.8] * 3, [-5] * 3, **kw)
    assert no_delay.supported is False and "no delay" in no_delay.evidence
    undecided = L.grokking_verdict([200, 200], [1200, math.nan], [0.8, math.nan], [-5, 0], **kw)
    assert undecided.supported is None and "1 of 2 seeds" in undecided.evidence
    assert L.combine(ok, undecided).supported is None
    assert L.combine(ok, norm_up).supported is False
    assert L.combine(ok, ok).label == "SUPPORTED"


def test_grokking_verdict_one_seed_is_undecided():
    # With one seed the NaN standard error used to become 0: ratio 0.999 and ΔLLC −0.001
    # were called a fall, and the claim SUPPORTED.
    v = L.grokking_verdict([200], [1200], [0.999], [-0.001], total_steps=2000, interval=200)
    assert v.supported is None and "1 seed" in v.evidence and "no standard error" in v.evidence


def test_grokking_verdict_insignificant_rise_is_undecided_not_negative():
    kw = dict(total_steps=2000, interval=200)
    delays = ([200, 200, 200], [1300, 1100, 800])
    # Ratios with mean 1.009 and s.e. 0.012 (the README's quick run): the t₂ interval
    # [0.957, 1.061] neither shows a fall nor rules one out.
    ratios = [0.997, 1.000, 1.030]
    r = measure(ratios)
    assert abs(r.value - 1.009) < 1e-9 and abs(r.stderr - 0.0105) < 1e-3
    v = L.grokking_verdict(*delays, ratios, [-6.0, -6.5, -5.5], **kw)
    assert v.supported is None and "neither falls nor rules out a fall" in v.evidence
    # A significant rise rules the fall out.
    v = L.grokking_verdict(*delays, [1.05, 1.06, 1.07], [-6.0, -6.5, -5.5], **kw)
    assert v.supported is False
    # An LLC change whose interval straddles 0 does not decide either way.
    v = L.grokking_verdict(*delays, [0.8, 0.85, 0.9], [-1.0, 0.5, -2.0], **kw)
    assert v.supported is None


def test_grokking_verdict_uses_t_quantile_not_two_standard_errors():
    kw = dict(total_steps=2000, interval=200)
    # ΔLLC −1.0 ± 0.40 over 3 seeds: 2 s.e. (0.81) would call it a fall; t₂ × s.e. = 1.74
    # does not.
    dllc = [-0.3, -1.0, -1.7]
    m = measure(dllc)
    assert m.value + 2 * m.stderr < 0 < m.value + m.margin()
    v = L.grokking_verdict([200] * 3, [1200, 1400, 1000], [0.8, 0.85, 0.9], dllc, **kw)
    assert v.supported is None


def test_sample_toy_histograms_and_flat_preference():
    r = L.sample_toy(
        jr.key(0),
        0.5,
        0.05,
        1.0,
        dims=(0, 12),
        num_groups=2,
        chains_per_group=64,
        num_burnin=100,
        num_records=10,
        thin=10,
        num_bins=8,
    )
    counts = np.asarray(r.counts)
    assert counts.shape == (2, 2, 8)
    np.testing.assert_array_equal(counts.sum(-1), 64 * 10)
    flat, sharp = L.arc_masks(8)
    freq = counts.sum(1) / counts.sum((1, 2))[:, None]
    ratio = L.log_occupation_ratio(freq, flat, sharp)
    exact = L.log_occupation_ratio(L.exact_bin_probabilities(12, 0.5, 8), flat, sharp)
    assert abs(ratio[0]) < 0.5  # d = 0: no preference
    assert ratio[1] > 0.6 * exact  # d = 12: strong preference for the flat arc


def test_one_hot_pairs_encode_modular_addition():
    data = L.one_hot_pairs(7, 0.5)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    assert x.shape[1] == 14 and np.all(x.sum(1) == 2)
    a, b = x[:, :7].argmax(1), x[:, 7:].argmax(1)
    np.testing.assert_array_equal((a + b) % 7, y)
    assert data.num_train + data.num_test == 49


def test_langevin_is_registered_with_quick_and_full():
    exp = ll.experiments.get("langevin")
    assert {"quick", "full"} <= set(exp.presets) and exp.claim == L.CLAIM
    with pytest.raises(ValueError, match="nope"):
        ll.experiments.resolve_settings("langevin", "quick", {"nope": 1})


TINY = dict(
    dims=(0, 3),
    num_groups=2,
    chains_per_group=8,
    num_burnin=10,
    num_records=5,
    thin=2,
    num_bins=8,
    bias_steps=20,
    p=5,
    width=8,
    num_seeds=2,
    optimizers=("adamw",),
    steps=20,
    checkpoint_every=10,
    hessian_probes=4,
    lanczos_steps=4,
    llc_burnin=2,
    llc_draws=4,
    llc_batch_size=8,
)


@pytest.mark.slow
def test_tiny_run_record():
    r = ll.experiments.run("langevin", "quick", overrides=TINY, write=False)
    rec = r.record
    assert rec["verdict"]["label"] in ("SUPPORTED", "NOT SUPPORTED", "UNDECIDED")
    assert set(rec["measurements"]) == {"toy", "grokking", "verdict_a", "verdict_b"}
    assert set(rec["measurements"]["toy"]) >= {"d=0", "d=3", "slope", "exact_slope"}
    g = rec["data"]["grokking"]
    assert len(g["step"]) == 3 and np.asarray(g["adamw"]["llc"]).shape == (2, 3)
    assert np.asarray(rec["data"]["toy"]["frequency_per_group"]).shape == (2, 2, 8)
    assert set(r.figures) == {
        "toy_occupation",
        "toy_flat_sharp_ratio",
        "toy_bias",
        "grokking_accuracy",
        "grokking_geometry",
    }
