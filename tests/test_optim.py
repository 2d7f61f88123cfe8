"""Tests for lljax.optim: exact stationary laws on quadratics, limits, and the sampler contract."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.linalg

import lljax as ll

NUM_CHAINS = 8192


def _run_chains(make_opt, loss_fn, init, *, key, num_steps, num_chains=NUM_CHAINS):
    """Final params of ``num_chains`` independent vmapped chains (one key each)."""

    def chain(k):
        opt = make_opt(k)
        state = opt.init(init)

        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss_fn)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (init, state), None, length=num_steps)
        return p

    return jax.jit(jax.vmap(chain))(jr.split(key, num_chains))


def _z_mean_var(samples, mean, var):
    """z-scores of the sample mean and variance against exact values (Gaussian samples)."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    z_mean = (samples.mean(0) - mean) / np.sqrt(var / n)
    z_var = (samples.var(0, ddof=1) - var) / (var * np.sqrt(2.0 / (n - 1)))
    return z_mean, z_var


def test_sgld_stationary_moments_match_exact_discrete_formula():
    a = jnp.array([0.5, 1.0, 2.0])  # curvatures; ε a = 0.1, 0.2, 0.4
    m = jnp.array([1.0, -2.0, 0.5])
    eps, temp = 0.2, 0.7
    loss_fn = lambda w: 0.5 * jnp.sum(a * (w - m) ** 2)
    w = _run_chains(
        lambda k: ll.optim.sgld(eps, temp, key=k),
        loss_fn,
        jnp.zeros(3),
        key=jr.key(0),
        num_steps=300,
    )
    exact_var = np.array([ll.optim.stationary_variance(eps, float(ai), temp) for ai in a])
    z_mean, z_var = _z_mean_var(w, np.asarray(m), exact_var)
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    assert np.all(np.abs(z_var) < 4.5), z_var
    # The O(ε) bias is resolved: the continuum T/a is rejected where εa = 0.4 (25% bias).
    _, z_continuum = _z_mean_var(w, np.asarray(m), temp / np.asarray(a))
    assert z_continuum[2] > 10, z_continuum


def test_sgld_localization_and_nbeta_exact():
    # U = nβ a/2 (w − m)² + γ/2 (w − w0)²: Gaussian with curvature nβ a + γ.
    a, m, w0 = 1.0, 1.0, -1.0
    nbeta, gamma, eps, temp = 3.0, 2.0, 0.04, 0.5
    curv = nbeta * a + gamma
    mean = (nbeta * a * m + gamma * w0) / curv
    loss_fn = lambda w: 0.5 * a * jnp.sum((w - m) ** 2)
    w = _run_chains(
        lambda k: ll.optim.sgld(
            eps, temp, key=k, nbeta=nbeta, localization=gamma, anchor=jnp.full(2, w0)
        ),
        loss_fn,
        jnp.zeros(2),
        key=jr.key(1),
        num_steps=300,
    )
    z_mean, z_var = _z_mean_var(w, mean, temp / (curv * (1 - eps * curv / 2)))
    assert np.all(np.abs(z_mean) < 4.5) and np.all(np.abs(z_var) < 4.5), (z_mean, z_var)


def test_sgld_anchor_defaults_to_init_params():
    opt = ll.optim.sgld(0.1, key=jr.key(0), localization=1.0)
    state = opt.init({"w": jnp.arange(3.0)})
    np.testing.assert_array_equal(state.anchor["w"], jnp.arange(3.0))
    assert ll.optim.sgld(0.1, key=jr.key(0)).init(jnp.ones(2)).anchor is None


