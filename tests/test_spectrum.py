"""Tests for lljax.spectrum against exact references (dense eigh, closed forms)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import lljax as ll
from lljax import spectrum
from lljax.curvature import Operator, from_matrix

# ----------------------------------------------------------------------------- helpers


def _orthogonal(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q


def _with_spectrum(eigenvalues, seed=0, dtype=jnp.float32):
    """A symmetric matrix with the given eigenvalues in a random basis (built in float64)."""
    lam = np.asarray(eigenvalues, np.float64)
    q = _orthogonal(lam.size, seed)
    return jnp.asarray((q * lam) @ q.T, dtype)


def _test_spectrum(n=120, seed=0):
    """Negative and positive bulk plus separated outliers at both ends."""
    rng = np.random.default_rng(seed)
    bulk = rng.uniform(-1.0, 2.0, n - 8)
    return np.concatenate([[-9.0, -7.5, -6.0, -5.0], bulk, [5.5, 7.0, 8.0, 10.0]])


def _exact(a):
    return np.linalg.eigvalsh(np.asarray(a, np.float64))


def _wanted(ex, which, k):
    if which == "LA":
        return ex[::-1][:k]
    if which == "SA":
        return ex[:k]
    return ex[np.argsort(-np.abs(ex))][:k]


@functools.partial(jax.jit, static_argnames=("k", "num_steps", "tol", "max_restarts"))
def _eigsh_all(a, key, k=4, num_steps=None, tol=None, max_restarts=100):
    op = from_matrix(a)
    return {
        w: spectrum.eigsh(
            op, k, w, key=key, num_steps=num_steps, tol=tol, max_restarts=max_restarts
        )
        for w in ("LA", "SA", "LM")
    }


def _mlp_problem(activation, dtype, seed=0):
    model = ll.models.mlp([6, 10, 8, 3], activation=activation, dtype=dtype)
    params = model.init(jax.random.key(seed))
    x = jax.random.normal(jax.random.key(seed + 1), (24, 6), dtype)
    y = jax.random.randint(jax.random.key(seed + 2), (24,), 0, 3)
    return model, params, (x, y)


def _hvp_operator(model, params, batch):
    """Forward-over-reverse Hessian of the cross-entropy on raveled params."""
    flat, unravel = ravel_pytree(params)
    loss_fn = ll.losses.cross_entropy(model)
    grad = jax.grad(lambda f: loss_fn(unravel(f), batch))
    return Operator(lambda v: jax.jvp(grad, (flat,), (v,))[1], flat.size, flat.dtype, unravel)


@functools.partial(jax.jit, static_argnames=("model", "k"))
def _top_bottom(model, params, batch, key, k=4):
    op = _hvp_operator(model, params, batch)
    return spectrum.eigsh(op, k, "LA", key=key), spectrum.eigsh(op, k, "SA", key=key)


def _w1(x1, w1, x2, w2):
    """Wasserstein-1 distance between two weighted point sets on the line."""
    x = np.concatenate([x1, x2])
    order = np.argsort(x)
    f1 = np.cumsum(np.concatenate([w1, np.zeros_like(w2)])[order])
    f2 = np.cumsum(np.concatenate([np.zeros_like(w1), w2])[order])
    return float(np.sum(np.abs(f1 - f2)[:-1] * np.diff(x[order])))


# ----------------------------------------------------------------------------- lanczos


def test_lanczos_basis_orthonormal_and_tridiagonalises(x64):
    a = _with_spectrum(_test_spectrum(80), dtype=jnp.float64)
    res = jax.jit(
        lambda a: spectrum.lanczos(
            from_matrix(a), num_steps=30, key=jax.random.key(0), return_basis=True
        )
    )(a)
    q = np.asarray(res.basis)
    assert res.alpha.dtype == jnp.float64 and not bool(res.breakdown)
    assert np.abs(q @ q.T - np.eye(30)).max() < 1e-13
    t = np.diag(res.alpha) + np.diag(res.beta[:-1], 1) + np.diag(res.beta[:-1], -1)
    np.testing.assert_allclose(q @ np.asarray(a) @ q.T, t, atol=1e-12)
    # Ritz bounds bound the true residuals.
    r = spectrum.ritz(res)
    y = np.asarray(r.vectors)
    true = np.linalg.norm(np.asarray(a) @ y - y * np.asarray(r.values), axis=0)
    assert np.all(true <= np.asarray(r.bounds) + 1e-11)
    np.testing.assert_allclose(np.asarray(r.weights).sum(), 1.0, rtol=1e-12)


def test_lanczos_float32_orthogonality_and_scalar_dtype():
    a = _with_spectrum(_test_spectrum(80))
    res = spectrum.lanczos(from_matrix(a), num_steps=40, key=jax.random.key(1), return_basis=True)
    q = np.asarray(res.basis, np.float64)
    assert res.alpha.dtype == jnp.float32
    assert np.abs(q @ q.T - np.eye(40)).max() < 2e-6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lanczos_orthogonal_on_hessian_like_spectrum_to_full_length(dtype, request):
    """Outliers 1e5 x the bulk, a 40-fold cluster, Lanczos run to the full dimension: the
    basis stays orthonormal to rounding and tridiagonalises A (breakdowns included), with
    the second Gram–Schmidt pass run only when the Kahan–Parlett test asks for it."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    rng = np.random.default_rng(0)
    lam = np.concatenate(
        [[3e3, 1e3, 4e2], rng.normal(0, 1e-2, 150), np.full(40, 0.5), rng.uniform(-1, 1, 7)]
    )
    a = _with_spectrum(lam, seed=1, dtype=jnp.dtype(dtype))
    res = spectrum.lanczos(
        from_matrix(a), num_steps=lam.size, key=jax.random.key(0), return_basis=True
    )
    q = np.asarray(res.basis, np.float64)
    eps = float(jnp.finfo(jnp.dtype(dtype)).eps)
    assert np.abs(q @ q.T - np.eye(lam.size)).max() < 10 * eps
    t = np.diag(res.alpha) + np.diag(res.beta[:-1], 1) + np.diag(res.beta[:-1], -1)
    err = np.abs(q @ np.asarray(a, np.float64) @ q.T - t).max()
    # Couplings below the breakdown tolerance 10·sqrt(m)·eps·‖A‖ are dropped from T.
    assert err < 2 * 10 * np.sqrt(lam.size) * eps * 3e3


