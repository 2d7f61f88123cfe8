"""Curvature operators against dense references (jax.hessian, jax.jacobian, closed forms)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import lljax as ll
from lljax import curvature as cv

N, D_IN, WIDTH, CLASSES = 6, 3, 4, 3


def _setup(dtype=jnp.float32, loss="ce", norm=None, n=N, seed=0):
    model = ll.models.mlp([D_IN, WIDTH, CLASSES], activation="tanh", norm=norm, dtype=dtype)
    params = model.init(jr.key(seed))
    kx, ky = jr.split(jr.key(seed + 100))
    x = jr.normal(kx, (n, D_IN), dtype)
    if loss == "ce":
        y = jr.randint(ky, (n,), 0, CLASSES)
        loss_fn = ll.losses.cross_entropy(model)
    else:
        y = jr.normal(ky, (n, CLASSES), dtype)
        loss_fn = ll.losses.mse(model)
    return model, loss_fn, params, (x, y)


def _dense(op):
    """``op.dense()`` compiled as one program (much faster than eager dispatch)."""
    return jax.jit(op.dense)()


def _dense_hessian(loss_fn, params, batch, **kw):
    flat, unravel = ravel_pytree(params)
    return jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), batch, **kw)))(flat)


def _dense_ggn(model, params, batch, loss="ce"):
    """(1/n) Σᵢ Jᵢᵀ Hᵢ Jᵢ with J from jax.jacobian and Hᵢ in closed form."""
    x, _ = batch
    flat, unravel = ravel_pytree(params)
    jac = jax.jit(jax.jacobian(lambda f: model.apply(unravel(f), x)))(flat)  # (n, C, P)
    out = model.apply(params, x)
    if loss == "ce":
        p = jax.nn.softmax(out, axis=-1)
        h = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p)
    else:
        h = jnp.broadcast_to(
            jnp.eye(out.shape[1], dtype=out.dtype), (x.shape[0],) + 2 * out.shape[1:]
        )
    return jnp.einsum("ncp,ncd,ndq->pq", jac, h, jac) / x.shape[0]


def _scale(a):
    return float(jnp.max(jnp.abs(a)))


# ---------------------------------------------------------------------------------- Hessian


def test_hessian_matches_jax_hessian_float64(x64):
    _, loss_fn, params, batch = _setup(jnp.float64)
    H = cv.hessian(loss_fn, params, batch)
    ref = _dense_hessian(loss_fn, params, batch)
    assert H.dtype == jnp.float64 and H.size == ref.shape[0] and H.name == "hessian"
    np.testing.assert_allclose(_dense(H), ref, rtol=0, atol=1e-12 * _scale(ref))


def test_hessian_matches_jax_hessian_float32():
    _, loss_fn, params, batch = _setup()
    H = cv.hessian(loss_fn, params, batch)
    ref = _dense_hessian(loss_fn, params, batch)
    assert H.dtype == jnp.float32 and H.precision == "highest"
    np.testing.assert_allclose(_dense(H), ref, rtol=0, atol=1e-5 * _scale(ref))


def test_hessian_ravel_unravel_round_trip():
    _, loss_fn, params, batch = _setup()
    H = cv.hessian(loss_fn, params, batch)
    flat = ravel_pytree(params)[0]
    np.testing.assert_array_equal(H.ravel(params), flat)
    back = H.unravel(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)


def test_precision_is_applied_and_labelled():
    _, loss_fn, params, batch = _setup()
    v = jnp.ones(cv.hessian(loss_fn, params, batch).size)
    for precision, tag in [("highest", "HIGHEST"), ("tensorfloat32", "HIGH")]:
        H = cv.hessian(loss_fn, params, batch, precision=precision)
        assert H.precision == precision
        text = str(jax.make_jaxpr(H.matvec)(v))
        assert f"Precision.{tag}" in text and "Precision.DEFAULT" not in text
    low = cv.ggn(loss_fn, params, batch, precision="bfloat16")
    assert low.precision == "bfloat16"
    assert bool(jnp.all(jnp.isfinite(low.matvec(v))))
    with pytest.raises(ValueError, match="precision"):
        cv.hessian(loss_fn, params, batch, precision="fp8")


def test_loss_kwargs_batchnorm_stats_are_passed(x64):
    model, loss_fn, params, batch = _setup(jnp.float64, norm="batch", n=8)
    stats = model.stats(params, batch[0][:5])  # population statistics differ from the batch's
    H_fixed = cv.hessian(loss_fn, params, batch, stats=stats)
    ref = _dense_hessian(loss_fn, params, batch, stats=stats)
    np.testing.assert_allclose(_dense(H_fixed), ref, rtol=0, atol=1e-12 * _scale(ref))
    H_batch = cv.hessian(loss_fn, params, batch)
    assert _scale(_dense(H_batch) - ref) > 1e-3 * _scale(ref)  # the mode matters
    # Dataset-level operators pass the same state through to model.apply.
    G_data = cv.ggn(loss_fn, params, batch, batch_size=3, stats=stats)
    G_full = cv.ggn(loss_fn, params, batch, stats=stats)
    np.testing.assert_allclose(_dense(G_data), _dense(G_full), rtol=0, atol=1e-12)
    H_data = cv.hessian(loss_fn, params, batch, batch_size=3, stats=stats)
    np.testing.assert_allclose(_dense(H_data), ref, rtol=0, atol=1e-12 * _scale(ref))


# -------------------------------------------------------------------------------------- GGN


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_matches_dense_jacobian_form(x64, loss):
    model, loss_fn, params, batch = _setup(jnp.float64, loss=loss)
    G = cv.ggn(loss_fn, params, batch)
    ref = _dense_ggn(model, params, batch, loss)
    np.testing.assert_allclose(_dense(G), ref, rtol=0, atol=1e-12 * _scale(ref))
    # The autodiff fallback (a per-example loss that is not one of the closed forms) agrees.
    base = loss_fn.per_example
    G_auto = cv.ggn(None, params, batch, model=model, per_example=lambda o, t: base(o, t))
    np.testing.assert_allclose(_dense(G_auto), ref, rtol=0, atol=1e-12 * _scale(ref))


def test_ggn_soft_labels_and_sequence_outputs(x64):
    # Outputs (n, T, C) with soft labels: the closed form (scaled by Σ labels, averaged over T)
    # equals the autodiff fallback.
    n, t = 3, 2
    w = jr.normal(jr.key(0), (D_IN, CLASSES), jnp.float64)
    apply = lambda p, x: jnp.einsum("ntd,dc->ntc", x, p["w"])
    x = jr.normal(jr.key(1), (n, t, D_IN), jnp.float64)
    y = 0.7 * jax.nn.softmax(jr.normal(jr.key(2), (n, t, CLASSES), jnp.float64), axis=-1)
    ce = ll.losses.softmax_cross_entropy
    G = cv.ggn(None, {"w": w}, (x, y), model=apply, per_example=ce)
    G_auto = cv.ggn(None, {"w": w}, (x, y), model=apply, per_example=lambda o, y: ce(o, y))
    np.testing.assert_allclose(_dense(G), _dense(G_auto), rtol=0, atol=1e-13)
    # For a linear model with cross-entropy the Hessian is exactly the GGN.
    loss = lambda p, b: jnp.mean(ce(apply(p, b[0]), b[1]))
    H = cv.hessian(loss, {"w": w}, (x, y))
    np.testing.assert_allclose(_dense(G), _dense(H), rtol=0, atol=1e-13)


def test_ggn_equals_hessian_at_interpolating_point(x64):
    model, _, params, (x, _) = _setup(jnp.float64, loss="mse")
    y = model.apply(params, x)  # zero residual: the model fits its own outputs exactly
    loss_fn = ll.losses.mse(model)
    H = _dense(cv.hessian(loss_fn, params, (x, y)))
    G = _dense(cv.ggn(loss_fn, params, (x, y)))
    np.testing.assert_allclose(G, H, rtol=0, atol=1e-12 * _scale(H))
    # Away from interpolation they differ: the comparison above can fail.
    H_off = _dense(cv.hessian(loss_fn, params, (x, y + 1.0)))
    assert _scale(H_off - G) > 1e-2 * _scale(G)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_is_psd_where_the_hessian_is_not(loss):
    _, loss_fn, params, batch = _setup(loss=loss, seed=3)
    G = _dense(cv.ggn(loss_fn, params, batch))
    H = _dense(cv.hessian(loss_fn, params, batch))
    g_eigs, h_eigs = jnp.linalg.eigvalsh(G), jnp.linalg.eigvalsh(H)
    assert float(g_eigs[0]) >= -1e-5 * float(g_eigs[-1])
    assert float(h_eigs[0]) < -1e-3 * float(h_eigs[-1])
    np.testing.assert_allclose(G, G.T, rtol=0, atol=1e-6 * _scale(G))


def test_ggn_needs_a_model():
    _, loss_fn, params, batch = _setup()
    plain = lambda p, b: loss_fn(p, b)
    with pytest.raises(ValueError, match="model= and per_example="):
        cv.ggn(plain, params, batch)
    with pytest.raises(ValueError, match="sample_fn"):
        cv.fisher(plain, params, batch, key=jr.key(0), model=loss_fn.model, per_example=jnp.abs)
    with pytest.raises(ValueError, match="num_samples"):
        cv.fisher(loss_fn, params, batch, key=jr.key(0), num_samples=0)


# ----------------------------------------------------------------------------------- Fisher


def _per_example_jacobian(model, loss_fn, params, x, y):
    flat, unravel = ravel_pytree(params)
    per_ex = lambda f: loss_fn.per_example(model.apply(unravel(f), x), y)
    return jax.jit(jax.jacobian(per_ex))(flat)  # (n, P)


def test_empirical_fisher_equals_gtg(x64):
    model, loss_fn, params, (x, y) = _setup(jnp.float64)
    G = _per_example_jacobian(model, loss_fn, params, x, y)
    ref = G.T @ G / x.shape[0]
    F = cv.empirical_fisher(loss_fn, params, (x, y))
    np.testing.assert_allclose(_dense(F), ref, rtol=0, atol=1e-12 * _scale(ref))
    # A loss without .model/.per_example is evaluated one example at a time.
    plain = lambda p, b: loss_fn(p, b)
    F_plain = cv.empirical_fisher(plain, params, (x, y))
    np.testing.assert_allclose(_dense(F_plain), ref, rtol=0, atol=1e-12 * _scale(ref))


def test_fisher_expectation_is_the_ggn_exactly(x64):
    # E_{y~p}[g gᵀ] = Jᵀ (diag p − p pᵀ) J, by summing over every class with its probability.
    model, loss_fn, params, (x, _) = _setup(jnp.float64)
    probs = jax.nn.softmax(model.apply(params, x), axis=-1)
    expect = 0.0
    for c in range(CLASSES):
        g = _per_example_jacobian(model, loss_fn, params, x, jnp.full((N,), c))
        expect = expect + jnp.einsum("n,np,nq->pq", probs[:, c], g, g) / N
    labels = jnp.zeros((N,), jnp.int32)  # the GGN of cross-entropy does not depend on them
    ref = _dense(cv.ggn(loss_fn, params, (x, labels)))
    np.testing.assert_allclose(expect, ref, rtol=0, atol=1e-12 * _scale(ref))


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_monte_carlo_fisher_approaches_ggn(loss):
    model, loss_fn, params, batch = _setup(loss=loss)
    ggn = _dense(cv.ggn(loss_fn, params, batch))
    num = 400
    keys = jr.split(jr.key(7), num)
    singles = jax.vmap(lambda k: _dense(cv.fisher(loss_fn, params, batch, key=k)))(keys)
    mean = jnp.mean(singles, axis=0)
    stderr = jnp.std(singles, axis=0) / np.sqrt(num)
    tol = 6 * stderr + 1e-6 * _scale(ggn)
    assert bool(jnp.all(jnp.abs(mean - ggn) <= tol)), float(jnp.max(jnp.abs(mean - ggn) / tol))
    # num_samples draws S targets per example inside one operator: same mean, same error bar.
    F = _dense(cv.fisher(loss_fn, params, batch, key=jr.key(8), num_samples=num))
    assert bool(jnp.all(jnp.abs(F - ggn) <= tol)), float(jnp.max(jnp.abs(F - ggn) / tol))
    # One sample per example is far from the GGN, so the checks above have teeth.
    assert float(jnp.mean(jnp.abs(singles[0] - ggn) > tol)) > 0.5
    # The true labels are not used.
    other = (batch[0], jnp.zeros_like(batch[1]))
    F1 = _dense(cv.fisher(loss_fn, params, batch, key=jr.key(8), num_samples=3))
    F2 = _dense(cv.fisher(loss_fn, params, other, key=jr.key(8), num_samples=3))
    np.testing.assert_array_equal(F1, F2)


SEQ_N, SEQ_T = 2, 3


def _sequence_problem(dtype=jnp.float32, classes_last=True):
    """A linear model with logits (n, T, C) (or (n, C, T)): cross-entropy per position."""
    w = jr.normal(jr.key(0), (D_IN, CLASSES), dtype)
    x = jr.normal(jr.key(1), (SEQ_N, SEQ_T, D_IN), dtype)
    ce = ll.losses.softmax_cross_entropy
    if classes_last:
        apply = lambda p, x: jnp.einsum("ntd,dc->ntc", x, p["w"])
        return apply, ce, None, {"w": w}, x
    # Loss axes (n, T) that are not the leading output axes (n, C, T), with C = T so that
    # the shapes alone cannot tell which output axis is the position.
    apply = lambda p, x: jnp.einsum("ntd,dc->nct", x, p["w"])
    per_example = lambda out, y: ce(jnp.swapaxes(out, 1, 2), y)
    sample_fn = lambda key, out: jr.categorical(key, out, axis=1)
    return apply, per_example, sample_fn, {"w": w}, x


@pytest.mark.parametrize("classes_last", [True, False])
def test_sequence_fisher_is_per_position_and_its_expectation_is_the_ggn(x64, classes_last):
    apply, ce, _, params, x = _sequence_problem(jnp.float64, classes_last)
    flat, unravel = ravel_pytree(params)
    # g[i, t]: gradient of the loss at position t alone, for labels y (n, T).
    per_position = lambda y: jax.jacobian(lambda f: ce(apply(unravel(f), x), y))(flat)
    y = jr.randint(jr.key(3), (SEQ_N, SEQ_T), 0, CLASSES)
    g = per_position(y).reshape(SEQ_N * SEQ_T, -1)
    # With the sampled targets fixed to y: F = (1/(n T)) Σᵢₜ gᵢₜ gᵢₜᵀ.
    F = cv.fisher(None, params, (x, y), key=jr.key(0), model=apply, per_example=ce,
                  sample_fn=lambda key, out: y)  # fmt: skip
    ref = g.T @ g / g.shape[0]
    np.testing.assert_allclose(_dense(F), ref, rtol=0, atol=1e-12 * _scale(ref))
    # Its expectation over y ~ softmax (independent per position) is the GGN: sum each
    # position's rank-one terms over every class with its probability.
    logits = apply(params, x)
    probs = jax.nn.softmax(logits if classes_last else jnp.swapaxes(logits, 1, 2), axis=-1)
    expect = 0.0
    for c in range(CLASSES):
        gc = per_position(jnp.full((SEQ_N, SEQ_T), c))
        expect = expect + jnp.einsum("nt,ntp,ntq->pq", probs[..., c], gc, gc) / (SEQ_N * SEQ_T)
    G = _dense(cv.ggn(None, params, (x, y), model=apply, per_example=ce))
    np.testing.assert_allclose(expect, G, rtol=0, atol=1e-12 * _scale(G))


@pytest.mark.parametrize("classes_last", [True, False])
def test_monte_carlo_fisher_of_sequence_outputs_approaches_ggn(classes_last):
    # Before the fix the mean was the GGN / T (outer products of position-averaged gradients).
    apply, per_example, sample_fn, params, x = _sequence_problem(classes_last=classes_last)
    y = jnp.zeros((SEQ_N, SEQ_T), jnp.int32)  # not used by either operator
    kw = dict(model=apply, per_example=per_example)
    G = _dense(cv.ggn(None, params, (x, y), **kw))
    num = 400
    fisher = lambda k: _dense(cv.fisher(None, params, (x, y), key=k, sample_fn=sample_fn, **kw))
    singles = jax.vmap(fisher)(jr.split(jr.key(7), num))
    mean = jnp.mean(singles, axis=0)
    stderr = jnp.std(singles, axis=0) / np.sqrt(num)
    tol = 6 * stderr + 1e-6 * _scale(G)
    assert bool(jnp.all(jnp.abs(mean - G) <= tol)), float(jnp.max(jnp.abs(mean - G) / tol))
    # The trace, one number: within 4 standard errors of tr(GGN), and far from tr(GGN) / T.
    traces = jnp.trace(singles, axis1=1, axis2=2)
    t_mean, t_err = float(jnp.mean(traces)), float(jnp.std(traces) / np.sqrt(num))
    assert abs(t_mean - float(jnp.trace(G))) <= 4 * t_err
    assert abs(t_mean - float(jnp.trace(G)) / SEQ_T) > 10 * t_err


# ------------------------------------------------------------------------- dataset operators

BUILDERS = {
    "hessian": lambda lf, p, b, **kw: cv.hessian(lf, p, b, **kw),
    "ggn": lambda lf, p, b, **kw: cv.ggn(lf, p, b, **kw),
    "empirical_fisher": lambda lf, p, b, **kw: cv.empirical_fisher(lf, p, b, **kw),
    "fisher": lambda lf, p, b, **kw: cv.fisher(lf, p, b, key=jr.key(5), num_samples=2, **kw),
}


@pytest.mark.parametrize("kind", ["hessian", "ggn", "empirical_fisher"])
def test_dataset_operator_with_ragged_batches_equals_full_batch(x64, kind):
    _, loss_fn, params, batch = _setup(jnp.float64, n=10)
    full = _dense(BUILDERS[kind](loss_fn, params, batch))
    ragged = BUILDERS[kind](loss_fn, params, batch, batch_size=4)  # batches of 4, 4, 2
    np.testing.assert_allclose(_dense(ragged), full, rtol=0, atol=1e-12 * _scale(full))
    if kind != "ggn":
        return
    # A mean of the per-batch means weighs the short batch twice as much: biased.
    x, y = batch
    parts = [BUILDERS[kind](loss_fn, params, (x[i : i + 4], y[i : i + 4])) for i in (0, 4, 8)]
    naive = sum(_dense(p) for p in parts) / 3
    assert _scale(naive - full) > 1e-3 * _scale(full)


def test_dataset_hessian_without_per_example_attributes(x64):
    _, loss_fn, params, batch = _setup(jnp.float64, n=7)
    plain = lambda p, b: loss_fn(p, b)
    H = cv.hessian(plain, params, ll.data.Dataset(*batch, *batch), batch_size=3)
    ref = _dense_hessian(loss_fn, params, batch)
    np.testing.assert_allclose(_dense(H), ref, rtol=0, atol=1e-12 * _scale(ref))


def test_dataset_fisher_with_one_batch_equals_single_batch_fisher():
    _, loss_fn, params, batch = _setup()
    single = _dense(BUILDERS["fisher"](loss_fn, params, batch))
    one = _dense(BUILDERS["fisher"](loss_fn, params, batch, batch_size=N))
    np.testing.assert_allclose(one, single, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kind",
    # The Hessian case also compiles the operator inside jit and eagerly (30 s on 2 cores):
    # CI runs it in its slow step.
    [pytest.param(k, marks=pytest.mark.slow) if k == "hessian" else k for k in BUILDERS],
)
def test_sharded_dataset_operator_equals_unsharded(kind):
    assert len(jax.devices()) >= 4
    mesh = jax.make_mesh((4,), ("data",))
    _, loss_fn, params, batch = _setup(n=10)
    v = jr.normal(jr.key(1), (ravel_pytree(params)[0].size,))
    plain = BUILDERS[kind](loss_fn, params, batch, batch_size=2)  # 5 batches
    sharded = BUILDERS[kind](loss_fn, params, batch, batch_size=2, mesh=mesh)  # 8 over 4 devices
    ref = jax.jit(plain.matvec)(v)
    np.testing.assert_allclose(jax.jit(sharded.matvec)(v), ref, rtol=1e-5, atol=1e-6 * _scale(ref))
    if kind == "hessian":  # also built inside jit, and called eagerly
        jitted = jax.jit(lambda p, v: cv.hessian(loss_fn, p, batch, batch_size=2, mesh=mesh) @ v)
        np.testing.assert_allclose(jitted(params, v), ref, rtol=1e-5, atol=1e-6 * _scale(ref))
        np.testing.assert_allclose(sharded.matvec(v), ref, rtol=1e-5, atol=1e-6 * _scale(ref))
        # make_mesh's axes are Explicit (sharding in the array types): the spectra still run.
        top = ll.spectrum.eigsh(sharded, k=2, key=jr.key(2)).eigenvalues
        ref_top = ll.spectrum.eigsh(plain, k=2, key=jr.key(2)).eigenvalues
        np.testing.assert_allclose(top, ref_top, rtol=1e-4)


def test_dataset_operator_argument_errors():
    _, loss_fn, params, batch = _setup()
    with pytest.raises(ValueError, match="batch_size"):
        cv.ggn(loss_fn, params, batch, batch_size=0)
    with pytest.raises(ValueError, match="mesh"):
        cv.ggn(loss_fn, params, batch, mesh="cpu")
    with pytest.raises(ValueError, match="batch"):
        cv.ggn(loss_fn, params, batch[0])
    with pytest.raises(ValueError, match="leading"):
        cv.ggn(loss_fn, params, (batch[0], batch[1][:2]))
    # A vector of the wrong shape is named, for every kind of operator.
    ops = (
        cv.hessian(loss_fn, params, batch),
        cv.ggn(loss_fn, params, batch, batch_size=2),
        cv.restrict(cv.hessian(loss_fn, params, batch), params, "Dense_0"),
    )
    # Integer leaves cannot carry a tangent: named at build time, not as a jvp error.
    with_int = {"net": params, "step": jnp.array(3, jnp.int32)}
    with pytest.raises(ValueError, match=r"params: leaf \['step'\] has dtype int32"):
        cv.hessian(lambda p, b: loss_fn(p["net"], b), with_int, batch)
    with pytest.raises(ValueError, match="key: expected a PRNG key"):
        cv.fisher(loss_fn, params, batch, key=None)
    for op in ops:
        with pytest.raises(ValueError, match=rf"v: expected a flat vector of shape \({op.size},\)"):
            op.matvec(jnp.ones(op.size + 1))
        with pytest.raises(ValueError, match="v: expected"):
            op.matvec(jnp.ones((op.size, 2)))


# ------------------------------------------------------------------------- parameter blocks


def _block_index(params, keep):
    mask = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full(leaf.shape, keep(tuple(k.key for k in path))), params
    )
    return np.flatnonzero(np.asarray(ravel_pytree(mask)[0]))


@pytest.mark.parametrize(
    "select, keep",
    [
        ("Dense_0", lambda path: path[0] == "Dense_0"),
        (
            ["Dense_1/bias", "Dense_0/kernel"],
            lambda path: path in {("Dense_1", "bias"), ("Dense_0", "kernel")},
        ),
        (lambda path: path[-1] == "kernel", lambda path: path[-1] == "kernel"),
    ],
)
def test_restricted_operator_is_the_sub_block(x64, select, keep):
    _, loss_fn, params, batch = _setup(jnp.float64)
    H = cv.hessian(loss_fn, params, batch)
    full = _dense(H)
    idx = _block_index(params, keep)
    R = cv.restrict(H, params, select)
    assert R.size == idx.size < H.size
    np.testing.assert_allclose(_dense(R), full[np.ix_(idx, idx)], rtol=0, atol=1e-14)
    u = jnp.arange(R.size, dtype=jnp.float64)
    np.testing.assert_array_equal(R.ravel(R.unravel(u)), u)
    np.testing.assert_array_equal(H.ravel(R.unravel(u))[idx], u)


def test_blocks_cover_every_layer_and_bad_selections_raise():
    _, loss_fn, params, batch = _setup()
    G = cv.ggn(loss_fn, params, batch)
    ops = cv.blocks(G, params)
    assert list(ops) == ["Dense_0", "Dense_1"]
    assert sum(op.size for op in ops.values()) == G.size
    assert ops["Dense_0"].name == "ggn[Dense_0]"
    with pytest.raises(ValueError, match="Dense_9"):
        cv.restrict(G, params, ["Dense_0", "Dense_9"])
    with pytest.raises(ValueError, match="selects no parameters"):
        cv.restrict(G, params, lambda path: False)
    with pytest.raises(ValueError, match="size"):
        cv.restrict(G, {"a": jnp.ones(3)}, "a")
    # Top-level names may contain "/" (Haiku's "mlp/~/linear_0"); bare arrays have none.
    named = {"mlp/~/linear_0": jnp.ones(2), "mlp/~/linear_1": jnp.ones(3)}
    diag = cv.from_matrix(jnp.diag(jnp.arange(1.0, 6.0)))
    np.testing.assert_array_equal(
        cv.blocks(diag, named)["mlp/~/linear_1"].dense(), jnp.diag(jnp.arange(3.0, 6.0))
    )
    with pytest.raises(ValueError, match="params"):
        cv.blocks(diag, jnp.ones(5))
    # A parameter-free entry (e.g. an activation layer's empty dict or array) has no block.
    with_empty = {"a": jnp.ones(2), "act": jnp.zeros((0,)), "b": jnp.ones(3)}
    assert list(cv.blocks(diag, with_empty)) == ["a", "b"]


# ------------------------------------------------------------------------ jit / vmap contract

CONTRACT = {
    **BUILDERS,
    "dataset_hessian": lambda lf, p, b: cv.hessian(lf, p, b, batch_size=4),
    "restricted_ggn": lambda lf, p, b: cv.restrict(cv.ggn(lf, p, b), p, "Dense_1"),
}


@pytest.mark.parametrize("kind", list(CONTRACT))
def test_vmap_over_members_equals_loop_and_jit_equals_no_jit(kind):
    """The contract: vmap over 3 members == a loop of jitted calls == an eager call."""
    model, loss_fn, _, batch = _setup(n=7)
    members = jax.vmap(model.init)(jr.split(jr.key(11), 3))
    build = CONTRACT[kind]
    size = build(loss_fn, jax.tree.map(lambda a: a[0], members), batch).size
    vs = jr.normal(jr.key(12), (3, size))
    product = lambda p, v: build(loss_fn, p, batch).matvec(v)
    member = lambda i: jax.tree.map(lambda a: a[i], members)
    jitted = jax.jit(product)
    loop = jnp.stack([jitted(member(i), vs[i]) for i in range(3)])
    scale = _scale(loop)
    batched = jax.jit(jax.vmap(product))(members, vs)
    np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-5 * scale)
    assert batched.dtype == jnp.float32
    np.testing.assert_allclose(product(member(2), vs[2]), loop[2], rtol=0, atol=1e-5 * scale)
