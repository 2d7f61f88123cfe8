"""Tests for lljax.geometry: exact quadratic identities, invariances and closed forms."""

import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import lljax as ll
from lljax import geometry as geo


def _spd(key, dim, low=0.5, high=2.0):
    """A random symmetric matrix with eigenvalues spread over [low, high]."""
    q, _ = jnp.linalg.qr(jr.normal(key, (dim, dim)))
    eig = jnp.linspace(low, high, dim)
    return (q * eig[None, :]) @ q.T, eig


def _quadratic(h, c, offset=0.0):
    """L(w) = ½ (w − c)ᵀ H (w − c) + offset, on a flat params vector."""
    return lambda p, batch: 0.5 * (p - c) @ (h @ (p - c)) + offset


def _mlp_problem(widths=(4, 8, 3), num=32, seed=0):
    model = ll.models.mlp(list(widths))
    loss_fn = ll.losses.cross_entropy(model)
    params = model.init(jr.key(seed))
    x = jr.normal(jr.key(seed + 100), (num, widths[0]))
    y = jr.randint(jr.key(seed + 200), (num,), 0, widths[-1])
    return model, loss_fn, params, (x, y)


# --------------------------------------------------------------------------------------
# Flatness


def test_expected_sharpness_is_half_sigma2_trace_on_a_quadratic():
    h, eig = _spd(jr.key(0), 6)
    c = jr.normal(jr.key(1), (6,))
    w = c + 0.3 * jr.normal(jr.key(2), (6,))  # away from the minimum: the linear term cancels
    sigma = 0.2
    r = geo.expected_sharpness(
        _quadratic(h, c), w, None, key=jr.key(3), sigma=sigma, num_samples=4000
    )
    exact = 0.5 * sigma**2 * float(jnp.sum(eig))
    assert float(r.stderr) > 0
    assert abs(float(r.value) - exact) < 4 * float(r.stderr)
    # The antithetic estimator has no linear-term noise: its stderr is the quadratic one.
    assert float(r.stderr) < 0.1 * exact


def test_epsilon_sharpness_matches_the_corner_closed_form():
    h = jnp.array([0.5, 1.0, 3.0, 0.2])
    c = jnp.array([2.0, -1.0, 0.0, 0.5])
    eps = 0.05
    loss_fn = lambda p, b: 0.5 * jnp.sum(h * (p - c) ** 2) + 1.0  # L(w) = 1 at the minimum
    r = geo.epsilon_sharpness(loss_fn, c, None, key=jr.key(0), epsilon=eps)
    max_increase = 0.5 * jnp.sum(h * eps**2 * (jnp.abs(c) + 1) ** 2)
    np.testing.assert_allclose(float(r.value), 100 * float(max_increase) / 2.0, rtol=1e-4)
    np.testing.assert_allclose(float(r.loss), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.abs(r.perturbation), eps * (np.abs(c) + 1), rtol=1e-5)


def _box_max(h, b):
    """Exact max of ½ zᵀHz over the box |z| ≤ b (H ⪰ 0): a convex function peaks at a corner."""
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=len(b)))) * np.asarray(b)
    return max(0.5 * z @ np.asarray(h) @ z for z in corners)


def test_epsilon_sharpness_finds_the_corner_of_correlated_curvature():
    # Sign ascent from a random start stalls at the corner (ε, ε) (gradient 0.1ε(1, 1) points
    # outwards) and gives ½ · 0.2ε²; the maximum is at ±(ε, −ε): ½ · 3.8ε² = ½ λ_max ‖(ε, −ε)‖².
    h = jnp.array([[1.0, -0.9], [-0.9, 1.0]])
    eps = 0.1
    r = geo.epsilon_sharpness(
        _quadratic(h, jnp.zeros(2)), jnp.zeros(2), None, key=jr.key(0), epsilon=eps
    )
    exact = 0.5 * 1.9 * 2 * eps**2
    assert _box_max(h, [eps, eps]) == pytest.approx(exact)
    np.testing.assert_allclose(float(r.value), 100 * exact, rtol=1e-5)  # L(w) = 0
    np.testing.assert_allclose(np.abs(r.perturbation), [eps, eps], rtol=1e-6)
    assert float(r.perturbation[0] * r.perturbation[1]) < 0
    # Away from the origin (box half-widths ε(|w| + 1)) and with L(w) = 1; 2 parameters, so
    # the spectral corner is exact; and a random 3-D example against brute force.
    for key, dim in ((1, 2), (2, 3)):
        h, _ = _spd(jr.key(key), dim, low=0.1, high=2.0)
        c = jr.normal(jr.key(key + 10), (dim,))
        b = eps * (np.abs(np.asarray(c)) + 1)
        r = geo.epsilon_sharpness(
            _quadratic(h, c, offset=1.0), c, None, key=jr.key(key + 20), epsilon=eps
        )
        np.testing.assert_allclose(float(r.value), 100 * _box_max(h, b) / 2.0, rtol=1e-5)