def test_projection_batching_rule_equals_loop():
    """The Gram–Schmidt step's batching rule (second pass only when some member needs it)
    gives what each member alone gives, to rounding: basis and vectors batched, nested
    vmaps, and (exactly) a per-member step counter, the plain-vmap fallback."""
    q = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (50, 8)))[0].T
    basis = jnp.concatenate([q, jnp.zeros((2, 50))])
    # Row 0 of member 0 lies almost in the basis: its first pass cancels most of its norm.
    v = jax.random.normal(jax.random.key(1), (3, 2, 50)).at[0, 0].set(q[0] + 1e-3 * q[7])
    js = jnp.array([2, 5, 7])

    def one(b, v, j):
        return spectrum._project(b, v, j, jnp.float32)

    loop = jnp.stack([one(basis, v[i], js[i]) for i in range(3)])
    np.testing.assert_array_equal(jax.jit(jax.vmap(one, (None, 0, 0)))(basis, v, js), loop)
    both = jnp.stack([basis, basis, basis])
    fixed = jnp.stack([one(basis, v[i], 7) for i in range(3)])
    # Member 0 needs the second pass, so the others get one too: equal to rounding.
    np.testing.assert_allclose(jax.vmap(one, (0, 0, None))(both, v, 7), fixed, atol=1e-6)
    nested = jax.vmap(jax.vmap(one, (None, 0, None)), (None, None, 0))(basis, v, js)
    np.testing.assert_allclose(nested[2], fixed, atol=1e-6)
    assert np.abs(np.asarray(basis[:8]) @ np.asarray(fixed[0, 0])).max() < 1e-6


def test_lanczos_scalars_in_float64_for_float32_operator(x64):
    a = _with_spectrum(_test_spectrum(40), dtype=jnp.float32)
    res = spectrum.lanczos(from_matrix(a), num_steps=10, key=jax.random.key(1))
    assert res.alpha.dtype == jnp.float64 and res.beta.dtype == jnp.float64


def test_lanczos_without_reorthogonalisation_matches_moments():
    a = _with_spectrum(_test_spectrum(80))
    v0 = jnp.ones(80) / jnp.sqrt(80.0)
    full = spectrum.lanczos(from_matrix(a), num_steps=6, key=jax.random.key(0), v0=v0)
    local = spectrum.lanczos(
        from_matrix(a), num_steps=6, key=jax.random.key(0), v0=v0, reorthogonalize=False
    )
    # Few steps: both are exact Lanczos, so the tridiagonals agree.
    np.testing.assert_allclose(full.alpha, local.alpha, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full.beta, local.beta, rtol=1e-4, atol=1e-5)


def test_breakdown_with_few_distinct_eigenvalues_no_nan():
    lam = np.repeat([1.0, 2.0, 5.0], [50, 50, 20])
    a = _with_spectrum(lam, seed=3)
    res = spectrum.lanczos(from_matrix(a), num_steps=12, key=jax.random.key(0), return_basis=True)
    assert bool(res.breakdown) and int(res.num_valid) == 3 and int(res.num_breakdowns) >= 3
    assert np.all(np.isfinite(res.alpha)) and np.all(np.isfinite(res.beta))
    q = np.asarray(res.basis, np.float64)
    assert np.abs(q @ q.T - np.eye(12)).max() < 1e-5  # restarts stay orthogonal
    r = spectrum.ritz(res)
    dist = np.min(np.abs(np.asarray(r.values)[:, None] - np.array([1.0, 2.0, 5.0])), axis=1)
    assert dist.max() < 1e-4
    # Quadrature weights live on the first Krylov block only and still sum to one.
    np.testing.assert_allclose(np.asarray(r.weights).sum(), 1.0, rtol=1e-5)
    # eigsh finds the multiplicity through the restarts.
    top = spectrum.eigsh(from_matrix(a), k=3, key=jax.random.key(2))
    np.testing.assert_allclose(top.eigenvalues, [5.0, 5.0, 5.0], rtol=1e-5)
    d = spectrum.density(from_matrix(a), key=jax.random.key(3), num_probes=8, num_steps=10)
    assert np.all(np.isfinite(d.nodes)) and np.all(np.isfinite(d.weights))
    mass5 = np.sum(np.where(np.abs(np.asarray(d.nodes) - 5.0) < 1e-3, d.weights, 0.0), axis=1)
    assert abs(mass5.mean() - 20 / 120) < 4 * mass5.std(ddof=1) / np.sqrt(8) + 1e-3


