"""Curvature as matrix-free linear operators over flat parameter vectors.

An :class:`Operator` is a ``matvec`` closure over vectors of length ``size`` (the params
pytree raveled once), with its dtype, a way back to pytrees (``unravel``) and ``dense()``
for small models and tests. Spectra algorithms (:mod:`lljax.spectrum`) take any operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Operator(NamedTuple):
    """A symmetric linear operator ``v -> A v`` on flat vectors.

    Attributes:
      matvec: ``matvec(v) -> A v`` for ``v`` of shape ``(size,)``.
      size: the dimension.
      dtype: dtype of vectors it acts on.
      unravel: flat vector -> params-shaped pytree (identity for plain matrices).
      name: what the operator is (``"hessian"``, ``"ggn"``, ...), recorded in results.
      precision: matmul precision used inside ``matvec`` (``"highest"`` by default).
    """

    matvec: Callable[[jax.Array], jax.Array]
    size: int
    dtype: Any
    unravel: Callable[[jax.Array], Any] = lambda v: v
    name: str = "operator"
    precision: str = "highest"

    def dense(self) -> jax.Array:
        """The exact ``(size, size)`` matrix, one matvec per basis vector (small models only)."""
        eye = jnp.eye(self.size, dtype=self.dtype)
        return jax.lax.map(self.matvec, eye).T

    def __matmul__(self, v):
        return self.matvec(v)


def from_matrix(a: jax.Array, name: str = "matrix") -> Operator:
    """Wraps a symmetric ``(n, n)`` array as an :class:`Operator` (tests, toy problems).

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([1.0, 2.0])))
      >>> op.matvec(jnp.ones(2)).tolist()
      [1.0, 2.0]
    """
    a = jnp.asarray(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"a: expected a square matrix, got shape {a.shape}")
    return Operator(lambda v: a @ v, int(a.shape[0]), a.dtype, name=name)