def test_pac_bayes_sigma_matches_the_quadratic_law():
    # E[L(w + σz)] − L(w) = σ²/2 · Tr H, so σ′² = 2 d / Tr H and 1/σ′² = Tr H / (2 d).
    h, eig = _spd(jr.key(0), 5)
    target, num = 0.05, 2000
    r = geo.pac_bayes_flatness(
        _quadratic(h, jnp.zeros(5)),
        jnp.zeros(5),
        None,
        key=jr.key(1),
        target_deviation=target,
        num_samples=num,
    )
    exact = float(jnp.sum(eig)) / (2 * target)
    # Monte-Carlo error of mean(zᵀHz): Var = 2 Tr H².
    stderr = math.sqrt(2 * float(jnp.sum(eig**2)) / num) / (2 * target)
    assert abs(float(r.flatness) - exact) < 4 * stderr
    np.testing.assert_allclose(float(r.deviation), target, rtol=1e-4)
    assert bool(r.bracketed)


def test_pac_bayes_flags_an_unbracketed_target():
    flat = lambda p, b: 0.0 * jnp.sum(p)
    r = geo.pac_bayes_flatness(flat, jnp.zeros(3), None, key=jr.key(0), sigma_max=2.0)
    assert not bool(r.bracketed)
    np.testing.assert_allclose(float(r.sigma), 2.0, rtol=1e-6)


def test_top_eigenvalue_trace_and_log_det_match_dense_hessian():
    _, loss_fn, params, batch = _mlp_problem(widths=(3, 4, 2), num=16)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda v: loss_fn(unravel(v), batch)))(flat)
    eig = jnp.linalg.eigvalsh(dense)
    top = geo.top_eigenvalue(loss_fn, params, batch, key=jr.key(0))
    np.testing.assert_allclose(float(top.value), float(eig[-1]), rtol=1e-4)
    assert float(top.residual) < 1e-3 * float(eig[-1])
    tr = geo.hessian_trace(loss_fn, params, batch, key=jr.key(1), num_probes=60)
    assert abs(float(tr.value) - float(jnp.sum(eig))) < 4 * float(tr.stderr) + 1e-4

    damping = float(-eig[0]) + 0.05  # H + δI positive definite
    op = ll.curvature.hessian(loss_fn, params, batch)
    ld = jax.jit(
        lambda: geo.log_determinant(
            op, key=jr.key(2), damping=damping, num_probes=8, num_steps=op.size
        )
    )()
    exact = float(jnp.sum(jnp.log(eig + damping)))
    assert float(ld.stderr) > 0
    assert abs(float(ld.value) - exact) < 4 * float(ld.stderr)
    np.testing.assert_allclose(float(ld.min_node), float(eig[0]), atol=1e-4)


def test_log_determinant_is_nan_when_not_positive_definite():
    op = ll.curvature.from_matrix(jnp.diag(jnp.array([-1.0, 1.0, 2.0])))
    r = jax.jit(
        lambda: geo.log_determinant(op, key=jr.key(0), damping=0.5, num_probes=2, num_steps=3)
    )()
    assert bool(jnp.isnan(r.value))
    np.testing.assert_allclose(float(r.min_node), -1.0, atol=1e-5)


def test_log_determinant_of_a_dense_matrix_matches_slogdet():
    # A dense (n, n) array is an n × n matrix (its .size is n²).
    a = jnp.diag(jnp.array([1.0, 2.0, 4.0]))
    r = geo.log_determinant(a, key=jr.key(0), damping=1e-9, num_probes=2, num_steps=3)
    np.testing.assert_allclose(float(r.value), float(jnp.linalg.slogdet(a)[1]), rtol=1e-5)
    # A non-diagonal matrix: the same estimate as through its Operator, and within error
    # bars of slogdet.
    h, _ = _spd(jr.key(3), 4)
    dense = geo.log_determinant(h, key=jr.key(1), damping=1e-9, num_probes=64, num_steps=4)
    op = geo.log_determinant(
        ll.curvature.from_matrix(h), key=jr.key(1), damping=1e-9, num_probes=64, num_steps=4
    )
    np.testing.assert_allclose(float(dense.value), float(op.value), rtol=1e-6)
    exact = float(jnp.linalg.slogdet(h)[1])
    assert abs(float(dense.value) - exact) < 4 * float(dense.stderr) + 1e-5
    with pytest.raises(ValueError, match="op"):
        geo.log_determinant(jnp.ones((2, 3)), key=jr.key(0))