def test_float32_bulk_below_a_large_outlier_is_resolved_and_bounds_stay_honest():
    # Trained networks' Hessians put outliers 10⁴–10⁶ × above the bulk. In float32 a bulk
    # 10⁵ × below the outlier has couplings ~40 eps‖A‖: real, not breakdowns. At 10⁶ it is
    # at the rounding floor (50 eps‖A‖ = 6 is eigsh's convergence floor), and the bounds,
    # which count the couplings breakdowns dropped, must still cover the errors.
    bulk = np.linspace(-0.5, 1.0, 199)
    for ratio in (1e5, 1e6):
        lam = np.concatenate([[ratio], bulk])
        a = _with_spectrum(lam, seed=4).astype(np.float32)
        op = from_matrix(jnp.asarray(a))
        res = spectrum.lanczos(op, num_steps=40, key=jax.random.key(0))
        bottom = spectrum.eigsh(op, k=3, which="SA", key=jax.random.key(0))
        err = np.abs(np.asarray(bottom.eigenvalues, np.float64) - bulk[:3])
        assert np.all(err <= np.asarray(bottom.bounds) + 1e-3), (ratio, err, bottom.bounds)
        if ratio == 1e5:
            assert int(res.num_breakdowns) == 0
            assert bool(np.all(bottom.converged)) and err.max() < 0.03
            nf = spectrum.negative_fraction(op, key=jax.random.key(1), num_probes=8, num_steps=40)
            exact = float(spectrum.exact_negative_fraction(op))
            # SLQ's quadrature resolves a step function to about one node (1/40).
            assert abs(float(nf.value) - exact) < 3 * float(nf.stderr) + 1 / 40


def test_half_precision_operators_run_their_krylov_algebra_in_float32():
    key = jax.random.key(0)
    for dt in (jnp.bfloat16, jnp.float16):
        op = from_matrix(jnp.diag(jnp.arange(1.0, 7.0)).astype(dt))
        ritz = spectrum.ritz(spectrum.lanczos(op, num_steps=6, key=key))
        assert ritz.values.dtype == jnp.float32
        np.testing.assert_allclose(ritz.values, np.arange(1.0, 7.0), rtol=1e-5)
    top = spectrum.eigsh(op, k=2, key=key, num_steps=6)
    np.testing.assert_allclose(top.eigenvalues, [6.0, 5.0], rtol=1e-5)
    assert float(spectrum.negative_fraction(op, key=key, num_probes=2, num_steps=6).value) == 0
    assert np.isfinite(float(spectrum.trace(op, key=key, num_probes=6, method="hutch++").value))
    # A bfloat16 network: the products in bfloat16, the eigenvalues to its precision.
    model = ll.models.mlp([3, 6, 2])
    p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), model.init(key))
    x, y = jax.random.normal(jax.random.key(1), (16, 3)), jnp.arange(16) % 2
    loss_fn = ll.losses.cross_entropy(model)
    h16 = ll.curvature.hessian(loss_fn, p16, (x.astype(jnp.bfloat16), y))
    top16 = spectrum.ritz(spectrum.lanczos(h16, num_steps=h16.size, key=key)).values[-1]
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p16)
    top32 = jnp.linalg.eigvalsh(ll.curvature.hessian(loss_fn, p32, (x, y)).dense())[-1]
    np.testing.assert_allclose(top16, top32, rtol=0.05)


def test_degenerate_operators_are_reported_not_hidden():
    # An exact zero coupling (an eigenvector as start, a zero operator) is a breakdown too.
    a = jnp.diag(jnp.arange(1.0, 7.0))
    for reorth in (True, False):
        r = spectrum.lanczos(
            lambda v: a @ v, 6, 4, jax.random.key(0), v0=jnp.eye(6)[0], reorthogonalize=reorth
        )
        assert bool(r.breakdown) and int(r.num_valid) == 1 and int(r.num_breakdowns) >= 1
    zero = from_matrix(jnp.zeros((6, 6)))
    r = spectrum.lanczos(zero, num_steps=3, key=jax.random.key(0))
    assert int(r.num_breakdowns) == 3 and int(r.num_valid) == 1
    # Papyan's window has width 0 there; the density is still a normalised peak.
    d = spectrum.density(zero, key=jax.random.key(1), num_probes=3, num_steps=4)
    grid = jnp.linspace(-1.0, 1.0, 2001)
    smooth = d.smooth(grid, preset="papyan")
    assert np.all(np.isfinite(smooth.density))
    with pytest.raises(ValueError, match="num_steps"):
        spectrum.density(zero, key=jax.random.key(1), num_probes=2, num_steps=1).sigma("papyan")
    # A zero product keeps a unit vector.
    p = spectrum.power_iteration(zero, key=jax.random.key(2))
    assert abs(float(jnp.linalg.norm(p.eigenvector)) - 1) < 1e-6
    # A NaN operator (a diverged model) has no saddle index.
    bad = from_matrix(-jnp.eye(6).at[2, 2].set(jnp.nan))
    est = spectrum.negative_fraction(bad, key=jax.random.key(3), num_probes=4, num_steps=4)
    assert np.isnan(float(est.value)) and np.isnan(float(spectrum.exact_negative_fraction(bad)))


def test_memory_budget_error_names_low_memory_path():
    a = _with_spectrum(_test_spectrum(40))
    with pytest.raises(ValueError, match="reorthogonalize=False"):
        spectrum.lanczos(from_matrix(a), num_steps=20, key=jax.random.key(0), memory_budget=1000)
    with pytest.raises(ValueError, match="num_steps"):
        spectrum.eigsh(from_matrix(a), k=2, key=jax.random.key(0), memory_budget=1000)
    # The O(size) path ignores the basis budget.
    res = spectrum.lanczos(
        from_matrix(a),
        num_steps=20,
        key=jax.random.key(0),
        memory_budget=1000,
        reorthogonalize=False,
    )
    assert res.basis is None and np.all(np.isfinite(res.alpha))