def test_sghmc_stationary_matches_discrete_lyapunov():
    a, eta, alpha, temp = 1.0, 0.05, 0.2, 1.3
    loss_fn = lambda w: 0.5 * a * jnp.sum(w**2)
    w = _run_chains(
        lambda k: ll.optim.sghmc(eta, temp, key=k, friction=alpha),
        loss_fn,
        jnp.zeros(1),
        key=jr.key(2),
        num_steps=600,
    )
    # x = (w, v): v' = (1 − α) v − η a w + ξ, w' = w + v'; Var ξ = 2 α η T.
    A = np.array([[1 - eta * a, 1 - alpha], [-eta * a, 1 - alpha]])
    Q = 2 * alpha * eta * temp * np.ones((2, 2))
    exact = scipy.linalg.solve_discrete_lyapunov(A, Q)[0, 0]
    z_mean, z_var = _z_mean_var(w, 0.0, exact)
    assert abs(float(z_mean[0])) < 4.5 and abs(float(z_var[0])) < 4.5, (z_mean, z_var, exact)


def test_psgld_stationary_variance_close_to_target():
    # No exact discrete formula: ν is random and, without the Γ term, its correlation with
    # recent |w| biases the law (time spent where G is small is over-weighted). With ν
    # averaging over ~1000 steps against a mixing time of ~25 steps the bias is ~7% here;
    # the check allows 10% plus 4 standard errors, and rejects the unadapted start (ν = 0).
    a, temp = 2.0, 0.5
    loss_fn = lambda w: 0.5 * a * jnp.sum(w**2)
    w = _run_chains(
        lambda k: ll.optim.psgld(0.02, temp, key=k, decay=0.999),
        loss_fn,
        jnp.full(1, 0.5),
        key=jr.key(3),
        num_steps=3000,
        num_chains=4096,
    )
    var = float(np.var(np.asarray(w)))
    se = temp / a * np.sqrt(2 / 4096)
    assert abs(var - temp / a) < 4 * se + 0.1 * temp / a, (var, temp / a)


def test_mala_removes_step_size_bias():
    a, temp, eps = 1.0, 1.0, 0.5  # SGLD's bias at ε a = 0.5: variance 4/3 instead of 1
    u = lambda w: 0.5 * a * jnp.sum(w**2)

    def chain(k):
        w = jnp.zeros(1)
        state = ll.optim.mala_init(u, w)

        def body(carry, k):
            w, s = carry
            w, s, info = ll.optim.mala_step(u, w, s, key=k, step_size=eps, temperature=temp)
            return (w, s), info.acceptance_prob

        (w, _), acc = jax.lax.scan(body, (w, state), jr.split(k, 300))
        return w, acc.mean()

    w, acc = jax.jit(jax.vmap(chain))(jr.split(jr.key(4), NUM_CHAINS))
    z_mean, z_var = _z_mean_var(w, 0.0, temp / a)
    assert abs(float(z_mean[0])) < 4.5 and abs(float(z_var[0])) < 4.5, (z_mean, z_var)
    sgld_var = ll.optim.stationary_variance(eps, a, temp)
    se_var = temp / a * np.sqrt(2 / (NUM_CHAINS - 1))
    assert sgld_var - temp / a > 10 * se_var  # SGLD's bias is far outside the error bar
    assert 0.5 < float(acc.mean()) < 1.0


def test_mala_always_rejects_non_finite_proposal():
    u = lambda w: jnp.where(jnp.abs(w[0]) > 1e-3, jnp.inf, 0.5 * w[0] ** 2)
    w = jnp.zeros(1)
    state = ll.optim.mala_init(u, w)
    w2, state2, info = ll.optim.mala_step(u, w, state, key=jr.key(0), step_size=1.0)
    assert not bool(info.accepted) and float(info.acceptance_prob) == 0.0
    np.testing.assert_array_equal(w2, w)


def _mlp_problem():
    model = ll.models.mlp([3, 5, 2])
    params = model.init(jr.key(0))
    loss_fn = ll.losses.mse(model)
    x, y = jr.normal(jr.key(1), (16, 3)), jr.normal(jr.key(2), (16, 2))
    return params, lambda p: loss_fn(p, (x, y))


def _run_opt(opt, params, loss_fn, num_steps=5):
    state = opt.init(params)
    out = []
    step = jax.jit(lambda p, s: opt.update(jax.grad(loss_fn)(p), s, p))
    for _ in range(num_steps):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        out.append(updates)
    return params, out