def test_sharpness_record_on_a_quadratic():
    h, eig = _spd(jr.key(0), 4)
    c = jnp.zeros(4)
    r = geo.sharpness(
        _quadratic(h, c),
        c,
        None,
        key=jr.key(1),
        num_samples=64,
        num_steps=4,
        volume_epsilon=0.1,
        damping=1e-6,
    )
    np.testing.assert_allclose(float(r.top_eigenvalue), float(eig[-1]), rtol=1e-4)
    np.testing.assert_allclose(float(r.trace), float(jnp.sum(eig)), rtol=1e-3)
    assert float(r.epsilon_sharpness) > 0
    assert abs(float(r.expected_sharpness) - 0.5e-4 * float(jnp.sum(eig))) < 4 * float(
        r.expected_sharpness_stderr
    )
    np.testing.assert_allclose(float(r.pac_bayes_flatness), 1 / float(r.pac_bayes_sigma) ** 2)
    exact_log_det = float(jnp.sum(jnp.log(eig)))
    assert abs(float(r.log_det) - exact_log_det) < 4 * float(r.log_det_stderr) + 1e-4
    np.testing.assert_allclose(
        float(r.log_volume), float(geo.quadratic_log_volume(r.log_det, 4, 0.1)), rtol=1e-6
    )
    only = geo.sharpness(_quadratic(h, c), c, None, key=jr.key(1), measures=("epsilon",))
    assert only.top_eigenvalue is None and only.log_det is None
    assert only.epsilon_sharpness is not None
    with pytest.raises(ValueError, match="measures"):
        geo.sharpness(_quadratic(h, c), c, None, key=jr.key(1), measures=("sharp",))


# --------------------------------------------------------------------------------------
# Basin volume


@pytest.mark.parametrize("dim", [2, 3, 4, 5, 6])
def test_basin_volume_matches_the_quadratic_det_law(dim):
    h, eig = _spd(jr.key(dim), dim)
    eps = 0.1
    exact = float(geo.quadratic_log_volume(jnp.sum(jnp.log(eig)), dim, eps))
    r = geo.basin_volume(
        _quadratic(h, jnp.zeros(dim)),
        jnp.zeros(dim),
        None,
        key=jr.key(10 + dim),
        epsilon=eps,
        num_directions=2000,
        confidence=0.99,
    )
    assert float(r.ci_low) <= exact <= float(r.ci_high), (float(r.log_volume), exact)
    assert abs(float(r.log_volume) - exact) < 4 * float(r.stderr)
    # Radii along the eigenvectors' range: sqrt(2ε/λ) between sqrt(2ε/2) and sqrt(2ε/0.5).
    assert float(jnp.min(r.radii)) >= math.sqrt(2 * eps / 2.0) * (1 - 1e-4)
    assert float(jnp.max(r.radii)) <= math.sqrt(2 * eps / 0.5) * (1 + 1e-4)
    assert int(r.num_unbounded) == 0
    # ESS = (Σ w)² / Σ w² with w = r^d; the radii vary by at most √(2/0.5) = 2, so the
    # weights by 2^d, and Kantorovich's inequality bounds ESS/N below by 4·2^d/(1 + 2^d)².
    w = np.asarray(r.radii, np.float64) ** dim
    ess = float(r.effective_sample_size)
    assert ess == pytest.approx(w.sum() ** 2 / np.sum(w**2), rel=1e-4)
    assert ess >= 2000 * 4 * 2**dim / (1 + 2**dim) ** 2


def test_basin_volume_flags_unbounded_rays():
    loss_fn = lambda p, b: 0.5 * p[0] ** 2  # flat along p[1]: only the ray ±e₂ is unbounded
    r = geo.basin_volume(loss_fn, jnp.zeros(2), None, key=jr.key(0), epsilon=0.1, num_directions=16)
    assert int(r.num_unbounded) == 0  # no sampled ray is exactly ±e₂
    loss_fn = lambda p, b: 0.0 * jnp.sum(p)
    r = geo.basin_volume(
        loss_fn, jnp.zeros(2), None, key=jr.key(0), epsilon=0.1, num_directions=16, num_scan=8
    )
    assert int(r.num_unbounded) == 16


def test_basin_volume_with_a_traced_confidence():
    loss_fn = lambda p, b: 0.5 * jnp.sum(p**2)
    run = lambda level: geo.basin_volume(
        loss_fn,
        jnp.zeros(2),
        None,
        key=jr.key(0),
        epsilon=0.5,
        num_directions=16,
        num_bootstrap=64,
        confidence=level,
    )
    levels = jnp.array([0.5, 0.9])
    swept = jax.jit(jax.vmap(lambda level: run(level).ci_high))(levels)
    for level, got in zip(levels.tolist(), swept, strict=True):
        np.testing.assert_allclose(float(got), float(run(level).ci_high), rtol=1e-6)
    assert float(swept[0]) <= float(swept[1])
    with pytest.raises(ValueError, match="confidence"):
        run(jnp.array(1.5))  # concrete arrays are still checked


# --------------------------------------------------------------------------------------
# Slices


def _rescaled(params, c):
    """Dense_0 (kernel and bias) times c, Dense_1's kernel times 1/c: the same ReLU net."""
    p = jax.tree.map(lambda x: x, params)
    p["Dense_0"] = {
        "kernel": c * params["Dense_0"]["kernel"],
        "bias": c * params["Dense_0"]["bias"],
    }
    p["Dense_1"] = {"kernel": params["Dense_1"]["kernel"] / c, "bias": params["Dense_1"]["bias"]}
    return p