def test_float32_operators_of_any_scale():
    # Squares of float32 entries below ~1e-19 flush to zero and above ~1e19 overflow: a
    # Hessian of scale 1e-20 (a confident, correct classifier) looked like a zero matrix,
    # and eigsh returned half its eigenvalues flagged converged with zero residuals.
    rng = np.random.default_rng(0)
    n = 30
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.linspace(-1.0, 3.0, n)  # 8 of 30 negative
    key = jax.random.key(0)

    @jax.jit  # one program for every scale
    def measure(a):
        op = from_matrix(a)
        top = spectrum.eigsh(op, k=2, key=key)
        bottom = spectrum.eigsh(op, k=2, which="SA", block_size=2, key=key)
        f = spectrum.negative_fraction(op, key=key, num_probes=8, num_steps=n)
        p = spectrum.power_iteration(op, key=key, num_iters=2000, tol=1e-7)
        return top, bottom, f, p.eigenvalue

    fractions = []
    for scale in (1e-30, 1e-20, 1.0, 1e20, 1e30):
        top, bottom, f, p = measure(jnp.asarray((q * lam) @ q.T * scale, jnp.float32))
        np.testing.assert_allclose(top.eigenvalues / scale, lam[::-1][:2], rtol=1e-5)
        assert bool(jnp.all(top.converged))
        assert float(jnp.max(top.residuals)) < 1e-5 * scale and float(top.residuals[0]) > 0
        np.testing.assert_allclose(bottom.eigenvalues / scale, lam[:2], rtol=1e-5)
        assert abs(float(f.value) - 8 / 30) < 4 * float(f.stderr)
        fractions.append(float(f.value))  # the same probes see the same spectrum
        assert float(p) / scale == pytest.approx(3.0, rel=1e-3)
    np.testing.assert_allclose(fractions, fractions[2], rtol=1e-5)


def test_numpy_float64_matrices_run_and_are_judged_in_float32():
    # Without x64 a NumPy float64 matrix runs in float32; the zero-eigenvalue threshold
    # used float64's eps and counted 20 rounding-level zeros as negative (0.38, not 0.05).
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    lam = np.concatenate([[-1.0, -0.5], np.zeros(20), np.linspace(1, 3, 18)])
    a = (q * lam) @ q.T
    f = spectrum.negative_fraction(a, key=jax.random.key(0), num_probes=32, num_steps=40)
    assert abs(float(f.value) - 0.05) < 4 * float(f.stderr) + 1e-6


def test_bad_arguments_raise_clear_errors():
    op = from_matrix(jnp.eye(5))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="which"):
        spectrum.eigsh(op, k=2, which="BE", key=key)
    with pytest.raises(ValueError, match="k:"):
        spectrum.eigsh(op, k=0, key=key)
    with pytest.raises(ValueError, match="num_steps"):
        spectrum.lanczos(op, num_steps=6, key=key)
    with pytest.raises(ValueError, match="method"):
        spectrum.trace(op, key=key, method="exact")
    with pytest.raises(ValueError, match="sigma/preset"):
        spectrum.density(op, key=key, num_probes=2, num_steps=3).smooth()
    for sigma in (0.0, float("inf")):  # inf gave an all-NaN density
        with pytest.raises(ValueError, match="sigma: expected a finite kernel width > 0"):
            spectrum.density(op, key=key, num_probes=2, num_steps=3).smooth(sigma=sigma)
    for bad in (0, None, "key"):
        for call in (
            lambda k: spectrum.eigsh(op, k=2, key=k),
            lambda k: spectrum.trace(op, key=k),
            lambda k: spectrum.lanczos(op, num_steps=3, key=k),
        ):
            with pytest.raises(ValueError, match="key: expected a PRNG key"):
                call(bad)
    raw = jax.random.PRNGKey(0)  # raw uint32[2] keys still work
    assert spectrum.trace(op, key=raw, num_probes=4).value.shape == ()
    # Counts are integers, not silently truncated floats or booleans.
    for call, name in (
        (lambda: spectrum.eigsh(op, k=1.5, key=key), "k"),
        (lambda: spectrum.density(op, key=key, num_probes=2, num_steps=2.5), "num_steps"),
        (lambda: spectrum.density(op, key=key, num_probes=2, probe_batch_size=0), "probe_batch"),
        (lambda: spectrum.trace(op, key=key, num_probes=4, batch_size=0), "batch_size"),
        (lambda: spectrum.density(from_matrix(jnp.zeros((0, 0))), key=key), "op: .*size 0"),
        (lambda: spectrum.trace(op, key=key, num_probes=6.0, method="hutch++"), "num_probes"),
        (lambda: spectrum.diagonal(op, key=key, num_probes=4.0), "num_probes"),
        (lambda: spectrum.power_iteration(op, key=key, num_iters=2.5), "num_iters"),
        (lambda: spectrum.power_iteration(op, key=key, num_iters=-1), "num_iters"),
        (lambda: spectrum.eigsh(op, k=1, key=key, max_restarts=1.5), "max_restarts"),
        (lambda: spectrum.eigsh(op, k=1, key=key, tol=-1.0), "tol"),
        (lambda: spectrum.lanczos(op, 3, num_steps=2, key=key), "size: 3 differs"),
        # −1 would count every eigenvalue below +1 as negative.
        (lambda: spectrum.negative_fraction(op, key=key, num_steps=3, threshold=-1.0), "thresh"),
        # Lanczos on a non-symmetric matrix returned [5.24, −2.24] "converged" for [1, 2].
        (lambda: spectrum.eigsh(jnp.array([[1.0, 5.0], [0.0, 2.0]]), k=1, key=key), "symmetric"),
        (lambda: spectrum.eigsh(jnp.eye(3, dtype=jnp.int32), k=1, key=key), "floating-point"),
    ):
        with pytest.raises(ValueError, match=name):
            call()
    # One probe has no error bar: NaN, not a confident 0.
    one = spectrum.negative_fraction(op, key=key, num_probes=1, num_steps=3)
    assert np.isnan(float(one.stderr))


