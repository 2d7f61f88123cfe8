"""Tests for lljax.signal: mean-field theory against closed forms and independent quadrature,
and measured propagation against exact computations and the theory at finite width."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

import lljax as ll
from lljax import signal

# ---------------------------------------------------------------------------------------------
# Mean-field theory: closed forms
# ---------------------------------------------------------------------------------------------


def _relu_cmap(c):
    """Arc-cosine kernel of degree 1 (Cho & Saul 2009), normalised: the ReLU c-map at σ_w² = 2."""
    return (np.sqrt(1 - c**2) + (np.pi - np.arccos(c)) * c) / np.pi


def test_relu_critical_point_closed_form(x64):
    # ReLU: E[φ'(√q z)²] = 1/2 for every q, so χ₁ = σ_w²/2 and the critical line is σ_w² = 2.
    assert float(signal.chi1("relu", 2.0, 0.0)) == pytest.approx(1.0, abs=1e-13)
    assert float(signal.chi1("relu", 1.2, 0.3)) == pytest.approx(0.6, abs=1e-13)
    for sb in (0.0, 0.5):
        assert float(signal.critical_sigma_w2("relu", sb)) == pytest.approx(2.0, abs=1e-12)
    # Length map and its fixed point: q' = σ_w² q / 2 + σ_b², q* = σ_b² / (1 − σ_w²/2).
    assert float(signal.length_map("relu", 1.5, 0.2, 0.7)) == pytest.approx(1.5 * 0.35 + 0.2)
    assert float(signal.q_star("relu", 1.5, 0.2)) == pytest.approx(0.2 / 0.25, rel=1e-12)
    assert float(signal.q_star("relu", 3.0, 0.1)) == np.inf  # variance explodes


def test_relu_cmap_closed_form(x64):
    c = np.array([-0.99, -0.5, 0.0, 0.3, 0.8, 0.99, 1.0])
    got = signal.correlation_map("relu", 2.0, 0.0, c, q=1.0)
    np.testing.assert_allclose(got, _relu_cmap(c), atol=1e-13)
    # Iterates are repeated application, and positive homogeneity makes q irrelevant.
    traj = signal.correlation_map("relu", 2.0, 0.0, 0.1, q=7.0, num_iters=4, trajectory=True)
    ref = [0.1]
    for _ in range(4):
        ref.append(_relu_cmap(ref[-1]))
    np.testing.assert_allclose(traj, ref[1:], atol=1e-13)
    # With biases, at q* = σ_b² / (1 − σ_w²/2): c' = (σ_w² q* k(c) / 2 + σ_b²) / q*.
    sw, sb = 1.5, 0.2
    qs = sb / (1 - sw / 2)
    want = (sw * qs * _relu_cmap(c) / 2 + sb) / qs
    np.testing.assert_allclose(signal.correlation_map("relu", sw, sb, c), want, atol=1e-12)


def test_relu_mean_field_in_every_regime(x64):
    # ReLU: V(q) = σ_w² q / 2 + σ_b², χ₁ = χ_c = χ_q = σ_w²/2 and c* = 1 in every regime;
    # q* = σ_b² / (1 − σ_w²/2) below the critical line σ_w² = 2, inf on and above it.
    sw = jnp.array([1.0, 1.5, 2.0, 2.0, 2.5, 2.5])
    sb = jnp.array([0.0, 0.2, 0.0, 0.5, 0.0, 0.5])
    mf = jax.jit(jax.vmap(lambda w, b: signal.mean_field("relu", w, b)))(sw, sb)
    sw, sb = np.asarray(sw), np.asarray(sb)
    ordered = sw < 2
    np.testing.assert_allclose(mf.q_star[ordered], sb[ordered] / (1 - sw[ordered] / 2), atol=1e-15)
    assert np.all(np.isposinf(mf.q_star[~ordered]))
    np.testing.assert_array_equal(mf.c_star, 1.0)
    for chi in (mf.chi1, mf.chi_c, mf.chi_q):
        np.testing.assert_allclose(chi, sw / 2, rtol=1e-13)
    xi = np.full_like(sw, np.inf)
    xi[ordered] = -1 / np.log(sw[ordered] / 2)
    np.testing.assert_allclose(mf.xi_c, xi, rtol=1e-12)
    np.testing.assert_allclose(mf.xi_q, xi, rtol=1e-12)
    # Float32: the critical line is still critical (χ rounds to 1 − 1 ulp there).
    with jax.enable_x64(False):
        mf = signal.mean_field("relu", 2.0, 0.5)
        assert float(mf.q_star) == np.inf and float(mf.c_star) == 1.0
        assert float(mf.xi_c) == np.inf and float(mf.xi_q) == np.inf


def test_relu_cmap_at_infinite_q_star(x64):
    # Above the critical line q* = inf: the c-map is its q → ∞ limit, the arc-cosine kernel
    # (σ_b² is negligible against q), which for σ_b² = 0 is the c-map at every q.
    c = np.array([-1.0, -0.5, 0.0, 0.3, 0.9, 1.0])
    for sw, sb in ((2.5, 0.0), (2.5, 0.5), (2.0, 0.5)):
        got = signal.correlation_map("relu", sw, sb, c)
        np.testing.assert_allclose(got, _relu_cmap(c), atol=1e-13)
    traj = signal.correlation_map("relu", 3.0, 0.1, 0.2, num_iters=3, trajectory=True)
    np.testing.assert_allclose(
        traj,
        [_relu_cmap(0.2), _relu_cmap(_relu_cmap(0.2)), _relu_cmap(_relu_cmap(_relu_cmap(0.2)))],
        atol=1e-13,
    )
    # At a finite q, with biases: c' = (σ_w² q k(c) / 2 + σ_b²) / (σ_w² q / 2 + σ_b²).
    sw, sb, q = 2.5, 0.5, 3.0
    want = (sw * q * _relu_cmap(c) / 2 + sb) / (sw * q / 2 + sb)
    np.testing.assert_allclose(signal.correlation_map("relu", sw, sb, c, q=q), want, atol=1e-13)
    np.testing.assert_allclose(
        signal.correlation_map("relu", sw, sb, c, q=np.inf), _relu_cmap(c), atol=1e-13
    )


def _erf_q_star(sw, sb):
    # E[erf(u)erf(v)] = (2/π) arcsin(2 q₁₂ / √((1 + 2q₁₁)(1 + 2q₂₂))) (Williams 1997).
    f = lambda q: sw * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + sb - q
    return optimize.brentq(f, 1e-9, 50.0, xtol=1e-15)


def test_erf_closed_forms(x64):
    sw, sb = 2.0, 0.3
    qs = _erf_q_star(sw, sb)
    assert float(signal.q_star("erf", sw, sb)) == pytest.approx(qs, rel=1e-11)
    # χ₁ = σ_w² E[(2/√π)² e^{−2 q z²}] = (4 σ_w² / π) / √(1 + 4 q*).
    chi = 4 * sw / np.pi / np.sqrt(1 + 4 * qs)
    assert float(signal.chi1("erf", sw, sb)) == pytest.approx(chi, rel=1e-11)
    c = np.array([-0.7, 0.0, 0.5, 0.95])
    want = (sw * (2 / np.pi) * np.arcsin(2 * qs * c / (1 + 2 * qs)) + sb) / qs
    np.testing.assert_allclose(signal.correlation_map("erf", sw, sb, c), want, atol=1e-11)


def test_erf_critical_at_pi_over_4(x64):
    # σ_b² = 0: below π/4 the only fixed point is q* = 0, where χ₁ = σ_w² φ'(0)² = 4σ_w²/π.
    for sw in (0.3, 0.7):
        assert float(signal.q_star("erf", sw, 0.0)) < 1e-15
        assert float(signal.chi1("erf", sw, 0.0)) == pytest.approx(4 * sw / np.pi, rel=1e-12)
    # Above π/4, q* > 0 and χ₁ − 1 ≈ δ²/3 (δ = 4σ_w²/π − 1): chaos, but only quadratically,
    # so the root is resolved to ~ (float64 eps)^(1/2).
    for d in (1e-2, 1e-3):
        sw = np.pi / 4 * (1 + d)
        chi = 4 * sw / np.pi / np.sqrt(1 + 4 * _erf_q_star(sw, 0.0))
        # The next-order term is O(δ) relative (measured 1.6% at δ = 1e-2, 0.17% at 1e-3).
        assert chi - 1 == pytest.approx(d**2 / 3, rel=3 * d)
        assert float(signal.chi1("erf", sw, 0.0)) == pytest.approx(chi, rel=1e-10)
    assert float(signal.critical_sigma_w2("erf", 0.0)) == pytest.approx(np.pi / 4, abs=1e-7)


def test_identity_activation_closed_form(x64):
    # φ(u) = u: q* = σ_b² / (1 − σ_w²), χ₁ = σ_w², critical at σ_w² = 1 for every σ_b².
    assert float(signal.q_star("identity", 0.5, 0.2)) == pytest.approx(0.4, rel=1e-12)
    assert float(signal.chi1("identity", 0.5, 0.2)) == pytest.approx(0.5, rel=1e-12)
    assert float(signal.critical_sigma_w2("identity", 0.3)) == pytest.approx(1.0, abs=1e-12)


def test_cmap_accurate_at_large_q(x64):
    # E[erf(u₁)erf(u₂)] = (2/π) arcsin(2qc / (1 + 2q)) (Williams 1997). At large q, erf(√q r cos t)
    # has a boundary layer of angular width ~1/(√q r) next to the rays where u₁, u₂ change
    # sign; a rule that only splits at the rays errs by 2e-9 at q = 10 and 4e-4 at q = 1e5.
    # Tolerance: 100× the ~1e-14 the quadrature reaches on the smooth (small-q) case.
    c = np.array([-1.0, -0.999999, -0.9, 0.0, 0.5, 0.9, 0.99, 0.9999, 0.999999, 1.0])
    sw, sb = 1.3, 0.2
    k = lambda cc, q: (2 / np.pi) * np.arcsin(2 * q * cc / (1 + 2 * q))
    for q in (1.0, 10.0, 1e3, 1e5):
        want = (sw * k(c, q) + sb) / (sw * k(1.0, q) + sb)
        got = signal.correlation_map("erf", sw, sb, c, q=q)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"q = {q}")
    # Deep in chaos (q* ≈ 486): c* solves the closed-form fixed-point equation.
    sw = 500.0
    mf = signal.mean_field("erf", sw, sb)
    qs, cs = float(mf.q_star), float(mf.c_star)
    f = lambda q: sw * (2 / np.pi) * np.arcsin(2 * q / (1 + 2 * q)) + sb - q
    assert qs == pytest.approx(optimize.brentq(f, 1.0, 10 * sw, xtol=1e-13), rel=1e-11)
    assert (sw * k(cs, qs) + sb) / qs == pytest.approx(cs, abs=1e-12)
    chi_c = sw * (4 / np.pi) / np.sqrt((1 + 2 * qs) ** 2 - (2 * qs * cs) ** 2)
    assert float(mf.chi_c) == pytest.approx(chi_c, rel=1e-11)


@pytest.mark.parametrize("x64_on", [False, True])
def test_tanh_is_exactly_critical_at_unit_sigma_w2_without_bias(x64_on):
    # tanh, σ_b² = 0, σ_w² = 1: V(q) = E[tanh²(√q z)] < q for every q > 0, so q* = 0 and
    # χ₁ = χ_c = χ_q = tanh'(0)² = 1: the edge of chaos, ξ_c = ξ_q = inf (correlations and
    # lengths converge only algebraically). χ₁ ≈ 1 − 2q* near q* = 0, so χ₁ within 4 eps of
    # 1 means q* ≤ 2 eps; a spurious root q* ~ 16 eps (the root finder's rounding tolerance)
    # gave χ₁ = 1 − 3.7e-15 and ξ_c = 2.6e14 layers in float64.
    with jax.enable_x64(x64_on):
        mf = signal.mean_field("tanh", 1.0, 0.0)
        eps = float(jnp.finfo(mf.chi1.dtype).eps)
        assert 0 <= float(mf.q_star) <= 2 * eps
        for chi in (mf.chi1, mf.chi_c, mf.chi_q):
            assert abs(float(chi) - 1) <= 4 * eps, float(chi)
        assert float(mf.c_star) == 1.0
        assert float(mf.xi_c) == np.inf and float(mf.xi_q) == np.inf


# ---------------------------------------------------------------------------------------------
# Mean-field theory: tanh against independent scipy quadrature and the published line
# ---------------------------------------------------------------------------------------------


def _gauss(f):
    g = lambda z: f(z) * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return integrate.quad(g, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13, limit=200)[0]


def _tanh_reference(sb):
    sech4 = lambda u: np.exp(-4 * np.logaddexp(u, -u) + 4 * np.log(2.0))  # overflow-safe

    def q_star(sw):
        f = lambda q: sw * _gauss(lambda z: np.tanh(np.sqrt(q) * z) ** 2) + sb - q
        return optimize.brentq(f, 1e-12, 100.0, xtol=1e-15)

    def chi(sw):
        q = q_star(sw)
        return sw * _gauss(lambda z: sech4(np.sqrt(q) * z))

    return optimize.brentq(lambda sw: chi(sw) - 1, 1.0, 10.0, xtol=1e-13)


def test_tanh_critical_line(x64):
    sb2 = np.array([0.05, 0.5])
    got = jax.jit(jax.vmap(lambda b: signal.critical_sigma_w2("tanh", b)))(jnp.asarray(sb2))
    want = [_tanh_reference(b) for b in sb2]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # Published: σ_b² = 0.05 → σ_w² ≈ 1.76 (Schoenholz et al. 2017, Fig. 1; Poole et al. 2016);
    # σ_b² = 0 → σ_w² = 1/tanh'(0)² = 1.
    assert float(got[0]) == pytest.approx(1.76, abs=0.005)
    assert float(signal.critical_sigma_w2("tanh", 0.0)) == pytest.approx(1.0, abs=1e-6)
    # Float32 (the default) agrees to its precision.
    with jax.enable_x64(False):
        assert float(signal.critical_sigma_w2("tanh", 0.05)) == pytest.approx(want[0], rel=1e-5)


def test_depth_scales(x64):
    # ReLU with σ_w² < 2, σ_b² > 0: ordered, c* = 1, χ_c = χ_q = χ₁ = σ_w²/2.
    mf = signal.mean_field("relu", 1.0, 0.1)
    assert float(mf.c_star) == 1.0
    want = -1 / np.log(0.5)
    ds = signal.depth_scale("relu", 1.0, 0.1)
    assert float(ds.xi_c) == pytest.approx(want, rel=1e-12)
    assert float(ds.xi_q) == pytest.approx(want, rel=1e-12)
    # Chaotic tanh, σ_b² = 0: c* = 0 (odd φ), χ_c = σ_w² E[φ'(√q* z)]², χ_q = dV/dq at q*.
    sw = 4.0
    mf = signal.mean_field("tanh", sw, 0.0)
    q = float(mf.q_star)
    assert abs(float(mf.c_star)) < 1e-12
    sech2 = lambda u: np.exp(-2 * np.logaddexp(u, -u) + 2 * np.log(2.0))
    chi_c = sw * _gauss(lambda z: sech2(np.sqrt(q) * z)) ** 2
    assert float(mf.chi_c) == pytest.approx(chi_c, rel=1e-10)
    dq = 1e-5
    v = lambda qq: sw * _gauss(lambda z: np.tanh(np.sqrt(qq) * z) ** 2)
    assert float(mf.chi_q) == pytest.approx((v(q + dq) - v(q - dq)) / (2 * dq), rel=1e-7)
    assert float(mf.xi_c) == pytest.approx(-1 / np.log(chi_c), rel=1e-10)
    # Chaotic with bias: c* < 1 is a fixed point of the c-map; ξ_c diverges at criticality.
    mf = signal.mean_field("tanh", 3.0, 0.3)
    assert 0 < float(mf.c_star) < 1
    assert float(signal.correlation_map("tanh", 3.0, 0.3, mf.c_star)) == pytest.approx(
        float(mf.c_star), abs=1e-12
    )
    crit = signal.critical_sigma_w2("tanh", 0.3)
    assert float(signal.depth_scale("tanh", crit, 0.3).xi_c) > 1e6


def test_theory_jit_vmap_grad():
    sw = jnp.array([0.8, 1.5, 2.5])
    sb = jnp.array([0.0, 0.05, 0.3])
    batched = jax.jit(jax.vmap(lambda w, b: signal.chi1("tanh", w, b)))(sw, sb)
    looped = [float(signal.chi1("tanh", float(w), float(b))) for w, b in zip(sw, sb, strict=True)]
    np.testing.assert_allclose(batched, looped, rtol=1e-6)
    mf = jax.vmap(lambda w: signal.mean_field("erf", w, 0.1))(sw)
    assert mf.xi_c.shape == (3,)
    # A callable activation, and gradients through the fixed point.
    g = jax.grad(lambda w: signal.chi1(lambda u: jnp.tanh(u), w, 0.05))(1.5)
    eps = 1e-2
    fd = (signal.chi1("tanh", 1.5 + eps, 0.05) - signal.chi1("tanh", 1.5 - eps, 0.05)) / (2 * eps)
    assert float(g) == pytest.approx(float(fd), rel=1e-2)


def test_chaotic_fixed_point_gradients_match_finite_differences(x64):
    # c* in the chaotic phase comes from bisection, which alone has no derivative; c*, χ_c
    # and ξ_c carry the implicit-function one (zero before: d c*/dσ_w² = 0, not −0.214).
    for sb in (0.05, 0.0):  # c* = 0 for odd φ without bias, but it still moves with σ
        for name in ("c_star", "chi_c", "xi_c"):
            f = lambda w, name=name, sb=sb: getattr(signal.mean_field("tanh", w, sb), name)
            eps = 1e-5
            fd = (f(3.0 + eps) - f(3.0 - eps)) / (2 * eps)
            assert float(jax.grad(f)(3.0)) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
    f = lambda b: signal.mean_field("tanh", 3.0, b).c_star
    fd = (f(0.05 + 1e-5) - f(0.05 - 1e-5)) / 2e-5
    assert float(jax.grad(f)(0.05)) == pytest.approx(float(fd), rel=1e-6)


def test_theory_bad_input():
    with pytest.raises(ValueError, match="activation"):
        signal.chi1("nope", 1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_w2"):
        signal.q_star("tanh", -1.0, 0.0)
    with pytest.raises(ValueError, match="sigma_b2"):
        signal.critical_sigma_w2("tanh", -0.1)
    with pytest.raises(ValueError, match="num_iters"):
        signal.correlation_map("tanh", 1.0, 0.0, 0.5, num_iters=0)
    # Concrete arrays are checked like Python floats (a negative σ_w² gave χ₁ = −1).
    with pytest.raises(ValueError, match="sigma_w2: expected a non-negative"):
        signal.chi1("tanh", jnp.asarray(-1.0), 0.0)
    with pytest.raises(ValueError, match="sigma_b2: expected a non-negative"):
        signal.mean_field("tanh", 1.0, np.asarray(-0.5))
    # σ arrays are vmap's job; they used to fail deep inside lax.scan with a TypeError.
    with pytest.raises(ValueError, match="sigma_w2: expected a scalar"):
        signal.chi1("tanh", jnp.array([1.0, 2.0]), 0.0)
    with pytest.raises(ValueError, match="sigma_b2: expected a scalar"):
        signal.critical_sigma_w2("tanh", jnp.array([0.0, 0.05]))
    # The quadrature clips c to [-1, 1]: c = 1.5 was silently read as 1.
    with pytest.raises(ValueError, match=r"c: expected correlations in \[-1, 1\]"):
        signal.correlation_map("tanh", 2.0, 0.1, 1.5)
    with pytest.raises(ValueError, match="q: expected a non-negative"):
        signal.correlation_map("tanh", 2.0, 0.1, 0.5, q=-1.0)
    # The length map is elementwise: arrays of σ's broadcast.
    np.testing.assert_allclose(
        signal.length_map("relu", jnp.array([1.0, 2.0]), 0.5, 3.0), [2.0, 3.5], rtol=1e-6
    )


# ---------------------------------------------------------------------------------------------
# Measurement: exact plumbing
# ---------------------------------------------------------------------------------------------


def test_propagation_matches_manual_forward_backward():
    model = ll.models.mlp([5, 7, 6, 3], activation="tanh", init=ll.init.gaussian(1.5, 0.1))
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    cot = jax.random.normal(jax.random.key(2), (4, 3))
    p = signal.propagation(model, params, x, cotangent=cot)
    assert p.names == ("input", "Dense_0", "Dense_1", "Dense_2")

    def layers(eps):
        h, out = x, [x]
        for i in range(3):
            d = params[f"Dense_{i}"]
            h = h @ d["kernel"] + d["bias"][None] + eps[i]
            out.append(h)
            h = jnp.tanh(h)
        return out

    eps0 = [jnp.zeros((4, 7)), jnp.zeros((4, 6)), jnp.zeros((4, 3))]
    acts = jax.jit(layers)(eps0)
    grads = jax.jit(jax.grad(lambda e: jnp.sum(layers(e)[-1] * cot)))(eps0)
    gx = jax.jit(jax.grad(lambda xx: jnp.sum(model.apply(params, xx) * cot)))(x)
    for i, a in enumerate(acts):
        n = a / jnp.linalg.norm(a, axis=1, keepdims=True)
        cos = n @ n.T
        np.testing.assert_allclose(p.mean[i], a.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(p.second_moment[i], jnp.mean(a**2), rtol=1e-5)
        np.testing.assert_allclose(p.variance[i], a.var(), rtol=1e-4)
        np.testing.assert_allclose(p.cosine[i], cos[np.triu_indices(4, 1)].mean(), rtol=1e-5)
        s = np.linalg.svd(np.asarray(a - a.mean(0, keepdims=True)), compute_uv=False)
        prob = s / s.sum()
        np.testing.assert_allclose(
            p.effective_rank[i], np.exp(-np.sum(prob * np.log(prob))), rtol=1e-4
        )
        g = gx if i == 0 else grads[i - 1]
        np.testing.assert_allclose(p.grad_second_moment[i], jnp.mean(g**2), rtol=1e-5)
    # Per-pair cosines.
    q = signal.propagation(model, params, x, pairs=[[0, 1], [2, 3]], cotangent=cot)
    assert q.cosine.shape == (4, 2)
    a = acts[2]
    np.testing.assert_allclose(
        q.cosine[2, 1], a[2] @ a[3] / jnp.linalg.norm(a[2]) / jnp.linalg.norm(a[3]), rtol=1e-5
    )


def test_effective_rank():
    s = jnp.array([3.0, 1.0, 0.0])
    a = jnp.concatenate([jnp.diag(s), -jnp.diag(s)])  # centred already, singular values √2 s
    p = np.array([0.75, 0.25])
    assert float(signal.effective_rank(a)) == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert float(signal.effective_rank(jnp.ones((4, 3)))) == 0.0
    with pytest.raises(ValueError, match="a:"):
        signal.effective_rank(jnp.ones(3))


def test_propagation_bad_input():
    model = ll.models.mlp([3, 4, 2])
    params = model.init(jax.random.key(0))
    bare = ll.models.Model(model.init, model.apply)
    with pytest.raises(ValueError, match="model"):
        signal.propagation(bare, params, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="pairs"):
        signal.propagation(model, params, jnp.ones((2, 3)), pairs=[0, 1])
    # Out-of-range indices would be clamped by the gather: [[0, 2]] would report (0, 1).
    for bad in ([[0, 2]], [[-1, 0]]):
        with pytest.raises(ValueError, match=r"pairs: expected example indices in \[0, 2\)"):
            signal.propagation(model, params, jnp.ones((2, 3)), pairs=bad)
    with pytest.raises(ValueError, match="cotangent"):
        signal.propagation(model, params, jnp.ones((2, 3)), cotangent=jnp.ones((2, 3)))


def test_jacobian_spectrum_dynamical_isometry():
    # Deep orthogonal linear net: J = W_L ... W_1 is orthogonal, all singular values 1.
    model = ll.models.mlp([16] * 9, activation="identity", bias=False, init="orthogonal")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 16))
    s = signal.jacobian_spectrum(model, params, x)
    assert s.shape == (3, 16)
    np.testing.assert_allclose(s, 1.0, atol=1e-5)
    # A Gaussian linear net of the same depth is far from isometric.
    gauss = ll.models.mlp([16] * 9, activation="identity", bias=False, init="lecun")
    sg = signal.jacobian_spectrum(gauss, gauss.init(jax.random.key(0)), x)
    assert float(sg[0, 0] / sg[0, -1]) > 100
    # Nonlinear, rectangular: equals the SVD of the dense Jacobian.
    model = ll.models.mlp([6, 9, 4], activation="tanh")
    params = model.init(jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (2, 6))
    s = signal.jacobian_spectrum(model, params, x)
    jac = jax.jacobian(lambda v: model.apply(params, v[None])[0])(x[1])
    np.testing.assert_allclose(s[1], np.linalg.svd(np.asarray(jac), compute_uv=False), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Measurement against the theory at finite width (stochastic: judged by standard errors)
# ---------------------------------------------------------------------------------------------


def _mean_and_stderr(samples):
    samples = np.asarray(samples, np.float64)
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(samples.shape[0])


def test_wide_tanh_network_follows_mean_field():
    sw, sb, width, depth, seeds = 4.0, 0.05, 512, 8, 16
    model = ll.models.mlp([width] * (depth + 1), activation="tanh", init=ll.init.gaussian(sw, sb))
    qs = float(signal.q_star("tanh", sw, sb))
    # Two inputs of second moment (q* − σ_b²)/σ_w², so q¹ = q* and q stays at q* throughout.
    x = jax.random.normal(jax.random.key(0), (2, width))
    x0 = x[0] / jnp.linalg.norm(x[0])
    x1 = x[1] - (x[1] @ x0) * x0
    x1 = x1 / jnp.linalg.norm(x1)
    x = jnp.stack([x0, 0.95 * x0 + math.sqrt(1 - 0.95**2) * x1])  # cosine 0.95
    x = x * math.sqrt(width * (qs - sb) / sw)
    c1 = (sw * float(x[0] @ x[1]) / width + sb) / qs
    c_theory = np.concatenate(
        [[c1], signal.correlation_map("tanh", sw, sb, c1, num_iters=depth - 1, trajectory=True)]
    )

    keys = jax.random.split(jax.random.key(1), seeds)
    params = jax.vmap(model.init)(keys)
    measure = lambda p, k: signal.propagation(model, p, x, pairs=[[0, 1]], key=k)
    prop = jax.jit(jax.vmap(measure))(params, jax.random.split(jax.random.key(2), seeds))
    q_mean, q_err = _mean_and_stderr(prop.second_moment[:, 1:])
    c_mean, c_err = _mean_and_stderr(prop.cosine[:, 1:, 0])
    assert np.all(np.abs(q_mean - qs) < 4 * q_err + 2e-3 * qs), (q_mean, q_err, qs)
    assert np.all(np.abs(c_mean - c_theory) < 4 * c_err + 2e-3), (c_mean, c_err, c_theory)
    assert c_theory[-1] < c_theory[0] - 0.15  # chaotic: the pair decorrelates
    # Backward: each hidden layer multiplies the gradient second moment by χ₁.
    g = prop.grad_second_moment[:, 1:]
    ratio_mean, ratio_err = _mean_and_stderr((g[:, :-2] / g[:, 1:-1]).mean(1))
    chi = float(signal.chi1("tanh", sw, sb))
    assert abs(ratio_mean - chi) < 4 * ratio_err + 2e-3, (ratio_mean, ratio_err, chi)


def test_rank_collapse_and_batchnorm():
    # Deep ReLU nets map all inputs towards one direction (cosine → 1, effective rank → 1);
    # BatchNorm prevents it (Daneshmand et al. 2020, arXiv:2003.01652).
    x = jax.random.normal(jax.random.key(1), (32, 32))
    ranks, cosines = {}, {}
    for norm in (None, "batch"):
        model = ll.models.mlp([32] * 41, activation="relu", norm=norm, bias=False)
        p = signal.propagation(model, model.init(jax.random.key(0)), x)
        ranks[norm], cosines[norm] = float(p.effective_rank[-1]), float(p.cosine[-1])
        assert float(p.effective_rank[1]) > 15
    assert ranks[None] < 2 and cosines[None] > 0.99
    assert ranks["batch"] > 8 and cosines["batch"] < 0.5


# ---------------------------------------------------------------------------------------------
# Residual networks
# ---------------------------------------------------------------------------------------------


class _Block(nn.Module):
    """h ← h + α W₂ relu(W₁ h): He first layer, LeCun second, so E‖branch‖² = ‖h‖²."""

    width: int
    alpha: float

    @nn.compact
    def __call__(self, h):
        he = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        lecun = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        z = nn.Dense(self.width, use_bias=False, kernel_init=he)(h)
        z = nn.Dense(self.width, use_bias=False, kernel_init=lecun)(jax.nn.relu(z))
        return h + self.alpha * z


class _ResidualNet(nn.Module):
    width: int
    depth: int
    alpha: float

    @nn.compact
    def __call__(self, x):
        lecun = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        h = nn.Dense(self.width, use_bias=False, kernel_init=lecun, name="embed")(x)
        for i in range(self.depth):
            h = _Block(self.width, self.alpha, name=f"block_{i}")(h)
        return h


def _growth(model, seeds, width, key=0):
    """q_L / q_0 per seed (q_0 after the embedding), for a batch of 4 inputs."""
    x = jax.random.normal(jax.random.key(key), (4, width))
    params = jax.vmap(model.init)(jax.random.split(jax.random.key(key + 1), seeds))
    prop = jax.jit(jax.vmap(lambda p: signal.propagation(model, p, x)))(params)
    return prop, np.asarray(prop.second_moment[:, -1] / prop.second_moment[:, 1])


@pytest.mark.parametrize("scale", ["one", "1/sqrt(L)"])
def test_residual_variance_growth(scale):
    width, depth, seeds = 256, 12, 32
    alpha = 1.0 if scale == "one" else 1 / math.sqrt(depth)
    model = ll.models.wrap(_ResidualNet(width, depth, alpha), (width,))
    prop, ratio = _growth(model, seeds, width)
    assert prop.names[1] == "embed" and prop.names[-1] == f"block_{depth - 1}"
    # E[‖h + αf(h)‖² | h] = (1 + α²)‖h‖² exactly (the cross term has mean zero), at any width.
    want = (1 + alpha**2) ** depth
    mean, err = _mean_and_stderr(ratio)
    assert abs(mean - want) < 4 * err, (mean, err, want)
    if scale == "1/sqrt(L)":
        assert want < math.e  # (1 + 1/L)^L stays below e at every depth
    else:
        assert want == 2.0**depth


def test_resmlp_depth_scaled_zero_branch_and_normalised():
    width, depth, seeds = 128, 6, 32
    # lljax.models.resmlp, He branches Dense→relu→Dense: E‖branch‖² = 2‖h‖², so each block
    # multiplies q by 1 + 2α²; depth_scaled α = 1/√L keeps (1 + 2/L)^L < e².
    model = ll.models.resmlp(
        width, depth, in_dim=width, out_dim=width, init="depth_scaled", branch_layers=2, bias=False
    )
    prop, _ = _growth(model, seeds, width)
    assert prop.names[1] == "embed" and prop.names[-1] == "head"
    ratio = np.asarray(prop.second_moment[:, -2] / prop.second_moment[:, 1])
    mean, err = _mean_and_stderr(ratio)
    want = (1 + 2 / depth) ** depth
    assert abs(mean - want) < 4 * err, (mean, err, want)
    # Zero-initialised branches (SkipInit/ReZero): every block is the identity at init.
    model = ll.models.resmlp(width, depth, in_dim=width, out_dim=3, init="zero_branch")
    prop, _ = _growth(model, 2, width)
    blocks = prop.second_moment[:, 2:-1]
    np.testing.assert_allclose(
        blocks, prop.second_moment[:, 1:2] * jnp.ones_like(blocks), rtol=1e-6
    )
    # Post-LayerNorm: every block output has per-example mean 0 and second moment 1 − O(eps).
    model = ll.models.resmlp(
        width, depth, in_dim=width, out_dim=3, norm="layer", norm_position="post"
    )
    x = jax.random.normal(jax.random.key(0), (4, width))
    p = signal.propagation(model, model.init(jax.random.key(1)), x)
    blocks = [i for i, n in enumerate(p.names) if n.startswith("block_")]
    assert len(blocks) == depth
    np.testing.assert_allclose(p.second_moment[jnp.array(blocks)], 1.0, rtol=1e-4)
    np.testing.assert_allclose(p.mean[jnp.array(blocks)], 0.0, atol=1e-5)


def test_length_map_broadcasts_over_q_and_critical_xi_c_is_infinite(x64):
    q = jnp.linspace(0.5, 3.0, 180)  # as many q's as quadrature nodes: no silent sum
    np.testing.assert_allclose(signal.length_map("relu", 2.0, 0.0, q), q, rtol=1e-12)
    assert signal.length_map("tanh", 1.5, 0.1, jnp.array([1.0, 3.0])).shape == (2,)
    # On the critical line χ_c = χ₁ = 1 to rounding: ξ_c = inf, not ~1/eps.
    for act, sb2 in (("tanh", 0.05), ("erf", 0.1)):
        w = signal.critical_sigma_w2(act, sb2)
        assert np.isinf(float(signal.mean_field(act, w, sb2).xi_c)), act