def test_filter_normalised_slices_are_invariant_to_relu_rescaling():
    model, loss_fn, params, batch = _mlp_problem()
    scaled = _rescaled(params, 5.0)
    np.testing.assert_allclose(
        model.apply(scaled, batch[0]), model.apply(params, batch[0]), rtol=1e-5, atol=1e-6
    )
    kw = dict(key=jr.key(7), num_points=9, radius=1.0)
    for norm in ("filter", "layer"):
        a = geo.slice_1d(loss_fn, params, batch, normalization=norm, **kw)
        b = geo.slice_1d(loss_fn, scaled, batch, normalization=norm, **kw)
        np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    a = geo.slice_1d(loss_fn, params, batch, normalization="none", **kw)
    b = geo.slice_1d(loss_fn, scaled, batch, normalization="none", **kw)
    assert float(jnp.max(jnp.abs(a.losses - b.losses))) > 1e-2


def test_only_filter_normalisation_is_invariant_to_one_neuron_rescaling():
    _, loss_fn, params, batch = _mlp_problem()
    c, j = 4.0, 3  # rescale hidden unit j alone
    scaled = jax.tree.map(lambda x: x, params)
    scaled["Dense_0"] = {
        "kernel": params["Dense_0"]["kernel"].at[:, j].multiply(c),
        "bias": params["Dense_0"]["bias"].at[j].multiply(c),
    }
    scaled["Dense_1"] = {
        "kernel": params["Dense_1"]["kernel"].at[j, :].multiply(1 / c),
        "bias": params["Dense_1"]["bias"],
    }
    # A direction on Dense_0 alone: filter normalisation rescales column j's direction by c
    # with the weights (the function along the line is unchanged); layer normalisation cannot.
    d0 = jax.tree.map(jnp.zeros_like, params)
    d0["Dense_0"] = jax.tree.map(
        lambda x: x, geo.random_direction(params, key=jr.key(4))["Dense_0"]
    )
    da = geo.normalize_direction(d0, params, "filter")
    db = geo.normalize_direction(d0, scaled, "filter")
    la = geo.slice_1d(loss_fn, params, batch, direction=da, num_points=7).losses
    lb = geo.slice_1d(loss_fn, scaled, batch, direction=db, num_points=7).losses
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    la = geo.slice_1d(
        loss_fn, params, batch, direction=geo.normalize_direction(d0, params, "layer"), num_points=7
    ).losses
    lb = geo.slice_1d(
        loss_fn, scaled, batch, direction=geo.normalize_direction(d0, scaled, "layer"), num_points=7
    ).losses
    assert float(jnp.max(jnp.abs(la - lb))) > 1e-3


def test_normalize_direction_conventions():
    p = {
        "Dense_0": {
            "kernel": jnp.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]]),
            "bias": jnp.array([1.0, 2.0, 2.0]),
        }
    }
    d = {
        "Dense_0": {
            "kernel": jnp.array([[1.0, 1.0, 2.0], [1.0, 2.0, 0.0]]),
            "bias": jnp.array([0.0, 3.0, 4.0]),
        }
    }
    f = geo.normalize_direction(d, p, "filter")
    np.testing.assert_allclose(jnp.linalg.norm(f["Dense_0"]["kernel"], axis=0), [5.0, 0.0, 1.0])
    np.testing.assert_allclose(f["Dense_0"]["bias"], 0.0)
    f = geo.normalize_direction(d, p, "filter", vectors="include")
    np.testing.assert_allclose(jnp.linalg.norm(f["Dense_0"]["bias"]), 3.0, rtol=1e-6)
    l = geo.normalize_direction(d, p, "layer")
    np.testing.assert_allclose(jnp.linalg.norm(l["Dense_0"]["kernel"]), math.sqrt(26.0), rtol=1e-6)
    n = geo.normalize_direction(d, p, "none")
    np.testing.assert_allclose(n["Dense_0"]["bias"], d["Dense_0"]["bias"])
    with pytest.raises(ValueError, match="normalization"):
        geo.normalize_direction(d, p, "batch")
    with pytest.raises(ValueError, match="vectors"):
        geo.normalize_direction(d, p, "filter", vectors="keep")


def test_slices_along_hessian_eigenvectors_are_exact_parabolas():
    h, eig = _spd(jr.key(0), 4)
    loss_fn = _quadratic(h, jnp.zeros(4))
    vals, dirs = geo.hessian_directions(loss_fn, jnp.zeros(4), None, key=jr.key(1), k=2)
    np.testing.assert_allclose(vals, eig[::-1][:2], rtol=1e-4)
    s = geo.slice_1d(loss_fn, jnp.zeros(4), None, direction=dirs[0], num_points=5, radius=2.0)
    np.testing.assert_allclose(s.losses, 0.5 * vals[0] * s.alphas**2, rtol=1e-4, atol=1e-6)
    s2 = geo.slice_2d(loss_fn, jnp.zeros(4), None, directions=dirs, num_points=5, radius=2.0)
    a, b = jnp.meshgrid(s2.alphas, s2.betas, indexing="ij")
    np.testing.assert_allclose(
        s2.losses, 0.5 * (vals[0] * a**2 + vals[1] * b**2), rtol=1e-4, atol=1e-5
    )