# ----------------------------------------------------------------------------- eigsh


def test_eigsh_random_matrix_float64(x64):
    a = _with_spectrum(_test_spectrum(), dtype=jnp.float64)
    ex = _exact(a)
    out = _eigsh_all(a, jax.random.key(0))
    for which, r in out.items():
        ref = _wanted(ex, which, 4)
        np.testing.assert_allclose(r.eigenvalues, ref, rtol=1e-8, err_msg=which)
        assert np.asarray(r.residuals).max() < 1e-8 * np.abs(ex).max(), which
        assert bool(np.all(r.converged))
        v = np.asarray(r.eigenvectors)
        np.testing.assert_allclose(np.abs(v.T @ v), np.eye(4), atol=1e-10)


def test_eigsh_random_matrix_float32():
    a = _with_spectrum(_test_spectrum())
    ex = _exact(a)
    out = _eigsh_all(a, jax.random.key(0))
    for which, r in out.items():
        ref = _wanted(ex, which, 4)
        np.testing.assert_allclose(r.eigenvalues, ref, rtol=1e-4, err_msg=which)
        assert np.asarray(r.residuals).max() < 1e-4 * np.abs(ex).max(), which


@pytest.mark.parametrize(
    "activation, dtype",
    [
        ("tanh", "float64"),
        ("relu", "float32"),
        pytest.param("relu", "float64", marks=pytest.mark.slow),
        pytest.param("tanh", "float32", marks=pytest.mark.slow),
    ],
)
def test_eigsh_mlp_hessian_top_and_bottom(activation, dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    dt = jnp.dtype(dtype)
    model, params, batch = _mlp_problem(activation, dt)
    dense = _hvp_operator(model, params, batch).dense()
    ex = _exact((dense + dense.T) / 2)
    assert ex[0] < 0 < ex[-1]  # a saddle: both ends are meaningful
    top, bottom = _top_bottom(model, params, batch, jax.random.key(7))
    rtol, rres = (1e-8, 1e-8) if dtype == "float64" else (1e-4, 1e-4)
    np.testing.assert_allclose(top.eigenvalues, ex[::-1][:4], rtol=rtol)
    np.testing.assert_allclose(bottom.eigenvalues, ex[:4], rtol=rtol)
    scale = np.abs(ex).max()
    assert np.asarray(top.residuals).max() < rres * scale
    assert np.asarray(bottom.residuals).max() < rres * scale


def _model_problem(name, dtype):
    """Small networks with normalisation (about 150-300 params), a batch of 16."""
    n, classes = 16, 3
    if name == "mlp_layernorm_tanh":
        model, shape = (
            ll.models.mlp([5, 8, 8, 3], activation="tanh", norm="layer", dtype=dtype),
            (5,),
        )
    elif name == "cnn_batchnorm_relu":
        model = ll.models.cnn((5, 5, 2), 3, channels=(3,), kernel_size=3, norm="batch", dtype=dtype)
        shape = (5, 5, 2)
    elif name == "resnet_batchnorm":
        model = ll.models.resnet((4, 4, 1), 3, stage_sizes=(1, 1), widths=(2, 3), dtype=dtype)
        shape = (4, 4, 1)
    else:  # transformer with LayerNorm on 3-token sequences
        model = ll.models.transformer(
            5, 3, num_classes=4, width=4, num_heads=2, mlp_width=8, dtype=dtype
        )
        x = jax.random.randint(jax.random.key(1), (n, 3), 0, 5)
        return (
            model,
            model.init(jax.random.key(0)),
            (x, jax.random.randint(jax.random.key(2), (n,), 0, 4)),
        )
    x = jax.random.normal(jax.random.key(1), (n, *shape), dtype)
    y = jax.random.randint(jax.random.key(2), (n,), 0, classes)
    return model, model.init(jax.random.key(0)), (x, y)


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("mlp_layernorm_tanh", "float64"),
        ("cnn_batchnorm_relu", "float64"),
        ("cnn_batchnorm_relu", "float32"),
        # The transformer cases are the slowest (30 s of compilation); CI runs them in its
        # slow step.
        pytest.param("transformer_layernorm", "float64", marks=pytest.mark.slow),
        pytest.param("resnet_batchnorm", "float64", marks=pytest.mark.slow),
        pytest.param("mlp_layernorm_tanh", "float32", marks=pytest.mark.slow),
        pytest.param("resnet_batchnorm", "float32", marks=pytest.mark.slow),
        pytest.param("transformer_layernorm", "float32", marks=pytest.mark.slow),
    ],
)
def test_eigsh_hessian_of_normalised_cnn_resnet_transformer(name, dtype, request):
    """Top-4 and bottom-4 Hessian eigenvalues against dense eigh: LayerNorm, BatchNorm with
    batch statistics (examples coupled), convolutions, residual blocks, attention."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    model, params, batch = _model_problem(name, jnp.dtype(dtype))
    dense = _hvp_operator(model, params, batch).dense()
    ex = _exact((dense + dense.T) / 2)
    assert ex[0] < 0 < ex[-1]
    top, bottom = _top_bottom(model, params, batch, jax.random.key(7))
    tol = 1e-8 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(top.eigenvalues, ex[::-1][:4], rtol=tol)
    np.testing.assert_allclose(bottom.eigenvalues, ex[:4], rtol=tol)
    scale = np.abs(ex).max()
    assert np.asarray(top.residuals).max() < tol * scale
    assert np.asarray(bottom.residuals).max() < tol * scale


def test_eigsh_tolerance_mode_restarts_until_converged(x64):
    a = _with_spectrum(_test_spectrum(), dtype=jnp.float64)
    ex = _exact(a)
    run = jax.jit(
        lambda a, restarts: spectrum.eigsh(
            from_matrix(a),
            3,
            "SA",
            key=jax.random.key(1),
            num_steps=10,
            tol=1e-10,
            max_restarts=restarts,
        )
    )
    fixed = run(a, 0)
    assert not bool(np.all(fixed.converged))  # ten steps are not enough ...
    r = run(a, 100)
    assert int(r.num_restarts) > 0 and bool(np.all(r.converged))  # ... restarts are
    assert np.all(np.asarray(r.residuals) <= 1e-9 * np.abs(np.asarray(r.eigenvalues)))
    np.testing.assert_allclose(r.eigenvalues, ex[:3], rtol=1e-10)
    assert int(r.num_matvecs) > 10


def test_eigsh_vmap_over_population_equals_loop():
    mats = jnp.stack([_with_spectrum(_test_spectrum(60, seed=s), seed=s) for s in range(3)])

    @jax.jit
    def top_bottom(a):
        op = from_matrix(a)
        return spectrum.eigsh(op, 2, "SA", key=jax.random.key(1), num_steps=12)

    batched = jax.vmap(top_bottom)(mats)
    restarts = []
    for i in range(3):
        one = top_bottom(mats[i])
        np.testing.assert_allclose(batched.eigenvalues[i], one.eigenvalues, rtol=1e-5)
        np.testing.assert_allclose(batched.residuals[i], one.residuals, atol=1e-4)
        restarts.append(int(one.num_restarts))
        assert int(batched.num_restarts[i]) == restarts[-1]
    assert max(restarts) > 0  # the batched while-loop really ran restarts


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_eigsh_block_size_finds_every_copy_of_a_repeated_eigenvalue(dtype, request):
    """A PSD matrix with a 17-fold zero eigenvalue (a GGN's null space in miniature): a
    single start vector's Krylov space holds one zero, so ``block_size=1`` returns the next
    distinct values in place of the other copies; a block of ``k`` holds ``k`` copies."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    lam = np.concatenate([np.zeros(17), np.linspace(1e-3, 1.0, 153)])
    a = _with_spectrum(lam, seed=4, dtype=dtype)
    single = spectrum.eigsh(from_matrix(a), 5, "SA", key=jax.random.key(0))
    assert np.asarray(single.eigenvalues).max() > 5e-4  # the documented failure
    r = jax.jit(
        lambda a: spectrum.eigsh(from_matrix(a), 5, "SA", key=jax.random.key(0), block_size=5)
    )(a)
    tol = 1e-8 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(r.eigenvalues, np.zeros(5), atol=tol)
    assert bool(np.all(r.converged)) and np.asarray(r.residuals).max() < tol
    v = np.asarray(r.eigenvectors, np.float64)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=10 * tol)  # five distinct copies


