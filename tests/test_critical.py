"""Tests for lljax.critical: exact linear-autoencoder critical points, the saddle finder, and
escape times against the quadratic-saddle law."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lljax import critical

# ---------------------------------------------------------------------------------------------
# Linear autoencoder (Baldi & Hornik 1989)
# ---------------------------------------------------------------------------------------------

N_IN, K = 4, 2


def _autoencoder_problem():
    x = jax.random.normal(jax.random.key(0), (64, N_IN)) * jnp.array([2.0, 1.5, 1.0, 0.5])[None]
    cov = x.T @ x / x.shape[0]
    lam, u = jnp.linalg.eigh(cov)
    lam, u = lam[::-1], u[:, ::-1]  # descending

    def loss_fn(p, batch):
        recon = batch @ p["A"].T @ p["B"].T
        return 0.5 * jnp.mean(jnp.sum(jnp.square(batch - recon), axis=1))

    return x, lam, u, loss_fn


def test_linear_autoencoder_closed_form(x64):
    x, lam, u, loss_fn = _autoencoder_problem()
    theory = critical.linear_autoencoder_critical_points(np.asarray(lam), K)
    assert len(theory) == math.comb(N_IN, K)
    assert [cp.index for cp in theory] == [0, 1, 2, 2, 3, 4]
    for cp in theory:
        ui = u[:, jnp.array(cp.subset)]
        got = critical.classify(loss_fn, {"A": ui.T, "B": ui}, x)
        assert float(got.grad_norm) < 1e-12
        assert float(got.loss) == pytest.approx(cp.loss, rel=1e-12)
        np.testing.assert_allclose(got.eigenvalues, cp.eigenvalues, atol=1e-11)
        assert int(got.index) == cp.index
        assert float(got.negative_fraction) == pytest.approx(cp.index / (2 * N_IN * K))
    # The loss is the sum of the discarded eigenvalues: the top-k subset is the minimum.
    assert theory[0].subset == (0, 1) and theory[0].loss == min(cp.loss for cp in theory)


def test_find_critical_point_reaches_every_saddle(x64):
    x, lam, u, loss_fn = _autoencoder_problem()
    theory = critical.linear_autoencoder_critical_points(np.asarray(lam), K)
    starts = []
    for i, cp in enumerate(theory):
        ui = u[:, jnp.array(cp.subset)]
        # A point on the GL(k) orbit (A = C U_Iᵀ, B = U_I C⁻¹), then perturbed.
        c = jnp.eye(K) + 0.3 * jax.random.normal(jax.random.key(10 + i), (K, K))
        p = {"A": c @ ui.T, "B": ui @ jnp.linalg.inv(c)}
        noise = jax.random.normal(jax.random.key(20 + i), (2, N_IN, K)) * 0.03
        starts.append({"A": p["A"] + noise[0].T, "B": p["B"] + noise[1]})
    starts = jax.tree.map(lambda *a: jnp.stack(a), *starts)
    find = jax.jit(jax.vmap(lambda p: critical.find_critical_point(loss_fn, p, x, num_steps=40)))
    found = find(starts)
    np.testing.assert_array_less(np.asarray(found.grad_norm), 1e-10)
    np.testing.assert_allclose(found.loss, [cp.loss for cp in theory], rtol=1e-9)
    np.testing.assert_array_equal(found.index, [cp.index for cp in theory])
    # Gradient descent from the same starts leaves every saddle (loss drops well below it).
    grad = jax.grad(loss_fn)

    def gd(p):
        step = lambda p, _: (jax.tree.map(lambda a, g: a - 0.1 * g, p, grad(p, x)), None)
        return loss_fn(jax.lax.scan(step, p, None, length=2000)[0], x)

    final = jax.jit(jax.vmap(gd))(starts)
    np.testing.assert_allclose(final, theory[0].loss, rtol=1e-3)
    assert all(cp.loss > theory[0].loss + 0.1 for cp in theory[1:])


def test_classify_and_finder_contracts():
    loss_fn = lambda p, b: jnp.sum(jnp.cos(p * b))
    p = jnp.array([0.2, 2.9, -3.0])
    b = jnp.ones(3)
    cp = critical.find_critical_point(loss_fn, p, b)
    cpj = jax.jit(lambda q: critical.find_critical_point(loss_fn, q, b))(p)
    np.testing.assert_allclose(cp.params, [0.0, math.pi, -math.pi], atol=1e-5)
    np.testing.assert_allclose(cpj.params, cp.params, atol=1e-6)
    assert int(cp.index) == 1 and cp.eigenvalues.shape == (3,)
    assert int(critical.classify(loss_fn, jnp.zeros(3), b).index) == 3  # the maximum
    with pytest.raises(ValueError, match="num_steps"):
        critical.find_critical_point(loss_fn, p, b, num_steps=0)
    with pytest.raises(ValueError, match="tol"):  # −2 counted the minimum's +1s as negative
        critical.classify(lambda p, b: 0.5 * jnp.sum(p**2), jnp.zeros(2), None, tol=-2.0)
    stay = lambda x, k: x
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="radius"):  # a walker that never moved "escaped"
        critical.escape_times(stay, jnp.zeros(2), keys, num_steps=5, radius=-1.0)
    for steps in (-1, 2.5):
        with pytest.raises(ValueError, match="num_steps"):
            critical.escape_times(stay, jnp.zeros(2), keys, num_steps=steps, radius=1.0)
    with pytest.raises(ValueError, match="k"):
        critical.linear_autoencoder_critical_points([2.0, 1.0], 2)
    with pytest.raises(ValueError, match="eigenvalues"):
        critical.linear_autoencoder_critical_points(3.0, 1)
    # The index does not depend on the loss's scale: a saddle of curvature ±2e-6 is one.
    tiny = lambda p, b: 1e-6 * (p[0] ** 2 - p[1] ** 2)
    assert int(critical.classify(tiny, jnp.zeros(2), None).index) == 1
    lam = jnp.concatenate([jnp.full(5, -0.004), jnp.linspace(0.01, 0.5, 495)])
    quad = lambda p, b: 0.5 * jnp.sum(lam * p**2)
    assert int(critical.classify(quad, jnp.zeros(500), None).index) == 5


# ---------------------------------------------------------------------------------------------
# Escape from a strict saddle: GD, perturbed GD, noisy GD and SGD, many seeds
# ---------------------------------------------------------------------------------------------

GAMMA, MU, LR, RADIUS = 1.0, 1.0, 0.1, 1.0
H = jnp.array([-GAMMA, MU])  # f(x) = ½ xᵀ diag(H) x, escape along e_0
E0 = jnp.array([1.0, 0.0])
SEEDS, STEPS = 4000, 200


def _escape(step_fn):
    keys = jax.random.split(jax.random.key(0), SEEDS)
    run = jax.jit(
        lambda k: critical.escape_times(
            step_fn, jnp.zeros(2), k, num_steps=STEPS, radius=RADIUS, direction=E0
        )
    )
    return np.asarray(run(keys))


def _expected_time(**noise):
    t = jnp.arange(4 * STEPS)
    cdf = critical.saddle_escape_cdf(t, curvature=GAMMA, learning_rate=LR, radius=RADIUS, **noise)
    return float(jnp.sum(1.0 - cdf))


def test_escape_cdf_at_small_and_zero_curvature():
    # float32: (1 + ηγ)² − 1 rounds to 0 once ηγ < 6e-8; the variance must tend to σ² t.
    kw = dict(learning_rate=1.0, radius=1.0, noise_std=0.1)
    t = 1000
    flat = math.erfc(1.0 / math.sqrt(2 * 0.01 * t))  # v_t = σ² t
    for gamma in (0.0, 1e-9, 1e-8):
        a2 = (1 + gamma) ** 2  # float64 reference
        v = 0.01 * t if gamma == 0 else 0.01 * (a2**t - 1) / (a2 - 1)
        want = math.erfc(1.0 / math.sqrt(2 * v))
        got = float(critical.saddle_escape_cdf(t, curvature=gamma, **kw))
        assert abs(got - want) < 1e-5 and abs(got - flat) < 1e-4, (gamma, got, want)
    # Overflowing growth is a certain escape, not NaN.
    big = critical.saddle_escape_cdf(
        1e6, curvature=1.0, learning_rate=0.1, radius=1.0, initial_std=1e-3, noise_std=0.0
    )
    assert float(big) == 1.0
    # Integer starts are walked in floating point.
    keys = jax.random.split(jax.random.key(0), 2)
    step = lambda x, key: x + 0.5 * x + 0.1
    tau = critical.escape_times(step, jnp.array([0, 0]), keys, num_steps=50, radius=1.0)
    assert np.all(np.isfinite(tau))


def test_gd_never_escapes_from_the_saddle():
    tau = _escape(lambda x, key: x - LR * H * x)
    assert np.all(np.isinf(tau))


def test_perturbed_gd_escape_time_distribution():
    r = 1e-3

    def pgd(x, key):  # Jin et al.: perturb when the gradient is small, then a GD step
        small = jnp.linalg.norm(H * x) <= 1e-8
        x = x + jnp.where(small, r, 0.0) * jax.random.normal(key, (2,))
        return x - LR * H * x

    tau = _escape(pgd)
    assert np.all(np.isfinite(tau))
    # Exact law: τ = first t with (1 + ηγ)^t r |ξ| ≥ R.
    for t in (40.0, 60.0, 80.0):
        p = float(
            critical.saddle_escape_cdf(
                t, curvature=GAMMA, learning_rate=LR, radius=RADIUS, initial_std=r
            )
        )
        emp = np.mean(tau <= t)
        assert abs(emp - p) < 4 * math.sqrt(p * (1 - p) / SEEDS) + 1e-3, (t, emp, p)
    mean, err = tau.mean(), tau.std(ddof=1) / math.sqrt(SEEDS)
    want = _expected_time(initial_std=r)
    assert abs(mean - want) < 4 * err, (mean, err, want)


def test_noisy_gd_and_sgd_escape_times():
    sigma = 1e-3

    def noisy_gd(x, key):
        return x - LR * H * x + sigma * jax.random.normal(key, (2,))

    tau = _escape(noisy_gd)
    want = _expected_time(noise_std=sigma)
    mean, err = tau.mean(), tau.std(ddof=1) / math.sqrt(SEEDS)
    assert abs(mean - want) < 4 * err, (mean, err, want)

    # SGD on L(x) = mean_i ½ (x − a_i)ᵀ diag(H) (x − a_i) with centred a_i: the minibatch
    # gradient is diag(H)(x − ā_B), so along e_0 the step noise has std η γ s / √b.
    batch_size, s = 4, 0.01 * 2
    a = jax.random.normal(jax.random.key(5), (256, 2))
    a = a - a.mean(0, keepdims=True)
    a = a / jnp.sqrt(jnp.mean(jnp.square(a), axis=0, keepdims=True)) * s
    loss = lambda x, batch: 0.5 * jnp.mean(jnp.sum(H[None] * jnp.square(x[None] - batch), axis=1))

    def sgd(x, key):
        idx = jax.random.randint(key, (batch_size,), 0, a.shape[0])
        return x - LR * jax.grad(loss)(x, a[idx])

    tau_sgd = _escape(sgd)
    want = _expected_time(noise_std=LR * GAMMA * s / math.sqrt(batch_size))
    mean, err = tau_sgd.mean(), tau_sgd.std(ddof=1) / math.sqrt(SEEDS)
    assert abs(mean - want) < 4 * err, (mean, err, want)
    # Same noise level per step, so the two escape-time distributions agree.
    assert abs(tau_sgd.mean() - tau.mean()) < 4 * math.hypot(err, tau.std() / math.sqrt(SEEDS))


def test_concrete_arrays_are_checked_too():
    with pytest.raises(ValueError, match="curvature"):
        critical.saddle_escape_cdf(
            10, curvature=-20.0, learning_rate=0.1, radius=1.0, noise_std=0.1
        )
    with pytest.raises(ValueError, match="damping"):
        critical.find_critical_point(
            lambda p, b: p[0] ** 2 - p[1] ** 2, jnp.array([0.3, 0.2]), None, damping=jnp.array(0.0)
        )
    # Traced values (sweeps) pass: the check is for concrete inputs only.
    cdf = jax.vmap(
        lambda g: critical.saddle_escape_cdf(
            5, curvature=g, learning_rate=0.1, radius=1.0, noise_std=0.1
        )
    )
    assert cdf(jnp.array([0.5, 1.0])).shape == (2,)