def test_slice_2d_random_and_chunked():
    _, loss_fn, params, batch = _mlp_problem()
    s = geo.slice_2d(loss_fn, params, batch, key=jr.key(0), num_points=5)
    assert s.losses.shape == (5, 5)
    np.testing.assert_allclose(s.losses[2, 2], loss_fn(params, batch), rtol=1e-6)
    c = geo.slice_2d(loss_fn, params, batch, key=jr.key(0), num_points=5, chunk_size=7)
    np.testing.assert_allclose(c.losses, s.losses, rtol=1e-6)
    # The two directions are independent draws, filter normalised.
    np.testing.assert_allclose(
        jnp.linalg.norm(s.directions[0]["Dense_0"]["kernel"], axis=0),
        jnp.linalg.norm(params["Dense_0"]["kernel"], axis=0),
        rtol=1e-5,
    )
    assert not np.allclose(
        s.directions[0]["Dense_0"]["kernel"], s.directions[1]["Dense_0"]["kernel"]
    )
    with pytest.raises(ValueError, match="key"):
        geo.slice_2d(loss_fn, params, batch)
    with pytest.raises(ValueError, match="key"):
        geo.slice_1d(loss_fn, params, batch)


def test_slice_grids_are_centred_and_directions_checked():
    # The centre of the default grids is params itself, not linspace's ±1e-8.
    lin = lambda p, b: p[0]
    s = geo.slice_1d(lin, jnp.zeros(1), None, direction=jnp.ones(1))
    assert s.alphas.shape == (51,) and float(s.alphas[25]) == 0.0 and float(s.losses[25]) == 0.0
    assert float(s.alphas[0]) == -1.0 and float(s.alphas[-1]) == 1.0
    np.testing.assert_allclose(s.alphas, np.linspace(-1, 1, 51), atol=1e-7)
    s2 = geo.slice_2d(lin, jnp.zeros(1), None, directions=(jnp.ones(1), jnp.ones(1)))
    assert float(s2.losses[12, 12]) == 0.0
    sq = lambda p, b: jnp.sum(p**2)
    with pytest.raises(ValueError, match="direction"):
        geo.slice_1d(sq, jnp.zeros(3), None, direction=jnp.ones((2, 3)), num_points=3)
    with pytest.raises(ValueError, match=r"directions\[1\]"):
        geo.slice_2d(sq, jnp.zeros(3), None, directions=(jnp.ones(3), jnp.ones(())))


# --------------------------------------------------------------------------------------
# Interpolation, instability, connectivity

RING = lambda p, b: (jnp.sum(p**2) - 1.0) ** 2  # noqa: E731


def test_interpolate_barriers_closed_forms():
    a, b = jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0])
    r = geo.interpolate(RING, a, b, None, num_points=21)
    t = np.linspace(0, 1, 21)
    np.testing.assert_allclose(r.losses, ((1 - 2 * t) ** 2 - 1) ** 2, atol=1e-6)
    assert float(r.barrier) == pytest.approx(1.0) and float(r.barrier_t) == pytest.approx(0.5)
    # Convex loss with unequal endpoints: no barrier above the chord, Frankle's height is > 0.
    convex = lambda p, b: 0.5 * jnp.sum(p**2)
    r = geo.interpolate(convex, jnp.array([1.0]), jnp.array([3.0]), None, num_points=11)
    assert float(r.barrier) == pytest.approx(0.0, abs=1e-6)
    assert float(r.barrier_mean) == pytest.approx(4.5 - 2.5)
    # Accuracy along the line: error barrier.
    acc = lambda p, b: (jnp.abs(p[0]) > 0.5).astype(jnp.float32)
    r = geo.interpolate(RING, a, b, None, num_points=5, accuracy_fn=acc)
    np.testing.assert_allclose(r.accuracies, [1, 0, 0, 0, 1])
    assert float(r.error_barrier) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="params_b"):
        geo.interpolate(RING, a, {"w": b}, None)
    # The ends are the endpoints exactly (a + t(b − a) misses b by rounding at t = 1).
    pa, pb = jr.normal(jr.key(0), (100,)), jr.normal(jr.key(1), (100,))
    dist_b = lambda p, b: jnp.max(jnp.abs(p - pb))
    r = geo.interpolate(dist_b, pa, pb, None, num_points=3)
    assert float(r.losses[-1]) == 0.0