def test_eigsh_block_size_on_a_kronecker_hessian_block(x64):
    """The last layer's Hessian at uniform predictions is E[h hᵀ] ⊗ (I − 11ᵀ/C)/C: each
    eigenvalue of the features' second moment appears C − 1 = 9 times."""
    model = ll.models.mlp([6, 12, 10], activation="tanh", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    params["Dense_1"] = jax.tree.map(jnp.zeros_like, params["Dense_1"])
    x = jax.random.normal(jax.random.key(1), (32, 6), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (32,), 0, 10)
    full = ll.curvature.hessian(ll.losses.cross_entropy(model), params, (x, y))
    op = ll.curvature.restrict(full, params, "Dense_1")
    ex = _exact(op.dense())
    assert np.allclose(ex[::-1][:9], ex[-1], rtol=1e-10)  # nine copies of the top
    r = spectrum.eigsh(op, 11, key=jax.random.key(3), block_size=11)
    np.testing.assert_allclose(r.eigenvalues, ex[::-1][:11], atol=1e-8 * ex.max())
    assert np.asarray(r.residuals).max() < 1e-8 * ex.max()


def test_eigsh_block_size_on_a_generic_spectrum_with_restarts_and_vmap():
    """Blocks change nothing for distinct eigenvalues: dense ``eigh`` in float32, with thick
    restarts, also for a block that does not divide the basis, and vmap equals a loop."""
    mats = jnp.stack([_with_spectrum(_test_spectrum(90, seed=s), seed=s) for s in range(3)])

    @functools.partial(jax.jit, static_argnames=("b", "m"))
    def run(a, b, m):
        return spectrum.eigsh(
            from_matrix(a), 4, "SA", key=jax.random.key(1), num_steps=m, block_size=b
        )

    batched = jax.vmap(lambda a: run(a, 3, 15))(mats)  # blocks of 3 divide every extension
    for i in range(3):
        one = run(mats[i], 3, 15)
        np.testing.assert_allclose(one.eigenvalues, _exact(mats[i])[:4], rtol=1e-4)
        assert bool(np.all(one.converged)) and int(one.num_restarts) > 0
        np.testing.assert_allclose(batched.eigenvalues[i], one.eigenvalues, rtol=1e-5)
    odd = run(mats[0], 2, 13)  # 2 does not divide 13: one column at a time
    np.testing.assert_allclose(odd.eigenvalues, _exact(mats[0])[:4], rtol=1e-4)
    assert bool(np.all(odd.converged)) and int(odd.num_restarts) > 0
    op = from_matrix(mats[0])
    with pytest.raises(ValueError, match="block_size"):
        spectrum.eigsh(op, 2, key=jax.random.key(0), block_size=0)
    with pytest.raises(ValueError, match="k \\+ block_size \\+ 1"):
        spectrum.eigsh(op, 4, key=jax.random.key(0), block_size=6, num_steps=10)


def test_power_iteration_baseline():
    a = _with_spectrum(_test_spectrum(60))
    ex = _exact(a)
    r = spectrum.power_iteration(from_matrix(a), key=jax.random.key(0), num_iters=500, tol=1e-7)
    np.testing.assert_allclose(r.eigenvalue, ex[np.argmax(np.abs(ex))], rtol=1e-4)
    assert float(r.residual) < 1e-2 * abs(ex).max()
    loose = spectrum.power_iteration(from_matrix(a), key=jax.random.key(0), num_iters=3)
    assert int(loose.num_iters) == 3


# ----------------------------------------------------------------------------- estimators


def test_hutchinson_and_hutchpp_within_error_bars_and_hutchpp_better():
    # Low-rank dominated: 10 large eigenvalues over a small bulk.
    lam = np.concatenate([np.geomspace(100.0, 10.0, 10), np.full(290, 0.1)])
    op = from_matrix(_with_spectrum(lam, seed=5))
    exact = lam.sum()
    keys = jax.random.split(jax.random.key(0), 16)
    hutch = jax.vmap(lambda k: spectrum.trace(op, key=k, num_probes=60))(keys)
    hpp = jax.vmap(lambda k: spectrum.trace(op, key=k, num_probes=60, method="hutch++"))(keys)
    for est in (hutch, hpp):
        z = np.abs(np.asarray(est.value) - exact) / np.asarray(est.stderr)
        assert np.mean(z <= 3.0) >= 14 / 16
    rms = lambda est: np.sqrt(np.mean((np.asarray(est.value) - exact) ** 2))
    assert rms(hpp) < rms(hutch) / 5
    assert np.mean(hpp.stderr) < np.mean(hutch.stderr) / 5


def test_diagonal_within_error_bars():
    a = _with_spectrum(_test_spectrum(50), seed=2)
    est = spectrum.diagonal(from_matrix(a), key=jax.random.key(0), num_probes=400)
    z = np.abs(np.asarray(est.value) - np.diag(np.asarray(a))) / np.asarray(est.stderr)
    assert np.mean(z <= 3.0) >= 0.94 and z.max() < 5.0


def test_negative_fraction_within_error_bar():
    rng = np.random.default_rng(1)
    lam = np.concatenate([-rng.uniform(0.5, 3.0, 60), rng.uniform(0.5, 4.0, 140)])
    op = from_matrix(_with_spectrum(lam, seed=1))
    exact = float(spectrum.exact_negative_fraction(op))
    assert exact == pytest.approx(0.3)
    f = spectrum.negative_fraction(op, key=jax.random.key(0), num_probes=32, num_steps=40)
    assert 0 < float(f.stderr) < 0.05
    assert abs(float(f.value) - exact) <= 3 * float(f.stderr)


def test_exact_negative_fraction_on_mlp_hessian(x64):
    model, params, batch = _mlp_problem("tanh", jnp.float64)
    op = _hvp_operator(model, params, batch)
    ex = _exact(op.dense())
    tol = op.size * np.finfo(np.float64).eps * np.abs(ex).max()
    assert float(spectrum.exact_negative_fraction(op)) == pytest.approx(np.mean(ex < -tol))


def test_negative_fraction_does_not_count_zero_eigenvalues():
    # Zero eigenvalues give Ritz nodes at rounding level of either sign.
    op = from_matrix(_with_spectrum([-1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0], seed=3))
    f = spectrum.negative_fraction(op, key=jax.random.key(0), num_probes=64)
    assert 0 < float(f.stderr) < 0.05
    assert abs(float(f.value) - 0.125) <= 3 * float(f.stderr)
    # threshold=0.0 keeps counting them: it is far above the exact fraction.
    f0 = spectrum.negative_fraction(op, key=jax.random.key(0), num_probes=64, threshold=0.0)
    assert float(f0.value) - 0.125 > 3 * float(f0.stderr)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_negative_fraction_on_tiny_mlp_matches_dense_eigh(x64, kind):
    # 32 parameters, all resolved by Lanczos; the softmax shift invariance gives exact zeros
    # in both, and the GGN (rank <= batch · (classes - 1) = 8) is PSD: its fraction is 0.
    model = ll.models.mlp([3, 5, 2], activation="tanh", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 3), jnp.float64)
    y = jax.random.randint(jax.random.key(2), (8,), 0, 2)
    op = getattr(ll.curvature, kind)(ll.losses.cross_entropy(model), params, (x, y))
    exact = float(spectrum.exact_negative_fraction(op))
    ex = _exact(jax.jit(op.dense)())
    assert exact == np.mean(ex < -1e-10 * np.abs(ex).max())  # a clear gap around zero
    f = jax.jit(lambda: spectrum.negative_fraction(op, key=jax.random.key(0), num_probes=64))()
    assert abs(float(f.value) - exact) <= 3 * float(f.stderr) + 1e-12
    if kind == "hessian":
        assert 0.2 < exact < 0.4 and float(f.stderr) > 0
    else:
        assert exact == 0.0 and float(f.value) == 0.0


