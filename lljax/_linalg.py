"""Dense linear algebra (LAPACK) that cannot deadlock jaxlib 0.10's CPU runtime.

jaxlib 0.10.x splits a *batched* LAPACK call (``eigh``, ``svd``, ``qr``, ``solve``, ...)
into chunks on XLA:CPU's intra-op thread pool and blocks the pool worker running the call
until the chunks finish. When the runtime executes as many such calls at once as the pool
has workers (two independent ``vmap``-ed eigendecompositions on a 2-core machine are
enough), every worker waits for chunks that no free worker is left to run, and the
program hangs forever. A native stack of the hung ``lljax run spectra`` shows both workers
in ``lapack_ssyevd_ffi -> ParallelBatchMap -> BlockingCounter::Wait``; jaxlib 0.11.1
removed that path. ``--xla_cpu_multi_thread_eigen=false`` does not avoid it.

The functions here equal their :mod:`jax.numpy.linalg` namesakes. On an affected jaxlib
and the CPU they run a batch (leading dimensions or :func:`jax.vmap`) one matrix at a time
with :func:`jax.lax.map`, which does not fan out; on other backends or jaxlib versions,
and for derivatives, they are the plain functions.

>>> import jax, jax.numpy as jnp
>>> from lljax import _linalg
>>> a = jnp.stack([jnp.diag(jnp.array([3.0, 1.0, 2.0])) * s for s in (1.0, 2.0)])
>>> jax.vmap(_linalg.eigvalsh)(a).tolist()
[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jaxlib
from jax import lax
from jax.custom_batching import custom_vmap


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# The batch-parallel LAPACK path exists from jaxlib 0.10.0 and is gone from 0.11.1.
AFFECTED = (0, 10, 0) <= _version(jaxlib.__version__) < (0, 11, 1)


def _one_at_a_time(fn: Callable, name: str, *, affected: bool = AFFECTED) -> Callable:
    """``fn`` of unbatched arrays; on the CPU its batches run as a sequential loop.

    The first argument is a matrix whose leading dimensions, if any, are batch dimensions;
    a further argument with as many dimensions shares them (``solve``'s batched right-hand
    sides, as in :func:`jnp.linalg.solve`) and is broadcast otherwise; ``vmap`` may batch
    any of them.
    """
    if not affected:
        return fn

    @custom_vmap
    def single(*args):
        return fn(*args)

    @single.def_vmap
    def _rule(axis_size, in_batched, *args):
        del axis_size

        def body(mapped):
            it = iter(mapped)
            return single(*[next(it) if b else a for a, b in zip(args, in_batched, strict=True)])

        out = lax.map(body, [a for a, b in zip(args, in_batched, strict=True) if b])
        return out, jax.tree.map(lambda _: True, out)

    def sequential(*args):
        nd = jnp.ndim(args[0])
        if nd <= 2:
            return single(*args)
        rest = tuple(0 if jnp.ndim(x) >= nd else None for x in args[1:])
        return jax.vmap(sequential, in_axes=(0, *rest))(*args)

    @jax.custom_jvp
    def wrapped(*args):
        return lax.platform_dependent(*args, cpu=sequential, default=fn)

    # Derivatives use the plain function (batched again under vmap); lljax takes none.
    wrapped.defjvp(lambda primals, tangents: jax.jvp(fn, primals, tangents))
    wrapped.__doc__ = f"``{name}`` on CPU-safe batches; see the module docstring."
    return wrapped


eigh = _one_at_a_time(jnp.linalg.eigh, "jnp.linalg.eigh")
eigvalsh = _one_at_a_time(jnp.linalg.eigvalsh, "jnp.linalg.eigvalsh")
qr = _one_at_a_time(jnp.linalg.qr, "jnp.linalg.qr")
svdvals = _one_at_a_time(
    functools.partial(jnp.linalg.svd, compute_uv=False), "jnp.linalg.svd(compute_uv=False)"
)
solve = _one_at_a_time(jnp.linalg.solve, "jnp.linalg.solve")
pinv = _one_at_a_time(jnp.linalg.pinv, "jnp.linalg.pinv")