def test_instability_from_endpoints_and_from_training():
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=64, num_test=32, num_classes=3, dim=4)
    model = ll.models.mlp([4, 8, 3])
    loss_fn = ll.losses.cross_entropy(model)
    acc_fn = ll.losses.accuracy(model)
    params = model.init(jr.key(1))

    def train_fn(p, k):
        return ll.train.fit(
            loss_fn, p, optax.sgd(0.2), data, steps=30, batch_size=16, key=k, progress=False
        ).params

    same = geo.instability(loss_fn, params, data.train, params_b=params, accuracy_fn=acc_fn)
    assert float(same.value) == 0.0
    r = geo.instability(
        loss_fn,
        params,
        data.train,
        train_fn=train_fn,
        key=jr.key(2),
        accuracy_fn=acc_fn,
        num_points=9,
    )
    again = geo.interpolate(
        loss_fn, r.params_a, r.params_b, data.train, num_points=9, accuracy_fn=acc_fn
    )
    np.testing.assert_allclose(r.value, again.error_barrier)
    assert not np.allclose(r.params_a["Dense_0"]["kernel"], r.params_b["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match="exactly one"):
        geo.instability(loss_fn, params, data.train)


def test_curve_weights_and_points():
    np.testing.assert_allclose(geo.curve_weights("bezier", 2, 0.5), [0.125, 0.375, 0.375, 0.125])
    np.testing.assert_allclose(geo.curve_weights("polychain", 2, 0.5), [0, 0.5, 0.5, 0])
    np.testing.assert_allclose(geo.curve_weights("polychain", 2, 1.0), [0, 0, 0, 1])
    for kind in geo.CURVES:
        for t in (0.0, 0.3, 1.0):
            assert float(jnp.sum(geo.curve_weights(kind, 3, t))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind"):
        geo.curve_weights("spline", 1, 0.5)
    # An array t broadcast against the point axis (bezier gave [1, 0.5, 1]); vmap instead.
    ts = jnp.array([0.0, 0.5, 1.0])
    for kind in geo.CURVES:
        with pytest.raises(ValueError, match="t: expected a scalar"):
            geo.curve_weights(kind, 1, ts)
        pts = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])}
        path = jax.vmap(lambda t, kind=kind: geo.curve_point(kind, pts, t)["w"])(ts)
        np.testing.assert_allclose(path[jnp.array([0, 2])], [[1.0, 0.0], [-1.0, 0.0]])
        # Both kinds end at their endpoints (bezier extrapolated: t = 1.5 gave weights
        # [0.25, −1.5, 2.25]).
        np.testing.assert_allclose(geo.curve_weights(kind, 1, 1.5), [0, 0, 1])
        np.testing.assert_allclose(geo.curve_weights(kind, 1, -0.5), [1, 0, 0])


# A quadratic Bezier (a parabola) cannot follow the circle: its best barrier is a few 1e-2;
# a cubic one and a 3-bend chain can get close to 0.
@pytest.mark.parametrize(
    "kind,num_bends,steps,lr,tol",
    [
        ("bezier", 1, 500, 0.05, 0.1),
        ("bezier", 2, 500, 0.05, 0.01),
        ("polychain", 3, 1000, 0.02, 0.1),
    ],
)
def test_connect_finds_the_ring_valley(kind, num_bends, steps, lr, tol):
    a, b = jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0])
    c = geo.connect(
        RING,
        a,
        b,
        None,
        key=jr.key(0),
        kind=kind,
        num_bends=num_bends,
        steps=steps,
        learning_rate=lr,
        num_points=41,
    )
    assert float(c.linear.barrier) == pytest.approx(1.0)
    assert float(c.barrier) < tol, float(c.barrier)
    np.testing.assert_allclose(c(0.0), a, atol=1e-6)
    np.testing.assert_allclose(c(1.0), b, atol=1e-6)
    assert jax.tree.leaves(c.controls)[0].shape == (num_bends, 2)
    assert c.train_losses.shape == (steps,)


def test_connect_two_mlps_lowers_the_barrier():
    data = ll.data.gaussian_mixture(
        key=jr.key(0), num_train=128, num_test=32, num_classes=3, dim=4, separation=2.0
    )
    model = ll.models.mlp([4, 8, 3])
    loss_fn = ll.losses.cross_entropy(model)
    ends = [
        ll.train.fit(
            loss_fn,
            model.init(jr.key(s)),
            optax.adam(0.05),
            data,
            steps=300,
            batch_size=32,
            key=jr.key(10 + s),
            progress=False,
        ).params
        for s in (1, 2)
    ]
    c = geo.connect(
        loss_fn,
        ends[0],
        ends[1],
        data,
        key=jr.key(3),
        steps=300,
        batch_size=32,
        learning_rate=0.02,
        accuracy_fn=ll.losses.accuracy(model),
        num_points=11,
    )
    assert float(c.linear.barrier) > 0.05
    assert float(c.barrier) <= float(c.linear.barrier)
    assert c.path.accuracies.shape == (11,)