# ----------------------------------------------------------------------------- density


@pytest.mark.slow  # 23 s on 2 cores; CI's slow step runs it
def test_slq_wasserstein_distance_shrinks_with_probes_and_steps():
    lam = _test_spectrum(300, seed=4)
    op = from_matrix(_with_spectrum(lam, seed=4))
    uniform = np.full(lam.size, 1.0 / lam.size)
    dists = []
    for probes, steps in [(2, 4), (4, 12), (16, 40)]:
        d = spectrum.density(op, key=jax.random.key(0), num_probes=probes, num_steps=steps)
        w = np.asarray(d.weights, np.float64)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
        dists.append(_w1(np.ravel(d.nodes), np.ravel(w) / probes, lam, uniform))
    assert dists[0] > 1.5 * dists[1] > 2.25 * dists[2], dists


def test_density_smoothing_presets_and_normalisation():
    lam = _test_spectrum(100, seed=6)
    d = spectrum.density(
        from_matrix(_with_spectrum(lam, seed=6)), key=jax.random.key(0), num_probes=4, num_steps=20
    )
    nodes = np.asarray(d.nodes, np.float64)
    lo, hi = nodes.min(axis=1).mean() - 0.01, nodes.max(axis=1).mean() + 0.01
    np.testing.assert_allclose(d.sigma("pyhessian"), np.sqrt(1e-5 * max(1.0, hi - lo)), rtol=1e-5)
    b = np.asarray(d.bounds, np.float64)
    lo, hi = (nodes - b).min(), (nodes + b).max()
    half = (hi - lo) * 1.1 / 2
    want = half * 2 / (19 * np.sqrt(8 * np.log(3.0)))
    np.testing.assert_allclose(d.sigma("papyan"), want, rtol=1e-5)
    grid = jnp.linspace(-15.0, 15.0, 3001)
    for sm in (d.smooth(grid, 0.3), d.smooth(grid, preset="papyan")):
        mass = float(jnp.sum(sm.density) * (grid[1] - grid[0]))
        assert mass == pytest.approx(1.0, abs=1e-3)
        assert sm.stderr.shape == grid.shape and np.all(np.asarray(sm.stderr) >= 0)
    auto = d.smooth(preset="pyhessian", num_points=64)
    assert auto.grid.shape == (64,)