def test_zero_temperature_is_sgd_exactly():
    params, loss_fn = _mlp_problem()
    p_sgld, u_sgld = _run_opt(ll.optim.sgld(0.05, 0.0, key=jr.key(0)), params, loss_fn)
    p_sgd, u_sgd = _run_opt(optax.sgd(0.05), params, loss_fn)
    for a, b in zip(jax.tree.leaves(u_sgld), jax.tree.leaves(u_sgd), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(p_sgld), jax.tree.leaves(p_sgd), strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_temperature_limits_of_psgld_and_sghmc():
    params, loss_fn = _mlp_problem()
    pairs = [
        (
            ll.optim.psgld(0.01, 0.0, key=jr.key(0), decay=0.9, eps=1e-3),
            optax.rmsprop(0.01, decay=0.9, eps=1e-3, eps_in_sqrt=False),
        ),
        (ll.optim.sghmc(0.01, 0.0, key=jr.key(0), friction=0.2), optax.sgd(0.01, momentum=0.8)),
    ]
    for ours, ref in pairs:
        a, _ = _run_opt(ours, params, loss_fn, 8)
        b, _ = _run_opt(ref, params, loss_fn, 8)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_psgld_with_held_nu_is_sgld_with_a_fixed_metric():
    # decay = 1 in the state (after burn-in) holds ν: with ν = c everywhere the chain is
    # SGLD at step ε / (eps + √c), localisation included, draw for draw.
    params, loss_fn = _mlp_problem()
    c, eps, lr = 4.0, 1e-3, 0.01
    anchor = jax.tree.map(jnp.zeros_like, params)
    opt = ll.optim.psgld(lr, 0.3, key=jr.key(5), eps=eps, localization=0.5, anchor=anchor)
    held = lambda p: opt.init(p)._replace(
        nu=jax.tree.map(lambda x: jnp.full_like(x, c), p), decay=jnp.asarray(1.0)
    )
    held_opt = optax.GradientTransformation(held, opt.update)
    sgld = ll.optim.sgld(lr / (eps + 2.0), 0.3, key=jr.key(5), localization=0.5, anchor=anchor)
    a, _ = _run_opt(held_opt, params, loss_fn)
    b, _ = _run_opt(sgld, params, loss_fn)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
    # Per-member decays under vmap: member 0 holds ν, member 1 adapts it.
    w = jnp.ones((2, 3))
    states = jax.vmap(
        lambda d: (
            ll.optim.psgld(lr, key=jr.key(0), decay=d).init(jnp.ones(3))._replace(nu=jnp.ones(3))
        )
    )(jnp.array([1.0, 0.5]))
    _, states = jax.vmap(lambda g, s: opt.update(g, s))(w, states)
    np.testing.assert_array_equal(states.nu[0], jnp.ones(3))
    np.testing.assert_allclose(states.nu[1], 0.5 + 0.5 * w[1] ** 2)
    # A concrete decay = 1 at construction would hold ν at its initial 0: G = 1/eps, and a
    # first step of ≈ −60 for ε = 1e-3, ĝ = 0.5 (eps = 1e-5). Refused, pointing to the state.
    with pytest.raises(ValueError, match=r"decay: 1 freezes ν.*state._replace\(decay=1.0\)"):
        ll.optim.psgld(1e-3, key=jr.key(0), decay=1.0)


def test_sghmc_full_friction_is_sgld():
    params, loss_fn = _mlp_problem()
    a, _ = _run_opt(ll.optim.sghmc(0.01, 0.3, key=jr.key(5), friction=1.0), params, loss_fn)
    b, _ = _run_opt(ll.optim.sgld(0.01, 0.3, key=jr.key(5)), params, loss_fn)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


SAMPLERS = {
    "sgld": lambda k: ll.optim.sgld(1e-2, 0.5, key=k),
    "sgld_localized": lambda k: ll.optim.sgld(1e-2, 0.5, key=k, nbeta=2.0, localization=1.0),
    "psgld": lambda k: ll.optim.psgld(1e-3, 0.5, key=k, localization=0.3),
    "sghmc": lambda k: ll.optim.sghmc(1e-2, 0.5, key=k, friction=0.3),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract(name):
    make = SAMPLERS[name]
    params, loss_fn = _mlp_problem()
    opt = make(jr.key(0))
    state = opt.init(params)
    grads = jax.grad(loss_fn)(params)
    u1, s1 = opt.update(grads, state, params)
    u2, s2 = jax.jit(opt.update)(grads, state, params)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The state keeps its tree structure, shapes and dtypes (what lax.scan needs).
    assert jax.tree.structure(s1) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(state), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    # The key advances, so two steps draw different noise.
    u3, _ = opt.update(grads, s1, params)
    assert not np.allclose(jax.tree.leaves(u1)[0], jax.tree.leaves(u3)[0])
    # vmap over chains (keys and params) == a Python loop.
    keys = jr.split(jr.key(1), 3)
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p, -p]), params)

    def one(k, p):
        o = make(k)
        return o.update(jax.grad(loss_fn)(p), o.init(p), p)[0]

    batched = jax.vmap(one)(keys, stacked)
    one = jax.jit(one)
    for i in range(3):
        loop = one(keys[i], jax.tree.map(lambda p: p[i], stacked))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(loop), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_preserves_float64(name, x64):
    params = {"w": jnp.ones(3, jnp.float64), "v": jnp.ones((), jnp.float32)}
    opt = SAMPLERS[name](jr.key(0))
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, s1 = jax.jit(opt.update)(grads, state, params)
    assert updates["w"].dtype == jnp.float64 and updates["v"].dtype == jnp.float32
    assert jax.tree.structure(s1) == jax.tree.structure(state)


