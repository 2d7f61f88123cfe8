"""lljax._linalg: LAPACK wrappers that run CPU batches one matrix at a time on jaxlib 0.10."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from lljax import _linalg

PLAIN = {
    "eigh": jnp.linalg.eigh,
    "eigvalsh": jnp.linalg.eigvalsh,
    "qr": jnp.linalg.qr,
    "svdvals": functools.partial(jnp.linalg.svd, compute_uv=False),
    "pinv": jnp.linalg.pinv,
}


def _symmetric(key, shape, dtype=jnp.float64):
    a = jr.normal(key, shape, dtype)
    return a + jnp.swapaxes(a, -1, -2)


def _wrappers(affected):
    if affected == _linalg.AFFECTED:
        return {name: getattr(_linalg, name) for name in PLAIN} | {"solve": _linalg.solve}
    # The other jaxlib's behaviour, so both paths are tested on any installed version.
    fns = PLAIN | {"solve": jnp.linalg.solve}
    return {name: _linalg._one_at_a_time(fn, name, affected=affected) for name, fn in fns.items()}


@pytest.mark.parametrize("affected", [True, False])
def test_wrappers_equal_jnp_linalg_batched_vmapped_jitted_and_differentiated(affected):
    with jax.enable_x64(True):
        safe = _wrappers(affected)
        a = _symmetric(jr.key(0), (2, 3, 5, 5))
        b = jr.normal(jr.key(1), (3, 5), jnp.float64)
        for name, plain in PLAIN.items():
            f = safe[name]
            ref = plain(a)
            # Leading batch dimensions, nested vmap and jit(vmap) all give the same bits.
            for got in (f(a), jax.vmap(jax.vmap(f))(a), jax.jit(jax.vmap(f))(a.reshape(6, 5, 5))):
                jax.tree.map(
                    lambda g, r: np.testing.assert_array_equal(g.reshape(r.shape), r), got, ref
                )
        # solve: vmap over the right-hand side only, and over both arguments.
        np.testing.assert_array_equal(
            jax.vmap(safe["solve"], (None, 0))(a[0, 0], b),
            jax.vmap(jnp.linalg.solve, (None, 0))(a[0, 0], b),
        )
        np.testing.assert_array_equal(
            jax.vmap(safe["solve"])(a[0], b), jax.vmap(jnp.linalg.solve)(a[0], b)
        )
        # ... and right-hand sides batched as leading dimensions.
        rhs = jr.normal(jr.key(2), (2, 3, 5, 2), jnp.float64)
        np.testing.assert_allclose(safe["solve"](a, rhs), jnp.linalg.solve(a, rhs), rtol=1e-12)
        # Derivatives, also under vmap, are the plain function's.
        top = lambda fn: lambda m: fn(m)[-1] ** 2  # noqa: E731
        np.testing.assert_array_equal(
            jax.vmap(jax.grad(top(safe["eigvalsh"])))(a[0]),
            jax.vmap(jax.grad(top(jnp.linalg.eigvalsh)))(a[0]),
        )


@pytest.mark.skipif(
    jax.default_backend() != "cpu" or not _linalg.AFFECTED,
    reason="only the CPU of jaxlib 0.10.x splits batched LAPACK calls over its thread pool",
)
def test_cpu_lapack_calls_are_unbatched_on_affected_jaxlib():
    # The deadlock needs a batched LAPACK call (num_batch_dims > 0); the wrappers must lower
    # to unbatched ones inside a loop, while plain jnp.linalg under vmap is batched.
    def lapack_batch_dims(fn, *args):
        text = jax.jit(jax.vmap(fn)).lower(*args).as_text()
        lines = [ln for ln in text.splitlines() if "custom_call @lapack_" in ln]
        assert lines, "no LAPACK call found"
        return {int(ln.split('num_batch_dims = "')[1].split('"')[0]) for ln in lines}

    a = _symmetric(jr.key(0), (4, 6, 6), jnp.float32)
    b = jnp.ones((4, 6), jnp.float32)
    safe = _wrappers(True)
    for name, plain in PLAIN.items():
        assert lapack_batch_dims(safe[name], a) == {0}, name
        assert lapack_batch_dims(plain, a) != {0}, name
    assert lapack_batch_dims(safe["solve"], a, b) == {0}