def test_spiked_wishart_outliers_and_marchenko_pastur_bulk():
    # Papyan's test matrix: diag(5, 4, 3, 0, ...) + Z Zᵀ / N, n = N = 2000, matrix-free.
    n = 2000
    z = jax.random.normal(jax.random.key(0), (n, n))
    spikes = jnp.zeros(n).at[:3].set(jnp.array([5.0, 4.0, 3.0]))

    @jax.jit
    def run(z):
        mv = lambda v: spikes * v + z @ (z.T @ v) / n
        return spectrum.density(
            Operator(mv, n, jnp.float32), key=jax.random.key(1), num_probes=4, num_steps=80
        )

    d = run(z)
    nodes, w = np.asarray(d.nodes, np.float64), np.asarray(d.weights, np.float64)
    # Outliers: free additive convolution with MP(1) puts spike θ at θ + θ / (θ − 1).
    predicted = np.array([t + t / (t - 1) for t in (5.0, 4.0, 3.0)])
    top3 = np.sort(nodes, axis=1)[:, ::-1][:, :3]
    assert np.abs(top3 - predicted).max() < 0.15
    exact_top = spectrum.eigsh(
        Operator(lambda v: spikes * v + z @ (z.T @ v) / n, n, jnp.float32),
        3,
        key=jax.random.key(2),
    ).eigenvalues
    np.testing.assert_allclose(top3, np.broadcast_to(exact_top, top3.shape), rtol=1e-4)
    # Bulk: the SLQ distribution function matches Marchenko–Pastur (ratio 1) on [0, 4].
    # MP(1) density sqrt((4 − x) x) / (2π x); with x = 4 sin²u its CDF is 2(u + sin u cos u)/π.
    grid = np.linspace(0.0, 4.0, 81)
    u = np.arcsin(np.sqrt(grid / 4.0))
    cdf = 2.0 * (u + np.sin(u) * np.cos(u)) / np.pi
    slq = np.array([np.mean(np.sum(w * (nodes <= x), axis=1)) for x in grid])
    assert np.abs(slq - cdf).max() < 0.03
    xs = np.linspace(0.5, 3.5, 7)
    sm = d.smooth(jnp.asarray(xs), 0.05)
    ref = np.sqrt((4.0 - xs) * xs) / (2 * np.pi * xs)
    assert np.all(np.abs(np.asarray(sm.density) - ref) < 4 * np.asarray(sm.stderr) + 0.02)