def test_per_member_hyperparameters_one_program():
    lrs, temps = jnp.array([1e-3, 1e-2, 1e-1]), jnp.array([0.0, 0.5, 1.0])
    params = jnp.ones(4)
    grads = jnp.full(4, 2.0)

    def one(lr, t, k):
        opt = ll.optim.sgld(lr, t, key=k)
        return opt.update(grads, opt.init(params), params)[0]

    keys = jr.split(jr.key(0), 3)
    batched = jax.vmap(one)(lrs, temps, keys)
    for i in range(3):
        np.testing.assert_allclose(
            batched[i], one(float(lrs[i]), float(temps[i]), keys[i]), rtol=1e-6
        )
    np.testing.assert_allclose(batched[0], -1e-3 * grads)  # T = 0 member is deterministic
    # Traced scalars under jit build the sampler too (and under vmap, above).
    lr_in_state = jax.jit(lambda lr: ll.optim.sgld(lr, 0.0, key=keys[0]).init(params))(0.5)
    assert float(lr_in_state.learning_rate) == 0.5
    # An array outside vmap would broadcast against the params: with params (3, 2) each
    # column took its own step (−1e-3 and −0.1 for unit gradients). Refused, by name.
    for make in (
        lambda v: ll.optim.sgld(v, 0.0, key=keys[0]),
        lambda v: ll.optim.sgld(1e-3, v, key=keys[0]),
        lambda v: ll.optim.psgld(1e-3, key=keys[0], decay=v),
        lambda v: ll.optim.sghmc(1e-3, key=keys[0], friction=v),
    ):
        with pytest.raises(ValueError, match="expected a scalar.*inside vmap"):
            make(jnp.array([1e-3, 1e-1]))
    with pytest.raises(ValueError, match="learning_rate: schedules .* are not supported"):
        ll.optim.sgld(optax.linear_schedule(1e-3, 1e-4, 100), key=keys[0])