def test_connect_with_batchnorm_statistics_hook():
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=64, num_test=16, num_classes=3, dim=4)
    model = ll.models.mlp([4, 8, 3], norm="batch")
    loss_fn = ll.losses.cross_entropy(model)
    a, b = model.init(jr.key(1)), model.init(jr.key(2))
    hook = lambda p: {"stats": model.stats(p, data.x_train)}
    c = geo.connect(
        loss_fn,
        a,
        b,
        data,
        key=jr.key(3),
        steps=20,
        batch_size=16,
        num_points=5,
        apply_kwargs_fn=hook,
    )
    # With full-data statistics at the endpoints the loss is that of the batch statistics.
    np.testing.assert_allclose(c.path.losses[0], loss_fn(a, data.train), rtol=1e-5)
    np.testing.assert_allclose(c.linear.losses[-1], loss_fn(b, data.train), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Contracts: population vmap == loop, bad input


def test_population_vmap_matches_loop():
    model, loss_fn, _, batch = _mlp_problem()
    pop = jax.vmap(model.init)(jr.split(jr.key(5), 3))
    keys = jr.split(jr.key(6), 3)
    members = [jax.tree.map(lambda x, i=i: x[i], pop) for i in range(3)]

    vs = jax.vmap(lambda p, k: geo.slice_1d(loss_fn, p, batch, key=k, num_points=5).losses)(
        pop, keys
    )
    es = jax.vmap(
        lambda p, k: (
            geo.expected_sharpness(loss_fn, p, batch, key=k, sigma=0.05, num_samples=8).value
        )
    )(pop, keys)
    eps = jax.vmap(lambda p, k: geo.epsilon_sharpness(loss_fn, p, batch, key=k).value)(pop, keys)
    ip = jax.vmap(lambda p: geo.interpolate(loss_fn, p, members[0], batch, num_points=5).losses)(
        pop
    )
    for i, p in enumerate(members):
        np.testing.assert_allclose(
            vs[i], geo.slice_1d(loss_fn, p, batch, key=keys[i], num_points=5).losses, rtol=1e-5
        )
        np.testing.assert_allclose(
            es[i],
            geo.expected_sharpness(loss_fn, p, batch, key=keys[i], sigma=0.05, num_samples=8).value,
            rtol=1e-4,
            atol=1e-7,
        )
        np.testing.assert_allclose(
            eps[i], geo.epsilon_sharpness(loss_fn, p, batch, key=keys[i]).value, rtol=1e-4
        )
        np.testing.assert_allclose(
            ip[i], geo.interpolate(loss_fn, p, members[0], batch, num_points=5).losses, rtol=1e-5
        )


def test_non_array_loss_kwargs_are_static():
    # A string and a Python bool select the loss, as lljax.curvature.hessian allows; an
    # array kwarg stays traced.
    def loss_fn(p, batch, *, mode="mean", square=True, scale=1.0):
        t = p**2 if square else jnp.abs(p)
        return scale * (jnp.sum(t) if mode == "sum" else jnp.mean(t))

    w, e1 = jnp.zeros(4), jnp.array([1.0, 0.0, 0.0, 0.0])
    kw = dict(mode="sum", scale=jnp.array(3.0))
    H = ll.curvature.hessian(loss_fn, w, None, **kw)
    np.testing.assert_allclose(H.dense(), 6.0 * jnp.eye(4), rtol=1e-6)
    top = geo.top_eigenvalue(loss_fn, w, None, key=jr.key(0), **kw)
    np.testing.assert_allclose(float(top.value), 6.0, rtol=1e-5)
    top = geo.top_eigenvalue(loss_fn, w, None, key=jr.key(0), mode="mean")  # not cached
    np.testing.assert_allclose(float(top.value), 0.5, rtol=1e-5)
    s = geo.slice_1d(loss_fn, w, None, direction=e1, num_points=3, mode="sum", square=False)
    np.testing.assert_allclose(s.losses, [1.0, 0.0, 1.0])
    s2 = geo.slice_2d(loss_fn, w, None, directions=(e1, e1), num_points=3, mode="sum")
    np.testing.assert_allclose(s2.losses[0], [4.0, 1.0, 0.0])
    r = geo.interpolate(loss_fn, w, 2 * e1, None, num_points=3, mode="sum", square=False)
    np.testing.assert_allclose(r.losses, [0.0, 1.0, 2.0])
    e = geo.expected_sharpness(loss_fn, w, None, key=jr.key(0), sigma=0.1, num_samples=4, **kw)
    assert np.isfinite(float(e.value))
    r = geo.sharpness(loss_fn, w, None, key=jr.key(0), measures=("trace", "epsilon"), **kw)
    np.testing.assert_allclose(float(r.trace), 24.0, rtol=1e-4)
    np.testing.assert_allclose(float(r.epsilon_sharpness), 100 * 3 * 4 * 1e-6, rtol=1e-4)


def test_bad_arguments_raise_clear_errors():
    loss_fn = lambda p, b: jnp.sum(p**2)
    w = jnp.zeros(2)
    with pytest.raises(ValueError, match="key"):
        geo.expected_sharpness(loss_fn, w, None, key=0)
    with pytest.raises(ValueError, match="sigma"):
        geo.expected_sharpness(loss_fn, w, None, key=jr.key(0), sigma=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        geo.basin_volume(loss_fn, w, None, key=jr.key(0), epsilon=0.0)
    with pytest.raises(ValueError, match="confidence"):
        geo.basin_volume(loss_fn, w, None, key=jr.key(0), epsilon=0.1, confidence=95)
    with pytest.raises(ValueError, match="num_points"):
        geo.slice_1d(loss_fn, w, None, key=jr.key(0), num_points=0)
    with pytest.raises(ValueError, match="batch_size"):
        data = ll.data.gaussian_mixture(key=jr.key(0), num_train=8, num_test=8)
        geo.connect(loss_fn, w, w, data, key=jr.key(0))
    with pytest.raises(ValueError, match="kind"):
        geo.connect(loss_fn, w, w, None, key=jr.key(0), kind="spline")
    with pytest.raises(ValueError, match="sigma_max"):
        geo.pac_bayes_flatness(loss_fn, w, None, key=jr.key(0), sigma_min=1.0, sigma_max=0.1)
    with pytest.raises(ValueError, match=r"params_b: leaf .* shape \(3,\)"):
        geo.interpolate(loss_fn, w, jnp.zeros(3), None)


def test_more_bad_inputs_are_named_and_edge_dtypes_work():
    k = jr.key(0)
    quad = lambda p, b: p @ p  # noqa: E731
    with pytest.raises(ValueError, match="epsilon: expected finite positive values"):
        geo.basin_volume(quad, jnp.zeros(3), None, key=k, epsilon=jnp.array(-0.1))
    with pytest.raises(ValueError, match="params: expected floating-point"):
        geo.slice_1d(lambda p, b: p.sum(), jnp.zeros(2, jnp.int32), None, key=k)
    for fn in (geo.epsilon_sharpness, geo.basin_volume):
        with pytest.raises(ValueError, match="params: expected a pytree with at least one"):
            fn(lambda p, b: jnp.zeros(()), {}, None, key=k, epsilon=0.1)
    with pytest.raises(ValueError, match="directions: expected a pair"):
        geo.slice_2d(quad, jnp.zeros(2), None, directions=jnp.zeros(2))
    with pytest.raises(ValueError, match="direction: expected the same tree structure"):
        geo.normalize_direction({"a": jnp.ones(2)}, {"b": jnp.ones(2)})
    # A bare string names one measure, not its characters.
    s = geo.sharpness(quad, jnp.zeros(2), None, key=k, measures="trace")
    np.testing.assert_allclose(s.trace, 4.0, rtol=1e-5)
    # Doubling radii stop at the dtype's largest value instead of overflowing to inf.
    flat = lambda p, b: 0.01 * jnp.tanh(jnp.sum(p**2))  # noqa: E731
    r = geo.basin_volume(
        flat,
        jnp.zeros(2),
        None,
        key=k,
        epsilon=0.1,
        num_directions=8,
        num_bootstrap=10,
        num_scan=150,
    )
    assert np.all(np.isfinite(r.radii)) and int(r.num_unbounded) == 8
    # bfloat16 params: the grid keeps num_points distinct values.
    s = geo.slice_1d(
        lambda q, b: jnp.sum(q.astype(jnp.float32) ** 2),
        jnp.ones(2, jnp.bfloat16),
        None,
        direction=jnp.ones(2, jnp.bfloat16),
        num_points=301,
    )
    assert len(set(np.asarray(s.alphas, np.float32).tolist())) == 301


def test_chunk_size_bounds_the_memory_of_random_directions():
    # Each ray's or sample's direction is drawn inside the chunked map: a (num, d) matrix of
    # directions would not fit for large models whatever chunk_size was (the old behaviour:
    # 3.8 GiB of temporaries at d = 250k, 1000 rays, at every chunk size).
    d, num = 40_000, 256
    params = {"w": jnp.zeros(d)}
    loss_fn = lambda p, b: 0.5 * jnp.sum(p["w"] ** 2)
    matrix = num * d * 4
    fns = {
        "basin_volume": lambda p, c: (
            geo.basin_volume(
                loss_fn,
                p,
                None,
                key=jr.key(0),
                epsilon=0.1,
                num_directions=num,
                num_bootstrap=10,
                chunk_size=c,
            ).log_volume
        ),
        "expected_sharpness": lambda p, c: (
            geo.expected_sharpness(
                loss_fn, p, None, key=jr.key(0), num_samples=num, chunk_size=c
            ).value
        ),
        "pac_bayes_flatness": lambda p, c: (
            geo.pac_bayes_flatness(
                loss_fn, p, None, key=jr.key(0), num_samples=num, num_bisections=2, chunk_size=c
            ).sigma
        ),
    }
    for name, fn in fns.items():
        temp = jax.jit(lambda p: fn(p, 4)).lower(params).compile().memory_analysis()
        assert temp.temp_size_in_bytes < matrix / 4, (name, temp.temp_size_in_bytes, matrix)
    # The chunked result equals the vmapped one (the same keys give the same directions).
    small = {"w": jnp.arange(6.0) / 10}
    for name in ("expected_sharpness", "pac_bayes_flatness", "basin_volume"):
        np.testing.assert_allclose(
            fns[name](small, None), fns[name](small, 3), rtol=1e-6, err_msg=name
        )


def test_one_draw_has_no_error_bar():
    q = lambda p, b: 0.5 * jnp.sum(p**2)  # noqa: E731
    one = geo.expected_sharpness(q, jnp.ones(2), None, key=jr.key(0), num_samples=1)
    assert np.isfinite(float(one.value)) and np.isnan(float(one.stderr))  # not 0.0
    two = geo.expected_sharpness(q, jnp.ones(2), None, key=jr.key(0), num_samples=2)
    assert float(two.stderr) > 0