def test_devinterp_and_blackjax_conventions():
    eps_d, nbeta, gamma = 1e-3, 50.0, 10.0
    w0 = jnp.array([0.3, -0.2])
    w, g = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
    key = jr.key(7)
    opt = ll.optim.sgld(key=key, anchor=w0, **ll.optim.from_devinterp(eps_d, nbeta, gamma))
    u, _ = opt.update(g, opt.init(w), w)
    xi = jr.normal(jr.split(jr.split(key)[1], 1)[0], (2,))  # first step's draw (one leaf)
    devinterp = eps_d / 2 * (-nbeta * g - gamma * (w - w0)) + np.sqrt(eps_d) * xi
    np.testing.assert_allclose(u, devinterp, rtol=1e-5)
    back = ll.optim.to_devinterp(eps_d / 2, nbeta, gamma)
    assert back == pytest.approx({"lr": eps_d, "nbeta": nbeta, "localization": gamma})
    # A temperature folds into devinterp's (lr, nβ, γ) leaving the update unchanged.
    t = 0.25
    d = ll.optim.to_devinterp(eps_d, nbeta, gamma, temperature=t)
    ours = ll.optim.sgld(eps_d, t, key=key, nbeta=nbeta, localization=gamma, anchor=w0)
    u_t, _ = ours.update(g, ours.init(w), w)
    alt = ll.optim.sgld(
        key=key, anchor=w0, **ll.optim.from_devinterp(d["lr"], d["nbeta"], d["localization"])
    )
    np.testing.assert_allclose(u_t, alt.update(g, alt.init(w), w)[0], rtol=1e-5)
    # blackjax: w + h ∇log p + √(2 T h) ξ with log p = −nβ L.
    h, temp = 2e-3, 0.5
    opt = ll.optim.sgld(key=key, nbeta=nbeta, **ll.optim.from_blackjax(h, temp))
    u, _ = opt.update(g, opt.init(w), w)
    np.testing.assert_allclose(u, h * (-nbeta * g) + np.sqrt(2 * temp * h) * xi, rtol=1e-5)
    assert ll.optim.to_blackjax(h, temp) == {"step_size": h, "temperature": temp}
    # devinterp's γ = 0 is no localisation: no anchor stored, update without params (it
    # was localization=0.0: a stored copy of params, and update demanded them).
    d0 = ll.optim.from_devinterp(eps_d, nbeta)
    assert d0["localization"] is None
    opt = ll.optim.sgld(key=key, **d0)
    state = opt.init(w)
    assert state.anchor is None
    u0, _ = opt.update(g, state)
    np.testing.assert_allclose(u0, eps_d / 2 * (-nbeta * g) + np.sqrt(eps_d) * xi, rtol=1e-5)
    for gam, back_gamma in ((None, 0.0), (0.0, 0.0), (gamma, gamma)):
        rt = ll.optim.to_devinterp(**ll.optim.from_devinterp(eps_d, nbeta, gam))
        assert rt == pytest.approx({"lr": eps_d, "nbeta": nbeta, "localization": back_gamma})


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="key"):
        ll.optim.sgld(1e-3, key=None)
    with pytest.raises(ValueError, match="temperature"):
        ll.optim.sgld(1e-3, -1.0, key=jr.key(0))
    with pytest.raises(ValueError, match="friction"):
        ll.optim.sghmc(1e-3, key=jr.key(0), friction=0.0)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="decay"):
            ll.optim.psgld(1e-3, key=jr.key(0), decay=bad)
    opt = ll.optim.sgld(1e-3, key=jr.key(0), localization=1.0)
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))
    # MALA with ε ≤ 0 or T ≤ 0 accepted nothing (acceptance 0; T = 0 is 0/0) and never moved.
    u = lambda w: 0.5 * jnp.sum(w**2)
    state = ll.optim.mala_init(u, jnp.ones(2))
    for kw, name in (
        (dict(step_size=0.0), "step_size"),
        (dict(step_size=-0.1), "step_size"),
        (dict(step_size=0.1, temperature=0.0), "temperature"),
    ):
        with pytest.raises(ValueError, match=f"{name}: expected finite positive"):
            ll.optim.mala_step(u, jnp.ones(2), state, key=jr.key(0), **kw)
