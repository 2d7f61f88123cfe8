"""Spectra of curvature operators: Lanczos, eigenpairs, densities, traces, diagonals.

Every function here takes an :class:`~lljax.curvature.Operator` (or, for :func:`lanczos`,
a bare ``matvec`` and its ``size``) and never materialises a matrix. All of them are pure,
take their randomness as a keyword-only ``key``, compile under :func:`jax.jit` and lift
over a population with :func:`jax.vmap`: build the operator inside the vmapped function,

>>> import jax, jax.numpy as jnp, lljax as ll
>>> mats = jnp.stack([jnp.diag(jnp.arange(1.0, 6.0) * s) for s in (1.0, 2.0, 3.0)])
>>> top = jax.vmap(lambda a: ll.spectrum.eigsh(
...     ll.curvature.from_matrix(a), k=1, key=jax.random.key(0)).eigenvalues)(mats)
>>> [round(float(t), 4) for t in top[:, 0]]
[5.0, 10.0, 15.0]

Numerics (see each function for details):

* Lanczos vectors live in the operator's dtype. The Krylov scalars (α, β, norms) are
  accumulated in float64 whenever float64 is enabled, even for a float32 operator; with
  float64 off they are computed with blocked (two-level) float32 sums, whose rounding error
  grows like ``sqrt(size / 1024) + 32`` ulps instead of ``sqrt(size)``. Nothing here flips
  the global ``jax_enable_x64`` flag.
* Full reorthogonalisation follows the three-term recurrence with classical Gram–Schmidt
  against the whole basis, repeated when the Kahan–Parlett test asks for it ("twice is
  enough", Giraud et al. 2005): two matrix products, ``2 · rows · size`` reads per step,
  twice that on the rare steps that need a second pass (under ``vmap``, a batching rule
  runs it for all members only when one of them needs it).
* Matrix products inside use ``precision="highest"`` so a GPU never silently uses TF32.
* A breakdown (β ≈ 0: the Krylov space is invariant) never produces NaN: the coupling is
  set to zero, the event is counted, and Lanczos continues from a fresh random vector
  orthogonal to the basis. The tridiagonal then splits into blocks; Ritz values of every
  block are eigenvalues of the operator, and quadrature weights of the later blocks are
  exactly zero, so densities stay correct.

References:
  Lanczos (1950); Paige (1972); Parlett, *The Symmetric Eigenvalue Problem* (1998).
  Wu & Simon, thick-restart Lanczos, SIAM J. Matrix Anal. Appl. 22 (2000).
  Giraud, Langou, Rozloznik, "twice is enough", Comput. Math. Appl. 50 (2005).
  Ubaru, Chen & Saad, stochastic Lanczos quadrature (2017).
  Ghorbani, Krishnan & Xiao, arXiv:1901.10159; Yao et al. (PyHessian), arXiv:1912.07145.
  Papyan, arXiv:1811.07062 and JMLR 21 (2020), arXiv:2008.11865.
  Hutchinson (1990); Meyer, Musco, Musco & Woodruff (Hutch++), arXiv:2010.09649.
  Bekas, Kokiopoulou & Saad, diagonal estimation (2007).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax

from lljax import _linalg
from lljax.curvature import Operator, from_matrix
from lljax.train import _check_int, _check_sign, as_key

_HIGHEST = lax.Precision.HIGHEST
_WHICH = ("LA", "SA", "LM")

# --------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------


class LanczosResult(NamedTuple):
    """Output of :func:`lanczos`.

    Attributes:
      alpha: ``(num_steps,)`` diagonal of the tridiagonal ``T``.
      beta: ``(num_steps,)`` couplings; ``beta[j]`` links step ``j`` and ``j + 1``, so the
        off-diagonal of ``T`` is ``beta[:-1]`` and ``beta[-1]`` is the norm of the final
        residual (the ``β_m`` of the Ritz residual bound). Zero where a breakdown occurred.
      basis: ``(num_steps, size)`` orthonormal Lanczos vectors (rows), or ``None`` unless
        ``return_basis=True``.
      breakdown: whether any breakdown (invariant subspace) occurred.
      num_breakdowns: how many times Lanczos restarted from a fresh vector.
      num_valid: steps taken before the first breakdown (``num_steps`` if none); the first
        ``num_valid`` steps form the Krylov space of the starting vector.
      dropped: ``(num_steps,)`` the tiny β values set to zero at breakdowns (enter the
        residual bounds of :func:`ritz`).
    """

    alpha: jax.Array
    beta: jax.Array
    basis: jax.Array | None
    breakdown: jax.Array
    num_breakdowns: jax.Array
    num_valid: jax.Array
    dropped: jax.Array


class RitzResult(NamedTuple):
    """Ritz pairs of a Lanczos run (:func:`ritz`), ascending.

    Attributes:
      values: ``(num_steps,)`` Ritz values (eigenvalues of ``T``), ascending.
      vectors: ``(size, num_steps)`` Ritz vectors as columns, or ``None`` without a basis.
      bounds: ``(num_steps,)`` residual bounds ``‖A y − θ y‖ ≤ |β_m s_m| (+ breakdowns)``.
      weights: ``(num_steps,)`` squared first components of the eigenvectors of ``T``
        (Gauss quadrature weights of the starting vector's spectral measure).
    """

    values: jax.Array
    vectors: jax.Array | None
    bounds: jax.Array
    weights: jax.Array


class EigshResult(NamedTuple):
    """Output of :func:`eigsh`.

    Attributes:
      eigenvalues: ``(k,)``; ``"LA"`` descending, ``"SA"`` ascending, ``"LM"`` by
        descending magnitude.
      eigenvectors: ``(size, k)`` unit eigenvectors as columns (as ``jnp.linalg.eigh``),
        or ``None`` with ``return_eigenvectors=False``.
      residuals: ``(k,)`` ``‖A v − λ v‖`` from real matvecs (the Ritz bounds without
        eigenvectors).
      bounds: ``(k,)`` Lanczos residual bounds at the end: ``|β_m s_m|``, or for a block
        the norm of the projected residual block times ``s``.
      converged: ``(k,)`` bool, bound ≤ ``tol · |λ|`` (or at the attainable floor).
      num_restarts: thick restarts performed.
      num_matvecs: operator applications used, including the residual check.
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array | None
    residuals: jax.Array
    bounds: jax.Array
    converged: jax.Array
    num_restarts: jax.Array
    num_matvecs: jax.Array


class Estimate(NamedTuple):
    """A stochastic estimate with its standard error (same shape as ``value``)."""

    value: jax.Array
    stderr: jax.Array


class PowerIterationResult(NamedTuple):
    """Output of :func:`power_iteration`: the top-|λ| pair, its residual and iterations used."""

    eigenvalue: jax.Array
    eigenvector: jax.Array
    residual: jax.Array
    num_iters: jax.Array


class SmoothedDensity(NamedTuple):
    """A Gaussian-smoothed spectral density on a grid (:meth:`DensityResult.smooth`).

    Attributes:
      grid: ``(num_points,)`` eigenvalue grid.
      density: ``(num_points,)`` probe-mean density (integrates to 1 over the real line).
      stderr: ``(num_points,)`` standard error of the mean over probes (NaN with one probe).
      sigma: the Gaussian standard deviation used, in eigenvalue units.
    """

    grid: jax.Array
    density: jax.Array
    stderr: jax.Array
    sigma: jax.Array


class DensityResult(NamedTuple):
    """Stochastic Lanczos quadrature (:func:`density`): raw nodes and weights per probe.

    Each probe ``p`` gives a Gauss quadrature ``Σ_k weights[p, k] f(nodes[p, k])`` of
    ``v_pᵀ f(A) v_p / ‖v_p‖²``; the spectral measure ``(1/n) Σ_i δ(λ_i)`` is their mean.

    Attributes:
      nodes: ``(num_probes, num_steps)`` Ritz values, ascending per probe.
      weights: ``(num_probes, num_steps)`` nonnegative, each row sums to 1.
      bounds: ``(num_probes, num_steps)`` Ritz residual bounds of the nodes.
    """

    nodes: jax.Array
    weights: jax.Array
    bounds: jax.Array

    def sigma(self, preset: str = "papyan", *, kappa: float = 3.0) -> jax.Array:
        """Kernel standard deviation (eigenvalue units) of a published smoothing convention.

        * ``"pyhessian"`` (Yao et al. 2020, ``density_generate``): a Gaussian *variance*
          ``1e-5 · max(1, λ_max − λ_min)`` with ``λ_max``/``λ_min`` the probe-mean of the
          largest/smallest node ± 0.01; so ``σ = sqrt(1e-5 · max(1, range))``.
        * ``"papyan"`` (Papyan 2020, ``LanczosApproxSpec``, App. D.2): the spectrum range
          (nodes ± their residual bounds, plus a 5% margin each side) is mapped to
          ``[-1, 1]`` and smoothed with ``σ = 2 / ((M − 1) sqrt(8 ln κ))``, ``M`` the number
          of Lanczos steps, ``κ = 3``; in eigenvalue units that is multiplied by the
          half-width ``d`` of the range.
        """
        lo, hi = self.range(preset)
        if preset == "pyhessian":
            return jnp.sqrt(1e-5 * jnp.maximum(1.0, hi - lo))
        if preset == "papyan":
            m = self.nodes.shape[-1]
            if kappa <= 1.0:
                raise ValueError(f"kappa: expected a value > 1, got {kappa}")
            if m < 2:
                raise ValueError("preset: 'papyan' needs num_steps >= 2 (its width is 1/(M − 1))")
            # A zero-width window (every node equal, e.g. a zero operator) gets the width
            # of the nodes' rounding, so the density is a narrow peak, never 0/0.
            eps = jnp.finfo(jnp.result_type(self.nodes)).eps
            width = jnp.maximum(hi - lo, eps * jnp.maximum(1.0, jnp.maximum(abs(hi), abs(lo))))
            return width / 2 * 2.0 / ((m - 1) * math.sqrt(8.0 * math.log(kappa)))
        raise ValueError(f"preset: expected 'pyhessian' or 'papyan', got {preset!r}")

    def range(self, preset: str = "papyan") -> tuple[jax.Array, jax.Array]:
        """The eigenvalue window a convention plots over (see :meth:`sigma`)."""
        if preset == "pyhessian":
            hi = jnp.mean(jnp.max(self.nodes, axis=-1)) + 0.01
            lo = jnp.mean(jnp.min(self.nodes, axis=-1)) - 0.01
            return lo, hi
        if preset == "papyan":
            lo = jnp.min(self.nodes - self.bounds)
            hi = jnp.max(self.nodes + self.bounds)
            margin = 0.05 * (hi - lo)
            return lo - margin, hi + margin
        raise ValueError(f"preset: expected 'pyhessian' or 'papyan', got {preset!r}")

    def smooth(
        self,
        grid: jax.Array | None = None,
        sigma: float | jax.Array | None = None,
        *,
        preset: str | None = None,
        num_points: int = 1024,
    ) -> SmoothedDensity:
        """Gaussian-smoothed density with a standard-error band over probes.

        Args:
          grid: eigenvalues to evaluate at; default ``num_points`` points over the
            preset's window (or the nodes' range ± 3σ).
          sigma: kernel standard deviation in eigenvalue units. Give either ``sigma`` or
            ``preset`` (``"pyhessian"`` or ``"papyan"``, see :meth:`sigma`).
          preset: a published convention for ``sigma`` and the default grid.
          num_points: grid size when ``grid`` is None.

        Returns:
          A :class:`SmoothedDensity`; ``density`` integrates to 1 over the real line (unlike
          PyHessian's, which is renormalised on its grid).
        """
        if (sigma is None) == (preset is None):
            raise ValueError("sigma/preset: give exactly one of sigma (eigenvalue units) or preset")
        if preset is not None:
            sigma = self.sigma(preset)
        elif not isinstance(sigma, jax.core.Tracer) and not np.all(
            (np.asarray(sigma) > 0) & np.isfinite(np.asarray(sigma))
        ):
            raise ValueError(
                f"sigma: expected a finite kernel width > 0 (eigenvalue units), got {sigma}"
            )
        sigma = jnp.asarray(sigma, self.nodes.dtype)
        if grid is None:
            if preset is not None:
                lo, hi = self.range(preset)
            else:
                lo, hi = jnp.min(self.nodes) - 3 * sigma, jnp.max(self.nodes) + 3 * sigma
            grid = jnp.linspace(lo, hi, num_points)
        grid = jnp.asarray(grid, self.nodes.dtype)
        z = (grid[None, None, :] - self.nodes[:, :, None]) / sigma
        kernel = jnp.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
        per_probe = jnp.sum(self.weights[:, :, None] * kernel, axis=1)
        num_probes = per_probe.shape[0]
        mean = jnp.mean(per_probe, axis=0)
        stderr = _stderr(per_probe, axis=0) if num_probes > 1 else jnp.full_like(mean, jnp.nan)
        return SmoothedDensity(grid, mean, stderr, sigma)


# --------------------------------------------------------------------------------------
# Small numerical helpers
# --------------------------------------------------------------------------------------


def _scalar_dtype(dtype) -> Any:
    """float64 for the Krylov scalars whenever float64 is enabled."""
    if jax.config.jax_enable_x64:
        return jnp.float64
    return jnp.dtype(dtype)


def _dot(x: jax.Array, y: jax.Array, sdt) -> jax.Array:
    """An accurate inner product of two vectors, returned in the scalar dtype ``sdt``.

    With float64 available the products of float32 entries are exact in float64 and so is,
    to rounding, their sum. Without it, a two-level blocked sum keeps the accumulated
    rounding error near ``(sqrt(block) + sqrt(n / block)) · eps`` rather than growing with
    ``n`` (XLA does not reassociate floating-point sums, so the blocking is honoured).
    """
    if jnp.dtype(sdt) != x.dtype:
        return jnp.sum(x.astype(sdt) * y.astype(sdt))
    n = x.shape[-1]
    block = 1024
    if n <= 4 * block:
        return jnp.sum(x * y)
    pad = (-n) % block
    prod = jnp.pad(x * y, (0, pad))
    return jnp.sum(jnp.sum(prod.reshape(-1, block), axis=1))


def _norm(x: jax.Array, sdt) -> jax.Array:
    """‖x‖ in the scalar dtype ``sdt``, safe from under- and overflow.

    Squares of float32 entries below ~1e-19 flush to zero and above ~1e19 overflow, so in
    float32 an operator of scale 1e-20 (the Hessian at a confident, correct classifier)
    would look like a zero matrix; the vector is divided by its largest entry first. In a
    wider ``sdt`` the squares are exact and need no scaling.
    """
    if jnp.dtype(sdt) != x.dtype:
        return jnp.sqrt(_dot(x, x, sdt))
    m = jnp.max(jnp.abs(x))
    m = jnp.where((m > 0) & jnp.isfinite(m), m, jnp.ones_like(m))
    y = x / m
    return m.astype(sdt) * jnp.sqrt(_dot(y, y, sdt))


def _stderr(samples: jax.Array, axis: int = 0) -> jax.Array:
    num = samples.shape[axis]
    return jnp.std(samples, axis=axis, ddof=1) / math.sqrt(num)


def _widen(matvec, dtype):
    """``(matvec, dtype)`` for the Krylov algebra: float16/bfloat16 operators keep their
    products, but their vectors and scalars are float32 (LAPACK has no half-precision
    solvers, and half-precision Gram–Schmidt would leave the basis orthogonal to ~1e-3)."""
    dtype = jnp.dtype(dtype)
    if not (jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4):
        return matvec, dtype
    return (lambda v: matvec(v).astype(jnp.float32)), jnp.dtype(jnp.float32)


def _as_operator(op) -> Operator:
    if isinstance(op, Operator):
        pass
    elif hasattr(op, "matvec") and hasattr(op, "size"):
        op = Operator(op.matvec, int(op.size), getattr(op, "dtype", jnp.float32))
    elif isinstance(op, jax.Array | np.ndarray):
        op = from_matrix(op)
    else:
        raise ValueError(
            f"op: expected an Operator (matvec, size, ...) or a square array, got {op!r}"
        )
    matvec, dtype = _widen(op.matvec, op.dtype)
    return op if matvec is op.matvec else op._replace(matvec=matvec, dtype=dtype)


def _device_memory_free() -> int | None:
    """Free bytes on the default device, or None where the backend does not say (CPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory stats
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _check_basis_memory(rows: int, size: int, dtype, budget: int | None, hint: str) -> None:
    nbytes = rows * size * jnp.dtype(dtype).itemsize
    limit = budget
    if limit is None:
        free = _device_memory_free()
        # Leave room for the operator itself (activations of an HVP, etc.).
        limit = None if free is None else int(0.8 * free)
    if limit is not None and nbytes > limit:
        raise ValueError(
            f"the Lanczos basis ({rows} vectors × {size} × {jnp.dtype(dtype).name} = "
            f"{nbytes / 2**30:.2f} GiB) does not fit the memory budget "
            f"({limit / 2**30:.2f} GiB). {hint}"
        )


_LOW_MEMORY_HINT = (
    "Lower-memory paths: eigsh(op, k, num_steps=<small>, tol=...) keeps only num_steps vectors "
    "and restarts (thick restart) until converged; lanczos/density with "
    "reorthogonalize=False store no basis (O(size) memory); density(..., probe_batch_size=1) "
    "runs probes one at a time. Pass memory_budget=<bytes> to override this check."
)


def _tridiagonal(alpha: jax.Array, beta: jax.Array) -> jax.Array:
    off = beta[:-1]
    return jnp.diag(alpha) + jnp.diag(off, 1) + jnp.diag(off, -1)


# --------------------------------------------------------------------------------------
# Lanczos core
# --------------------------------------------------------------------------------------


def _gs_pass(Qp: jax.Array, V: jax.Array, mask: jax.Array) -> jax.Array:
    """One classical Gram–Schmidt pass: ``V - (V Qpᵀ ⊙ mask) Qp`` as two matrix products.

    Both products must read the tall basis ``Qp`` row-major with its long axis contiguous
    (``Qp Vᵀ``, then ``H Qp``). XLA otherwise folds the small transpose between them into
    the first product's layout, which then streams ``Qp`` in the slow orientation (5–6×
    slower on XLA:CPU for a 91 × 670k basis); the optimisation barriers keep the transpose
    a tiny explicit copy.
    """
    Ht = lax.dot_general(Qp, V, (((1,), (1,)), ((), ())), precision=_HIGHEST)  # (rows, b)
    Ht = lax.optimization_barrier(Ht * mask[:, None])
    H = lax.optimization_barrier(jnp.stack([Ht[:, i] for i in range(V.shape[0])]))
    return V - lax.dot_general(H, Qp, (((1,), (0,)), ((), ())), precision=_HIGHEST)


def _combine(Q: jax.Array, C: jax.Array) -> jax.Array:
    """``Qᵀ C``: columns that combine the basis rows, ``(rows, n), (rows, k) -> (n, k)``.

    Computed as ``(Cᵀ Q)ᵀ`` with the transposes kept explicit (see :func:`_gs_pass`): 5×
    faster on XLA:CPU than contracting the basis' first axis into an ``(n, k)`` product.
    """
    C = lax.optimization_barrier(C.T.astype(Q.dtype))
    Y = lax.dot_general(C, Q, (((1,), (0,)), ((), ())), precision=_HIGHEST)
    return lax.optimization_barrier(Y).T


# Kahan–Parlett / DGKS criterion: a second Gram–Schmidt pass is needed only when the first
# cancelled more than this fraction of a vector's norm (Giraud et al. 2005).
_REORTH_ETA = 0.5**0.5


def _project_impl(Q: jax.Array, V: jax.Array, j: jax.Array, sdt) -> jax.Array:
    """:func:`_project` for ``Q`` ``(..., rows, n)`` and ``V`` ``(..., b, n)``."""
    lead = jnp.broadcast_shapes(Q.shape[:-2], V.shape[:-2])
    mask = (jnp.arange(Q.shape[-2]) <= j).astype(V.dtype)
    norms = jax.vmap(lambda v: _norm(v, sdt))
    gs = _gs_pass
    Qf, Vf = Q, V
    if lead:  # flattened to one batch axis; none at all when unbatched, since a batch of
        # one would still pick XLA's slower batched matmul kernels
        Qf = jnp.broadcast_to(Q, lead + Q.shape[-2:]).reshape((-1,) + Q.shape[-2:])
        Vf = jnp.broadcast_to(V, lead + V.shape[-2:]).reshape((-1,) + V.shape[-2:])
        gs, norms = jax.vmap(gs, (0, 0, None)), jax.vmap(norms)
    before = norms(Vf)
    Vf = gs(Qf, Vf, mask)
    again = jnp.any(norms(Vf) < _REORTH_ETA * before)
    Vf = lax.cond(again, lambda V: gs(Qf, V, mask), lambda V: V, Vf)
    return Vf.reshape(lead + V.shape[-2:])


@functools.cache
def _projector(sdt) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``project(Q, V, j)`` for Krylov scalars in ``sdt``, with its own batching rule.

    Under ``vmap`` a ``lax.cond`` with a batched predicate becomes a ``select`` that runs
    both branches. The rule instead keeps the members as a leading axis and runs the second
    pass (for all of them) only when some member needs it, so a vmapped population or
    batch of probes pays for the second pass as rarely as a single run. It calls
    ``project`` again, so nested ``vmap``s (seeds × probes) stack leading axes the same way.
    """

    @jax.custom_batching.custom_vmap
    def project(Q, V, j):
        return _project_impl(Q, V, j, sdt)

    @project.def_vmap
    def _batched(axis_size, in_batched, Q, V, j):
        q_b, v_b, j_b = in_batched
        if j_b:  # a per-member step counter: plain vmap (the cond becomes a select)
            impl = functools.partial(_project_impl, sdt=sdt)
            axes = (0 if q_b else None, 0 if v_b else None, 0)
            return jax.vmap(impl, axes)(Q, V, j), True
        Q = Q if q_b else jnp.broadcast_to(Q, (axis_size,) + Q.shape)
        V = V if v_b else jnp.broadcast_to(V, (axis_size,) + V.shape)
        return project(Q, V, j), True

    return project


def _project(Q: jax.Array, V: jax.Array, j: jax.Array, sdt) -> jax.Array:
    """Orthogonalise the rows of ``V`` (``(b, n)``) against rows ``0..j`` of the basis ``Q``.

    One classical Gram–Schmidt pass, and a second one whenever a row lost more than
    ``1 − 1/√2`` of its norm in the first ("twice is enough" with the Kahan–Parlett test,
    which keeps ``|Qᵀv| / ‖v‖`` at rounding level): a real ``lax.cond``, also under
    ``vmap`` (see :func:`_projector`).

    The whole preallocated basis is read, its unfilled rows masked out of the coefficients:
    XLA materialises a slice before a matrix product, and slicing the filled prefix
    (a ``lax.switch`` over block-aligned lengths, or a loop over blocks) measured slower
    than reading the zero rows on XLA:CPU.
    """
    return _projector(jnp.dtype(sdt))(Q, V, jnp.asarray(j, jnp.int32))


def _breakdown(beta, wnorm, scale, dtype, num_steps: int):
    """Whether the new residual ``beta`` is rounding, not a coupling.

    Two tests: ``beta`` is lost to cancellation against ``wnorm = ‖A q_j‖`` (an invariant
    subspace, an eigenvector as start), or it is within a few ``eps`` of the largest
    coupling seen (``scale ≈ ‖A‖``). The second floor must stay near ``eps · ‖A‖``: a
    bulk ``10⁵×`` below an outlier has couplings of a few hundred ``eps · ‖A‖`` in float32,
    which a tolerance growing with the steps (``10 √m eps · ‖A‖``) once dropped, keeping
    only a few bulk Ritz values. Rounding just above the floor gives a coupling of that
    size, which moves Ritz values by as much: the float rounding level anyway.
    """
    eps = float(jnp.finfo(dtype).eps)
    local = 10.0 * math.sqrt(num_steps) * eps * wnorm
    return (beta <= local) | (beta <= 4.0 * eps * scale)


def _mark_dropped(broke, beta):
    """The coupling a breakdown drops, at least the smallest normal number so that an exact
    zero (a zero operator, an eigenvector as start) still marks the breakdown."""
    return jnp.where(broke, jnp.maximum(beta, jnp.finfo(beta.dtype).tiny), 0.0)


class _ExtendOut(NamedTuple):
    Q: jax.Array
    H: jax.Array
    dropped: jax.Array
    scale: jax.Array


def _extend_full(matvec, Q, H, start: int, stop: int, key, scale, sdt) -> _ExtendOut:
    """Band Lanczos columns ``start..stop-1`` with full reorthogonalisation.

    The block size ``b`` is implied by the shapes: ``Q`` is ``(stop + b, n)`` with rows
    ``0..start + b - 1`` filled and orthonormal, and ``H`` is ``(stop + b, stop + b)``, the
    projection ``Qᵀ A Q`` so far. Column ``c`` applies the operator to row ``c`` and writes
    row ``c + b``: the basis spans the block Krylov space of the first ``b`` rows, and ``H``
    is banded with ``b`` off-diagonals (``b = 1``: the tridiagonal of single-vector
    Lanczos). Couplings to rows below ``start`` (kept Ritz vectors after a thick restart)
    are left to Gram–Schmidt; ``H`` already holds them. ``dropped[r]`` is the coupling
    zeroed at a breakdown that wrote row ``r``.

    When ``b`` divides ``stop - start``, the ``b`` rows a group of columns multiplies all
    exist when the group starts, so their products are one vmapped ``matvec`` (for an HVP
    the primal pass is then shared by the whole block).
    """
    n = Q.shape[1]
    b = Q.shape[0] - stop
    group = b if (stop - start) % b == 0 else 1
    dtype = Q.dtype
    tiny = float(jnp.finfo(dtype).eps) ** 0.5
    R = jr.normal(key, (n,), dtype)
    window = jnp.arange(-b, b)  # rows c-b..c-1 (known from earlier columns), c..c+b-1 (new)

    def column(carry, c, w):
        Q, H, scale, dropped = carry
        wnorm = _norm(w, sdt)
        rows = c + window
        live = rows >= start
        rows = jnp.clip(rows, 0, Q.shape[0] - 1)
        W = Q[rows]  # (2b, n)
        fresh = jax.vmap(lambda q: _dot(q, w, sdt))(W[b:])
        coef = jnp.where(live, jnp.concatenate([H[c, rows[:b]], fresh]), 0.0)
        # The band recurrence first, so Gram–Schmidt only removes rounding-level
        # components and a second pass is rarely needed.
        w = w - lax.dot_general(coef.astype(dtype), W, (((0,), (0,)), ((), ())), precision=_HIGHEST)
        # A fresh random direction is orthogonalised alongside w (same reads of the basis),
        # so a breakdown can restart without a pass of its own or control flow. Cyclic
        # shifts of one Gaussian vector are independent almost surely and, unlike a PRNG
        # call per step, cost nothing to compile.
        V = _project(Q, jnp.stack([w, jnp.roll(R, c)]), c + b - 1, sdt)
        w, r = V[0], V[1]
        beta = _norm(w, sdt)
        scale = jnp.maximum(scale, jnp.maximum(jnp.max(jnp.abs(fresh)), beta))
        broke = _breakdown(beta, wnorm, scale, dtype, stop)
        rnorm = _norm(r, sdt)
        r_ok = rnorm > tiny * math.sqrt(n)  # ‖r‖ before projection ≈ sqrt(n)
        safe_beta = jnp.where(broke, 1.0, beta).astype(dtype)
        safe_r = jnp.where(r_ok, rnorm, 1.0).astype(dtype)
        new = jnp.where(broke, jnp.where(r_ok, r / safe_r, jnp.zeros_like(r)), w / safe_beta)
        Q = lax.dynamic_update_index_in_dim(Q, new, c + b, 0)
        beta_rec = jnp.where(broke, 0.0, beta).astype(sdt)
        H = H.at[c, rows[b:]].set(fresh).at[rows[b:], c].set(fresh)
        H = H.at[c + b, c].set(beta_rec).at[c, c + b].set(beta_rec)
        dropped = dropped.at[c + b].set(_mark_dropped(broke, beta))
        return Q, H, scale, dropped

    def step(carry, c0):
        if group == 1:
            w = matvec(lax.dynamic_index_in_dim(carry[0], c0, keepdims=False))
            return column(carry, c0, w.astype(dtype)), None
        AW = jax.vmap(matvec)(lax.dynamic_slice_in_dim(carry[0], c0, group)).astype(dtype)
        carry, _ = lax.scan(
            lambda cr, i: (column(cr, c0 + i, AW[i]), None), carry, jnp.arange(group)
        )
        return carry, None

    dropped = jnp.zeros((Q.shape[0],), sdt)
    carry = (Q, H, scale, dropped)
    (Q, H, scale, dropped), _ = lax.scan(step, carry, jnp.arange(start, stop, group))
    return _ExtendOut(Q, H, dropped, scale)


def _lanczos_local(matvec, q0, num_steps: int, key, sdt, store: bool):
    """Lanczos with only local (three-term) orthogonalisation: O(size) memory."""
    n = q0.shape[0]
    dtype = q0.dtype
    R = jr.normal(key, (n,), dtype)
    Q = jnp.zeros((num_steps, n), dtype) if store else None

    def step(carry, j):
        q, q_prev, beta_prev, scale, Q = carry
        w = matvec(q).astype(dtype)
        wnorm = _norm(w, sdt)
        alpha = _dot(q, w, sdt)
        w = w - alpha.astype(dtype) * q - beta_prev.astype(dtype) * q_prev
        # One local re-projection against q (cheap) keeps the three-term recurrence tight.
        w = w - _dot(q, w, sdt).astype(dtype) * q
        beta = _norm(w, sdt)
        scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
        broke = _breakdown(beta, wnorm, scale, dtype, num_steps)
        r = jnp.roll(R, j)
        r = r - _dot(q, r, sdt).astype(dtype) * q - _dot(q_prev, r, sdt).astype(dtype) * q_prev
        r = r / _norm(r, sdt).astype(dtype)
        nxt = jnp.where(broke, r, w / jnp.where(broke, 1.0, beta).astype(dtype))
        beta_rec = jnp.where(broke, 0.0, beta)
        if Q is not None:
            Q = lax.dynamic_update_index_in_dim(Q, q, j, 0)
        return (nxt, q, beta_rec, scale, Q), (alpha, beta_rec, _mark_dropped(broke, beta))

    init = (q0, jnp.zeros_like(q0), jnp.zeros((), sdt), jnp.zeros((), sdt), Q)
    (_, _, _, _, Q), (alpha, beta, dropped) = lax.scan(step, init, jnp.arange(num_steps))
    return Q, alpha, beta, dropped


def _start_vector(key, size, dtype, v0, sdt):
    if v0 is None:
        v = jr.normal(key, (size,), dtype)
    else:
        v = jnp.asarray(v0, dtype)
        if v.shape != (size,):
            raise ValueError(f"v0: expected shape ({size},), got {v.shape}")
        # A zero start vector would give NaN; fall back to a random one.
        fallback = jr.normal(key, (size,), dtype)
        v = jnp.where(jnp.any(v != 0), v, fallback)
    return v / _norm(v, sdt).astype(dtype)


def _start_block(key, size, b, dtype, v0, sdt):
    """``b`` orthonormal start rows; the first along ``v0`` when one is given."""
    q0 = _start_vector(key, size, dtype, v0, sdt)
    if b == 1:
        return q0[None]
    rest = jr.normal(jr.fold_in(key, 1), (b - 1, size), dtype)
    Q, _ = _linalg.qr(jnp.concatenate([q0[None], rest]).T)
    return Q.T * jnp.sign(jnp.sum(Q[:, 0] * q0))  # QR keeps the first direction up to sign


def _lanczos_run(matvec, size, num_steps, key, v0, reorthogonalize, store, dtype):
    sdt = _scalar_dtype(dtype)
    k_start, k_restart = jr.split(key)
    q0 = _start_vector(k_start, size, dtype, v0, sdt)
    if reorthogonalize:
        Q = jnp.zeros((num_steps + 1, size), dtype).at[0].set(q0)
        H = jnp.zeros((num_steps + 1, num_steps + 1), sdt)
        out = _extend_full(matvec, Q, H, 0, num_steps, k_restart, jnp.zeros((), sdt), sdt)
        j = jnp.arange(num_steps)
        alpha, beta = out.H[j, j], out.H[j + 1, j]
        return out.Q[:num_steps] if store else None, alpha, beta, out.dropped[1:]
    return _lanczos_local(matvec, q0, num_steps, k_restart, sdt, store)


def lanczos(
    matvec: Callable[[jax.Array], jax.Array] | Operator,
    size: int | None = None,
    num_steps: int = 90,
    key: jax.Array | None = None,
    *,
    v0: jax.Array | None = None,
    reorthogonalize: bool = True,
    return_basis: bool = False,
    dtype=None,
    memory_budget: int | None = None,
) -> LanczosResult:
    """Symmetric Lanczos tridiagonalisation ``A Qᵀ ≈ Qᵀ T`` from a random start.

    Args:
      matvec: ``v -> A v`` on ``(size,)`` vectors (``A`` symmetric), or an Operator.
      size: the dimension (taken from the Operator when one is given).
      num_steps: Lanczos steps ``m`` (≤ ``size``); static.
      key: PRNG key for the start vector and for restarts after breakdowns.
      v0: optional start vector (normalised here).
      reorthogonalize: ``True`` (default) reorthogonalises every new vector against the
        whole basis (classical Gram–Schmidt, twice when needed), so Ritz values have no
        spurious copies; memory ``(m + 1) · size``. ``False`` keeps only the three-term
        recurrence (O(size) memory; fine for quadrature, but converged Ritz values may
        repeat).
      return_basis: also return the ``(m, size)`` basis (rows).
      dtype: vector dtype; default the Operator's, else the default float dtype.
      memory_budget: bytes allowed for the basis; default 80% of the device's free
        memory where the backend reports it. A ValueError names lower-memory paths.

    Returns:
      A :class:`LanczosResult`. Use :func:`ritz` for Ritz values, vectors and bounds.

    Raises:
      ValueError: bad sizes, or a basis that would not fit in memory.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> a = jnp.diag(jnp.arange(1.0, 11.0))
      >>> res = ll.spectrum.lanczos(lambda v: a @ v, 10, 10, jax.random.key(0))
      >>> r = ll.spectrum.ritz(res)
      >>> [round(float(x), 4) for x in r.values[-2:]]
      [9.0, 10.0]

    References:
      Lanczos (1950); Paige (1972); Giraud, Langou & Rozloznik (2005).
    """
    if isinstance(matvec, Operator):
        op = matvec
        if size is not None and size != op.size:
            raise ValueError(f"size: {size!r} differs from the operator's size {op.size}")
        size = op.size
        dtype = op.dtype if dtype is None else dtype
        matvec = op.matvec
    if size is None:
        raise ValueError("size: expected a positive integer, got None")
    size = _check_int(size, "size")
    key = as_key(key)
    if not 1 <= _check_int(num_steps, "num_steps") <= size:
        raise ValueError(f"num_steps: expected 1 <= num_steps <= size={size}, got {num_steps}")
    num_steps = int(num_steps)
    dtype = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    matvec, dtype = _widen(matvec, dtype)
    if reorthogonalize:
        _check_basis_memory(num_steps + 1, size, dtype, memory_budget, _LOW_MEMORY_HINT)
    Q, alpha, beta, dropped = _lanczos_run(
        matvec, size, num_steps, key, v0, reorthogonalize, return_basis, dtype
    )
    broke = dropped != 0
    first = jnp.argmax(broke)
    num_valid = jnp.where(jnp.any(broke), first + 1, num_steps)
    return LanczosResult(
        alpha=alpha,
        beta=beta,
        basis=Q,
        breakdown=jnp.any(broke),
        num_breakdowns=jnp.sum(broke),
        num_valid=num_valid,
        dropped=dropped,
    )


def ritz(result: LanczosResult) -> RitzResult:
    """Ritz values, vectors (with a basis), residual bounds and quadrature weights.

    The bound for the Ritz pair ``(θ_i, y_i = Qᵀ s_i)`` is ``|β_m s_{m,i}|`` plus, for every
    breakdown at step ``j`` that dropped a coupling ``b``, ``b · ‖(s_{j,i}, s_{j+1,i})‖``.
    With full reorthogonalisation it bounds ``‖A y_i − θ_i y_i‖`` up to rounding.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> a = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
      >>> r = ll.spectrum.ritz(ll.spectrum.lanczos(lambda v: a @ v, 3, 3, jax.random.key(1)))
      >>> bool(jnp.all(r.bounds < 1e-4))
      True
    """
    T = _tridiagonal(result.alpha, result.beta)
    theta, S = _linalg.eigh(T)
    bounds = _ritz_bounds(S, result.beta[-1], result.dropped)
    vectors = None
    if result.basis is not None:
        vectors = _combine(result.basis, S)
    return RitzResult(theta, vectors, bounds, S[0] ** 2)


def _ritz_bounds(S, beta_last, dropped):
    m = S.shape[0]
    bounds = jnp.abs(beta_last * S[m - 1])
    # A dropped coupling b between rows j and j+1 perturbs T by b (e_j e_{j+1}ᵀ + ...).
    Spad = jnp.concatenate([S, jnp.zeros((1, m), S.dtype)], axis=0)
    pair = jnp.sqrt(Spad[:-1] ** 2 + Spad[1:] ** 2)
    dropped_inner = dropped.at[m - 1].set(0.0)  # the last one is β_m itself
    extra = jnp.abs(dropped[m - 1] * S[m - 1])
    return bounds + jnp.sum(jnp.abs(dropped_inner)[:, None] * pair, axis=0) + extra


# --------------------------------------------------------------------------------------
# eigsh: thick-restart Lanczos
# --------------------------------------------------------------------------------------


def _order(theta: jax.Array, which: str) -> jax.Array:
    """Indices of Ritz values from most to least wanted (``theta`` ascending)."""
    m = theta.shape[0]
    if which == "LA":
        return jnp.arange(m - 1, -1, -1)
    if which == "SA":
        return jnp.arange(m)
    return jnp.argsort(-jnp.abs(theta), stable=True)


def eigsh(
    op,
    k: int = 6,
    which: str = "LA",
    *,
    key: jax.Array,
    num_steps: int | None = None,
    tol: float | None = None,
    block_size: int = 1,
    max_restarts: int | jax.Array = 100,
    return_eigenvectors: bool = True,
    v0: jax.Array | None = None,
    memory_budget: int | None = None,
) -> EigshResult:
    """``k`` extreme eigenpairs of a symmetric operator by thick-restart (block) Lanczos.

    A Lanczos basis of ``num_steps`` vectors (full reorthogonalisation) is built; its Ritz
    pairs are checked against ``tol``; if any wanted pair has not converged, the basis is
    compressed to the ``p`` best Ritz vectors (the ``k`` wanted plus about half the rest,
    nearest the wanted end) and the residual direction(s), and extended again — up to
    ``max_restarts`` times, inside a ``lax.while_loop`` (jit- and vmap-compatible; under
    vmap every member runs until all have converged, with finished members frozen).

    Args:
      op: an :class:`~lljax.curvature.Operator` (or a square array).
      k: number of eigenpairs (static).
      which: ``"LA"`` largest algebraic (top), ``"SA"`` smallest algebraic (most
        negative), ``"LM"`` largest magnitude.
      key: PRNG key for the start vector(s).
      num_steps: basis size ``m`` (static), default ``min(size, max(2k + 20, 40, k + 8b))``
        rounded up to a multiple of ``b``. Memory is ``(m + b) · size``: a small ``m`` with
        restarts is the low-memory path.
      tol: relative residual tolerance: a pair is converged when its Lanczos bound
        ``‖A y − θ y‖ ≤ tol · |θ|`` (or ≤ the attainable floor ``50 · eps · max|θ|``).
        Default 1e-5 for float32 vectors, 1e-10 for float64. ``max_restarts=0`` gives a
        single fixed-length Lanczos run.
      block_size: ``b`` start vectors (static). The basis spans a block Krylov space, which
        holds ``b`` copies of an eigenvalue of multiplicity ``≥ b``; ``block_size=k`` finds
        every copy among the ``k`` wanted (see "Repeated eigenvalues"). The ``b`` products
        of a block run as one vmapped ``matvec``. Default 1 (fewest matvecs).
      max_restarts: restart limit (an int, or a traced integer so sweeps share one
        compiled program).
      return_eigenvectors: compute eigenvectors and their true residuals (``k`` extra
        matvecs); otherwise ``residuals`` are the Lanczos bounds.
      v0: optional start vector (the first of the block).
      memory_budget: bytes allowed for the basis (see :func:`lanczos`).

    Returns:
      An :class:`EigshResult`. Precision: vectors in the operator's dtype, Krylov scalars
      and the projected eigenproblem in float64 when enabled.

    Repeated eigenvalues: a Krylov space from one start vector holds one copy of each
    eigenvalue; further copies enter only through rounding and restarts. With
    ``block_size=1`` and a wanted eigenvalue of multiplicity above one, ``eigsh`` can
    return the next distinct values in place of the missing copies, each with a small
    residual and ``converged`` set: bottom-5 of a PSD matrix with a 17-fold zero eigenvalue
    (next eigenvalues 1e-3, 7.6e-3) comes back as ``[0, 0, 0, 1e-3, 7.6e-3]``, not five
    zeros. ``converged`` certifies each returned pair as an eigenpair, not that none was
    skipped. Null spaces (GGN, Fisher, the bottom of a PSD block) and exact symmetries
    (per-layer blocks at uniform predictions, linear models) have such multiplicities:
    pass ``block_size=k`` there. On distinct eigenvalues blocks cost more matvecs
    (measured on a 650-parameter MLP Hessian, top-5 to 1e-10: 81 matvecs at ``b = 1``, 117
    at 2, 190 at 5).

    Raises:
      ValueError: bad ``k``/``which``/``num_steps``/``key``, or a basis too large for memory.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([-3.0, 1.0, 2.0, 5.0])))
      >>> r = ll.spectrum.eigsh(op, k=2, which="LM", key=jax.random.key(0))
      >>> [round(float(x), 4) for x in r.eigenvalues]
      [5.0, -3.0]

      A 17-fold zero eigenvalue needs a block to be found three times:

      >>> lam = jnp.concatenate([jnp.zeros(17), jnp.linspace(1e-3, 1.0, 153)])
      >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (170, 170)))
      >>> op = ll.curvature.from_matrix((q * lam[None, :]) @ q.T)
      >>> for b in (1, 3):
      ...     r = ll.spectrum.eigsh(op, 3, "SA", key=jax.random.key(0), block_size=b)
      ...     print(b, [round(float(x), 3) + 0.0 for x in r.eigenvalues])
      1 [0.0, 0.001, 0.008]
      3 [0.0, 0.0, 0.0]

    References:
      Wu & Simon, SIAM J. Matrix Anal. Appl. 22 (2000); Stathopoulos, Saad & Wu (1998);
      Golub & Underwood, block Lanczos (1977); Ruhe, band Lanczos, Math. Comp. 33 (1979).
    """
    op = _as_operator(op)
    key = as_key(key)
    n = op.size
    if which not in _WHICH:
        raise ValueError(f"which: expected one of {_WHICH}, got {which!r}")
    if not 1 <= _check_int(k, "k") <= n:
        raise ValueError(f"k: expected 1 <= k <= size={n}, got {k}")
    k = int(k)
    b = _check_int(block_size, "block_size")
    if not 1 <= b <= n:
        raise ValueError(f"block_size: expected 1 <= block_size <= size={n}, got {block_size}")
    m = (
        min(n, b * -(-max(2 * k + 20, 40, k + 8 * b) // b))
        if num_steps is None
        else _check_int(num_steps, "num_steps")
    )
    if m > n:
        m = n
    if m < min(n, k + b + 1):
        raise ValueError(
            f"num_steps: expected at least k + block_size + 1 = {k + b + 1} (or size), got {m}"
        )
    if not isinstance(max_restarts, jax.Array | np.ndarray):  # a traced sweep passes
        _check_int(max_restarts, "max_restarts", low=0)
    _check_sign(tol, "tol")
    dtype = jnp.dtype(op.dtype)
    sdt = _scalar_dtype(dtype)
    if tol is None:
        tol = 1e-10 if dtype == jnp.float64 else 1e-5
    eps = float(jnp.finfo(dtype).eps)
    _check_basis_memory(m + b, n, dtype, memory_budget, _LOW_MEMORY_HINT)
    # Vectors kept at a restart: the k wanted and about half the rest, rounded so that b
    # divides the columns added per restart (their products then run as blocks).
    p = max(1, min(k + (m - k) // 2, m - b))
    if m - p >= b:
        p = m - b * ((m - p) // b)

    k_start, k_run = jr.split(key)
    Q = jnp.zeros((m + b, n), dtype).at[:b].set(_start_block(k_start, n, b, dtype, v0, sdt))
    H = jnp.zeros((m + b, m + b), sdt)
    out = _extend_full(op.matvec, Q, H, 0, m, jr.fold_in(k_run, 0), jnp.zeros((), sdt), sdt)

    # Scale-safe (_norm): the Ritz bounds of a 1e-20-scale operator would square to zero.
    column_norms = jax.vmap(lambda c: _norm(c, sdt), in_axes=1)

    def check(H, dropped):
        theta, S = _linalg.eigh(H[:m, :m])
        idx = _order(theta, which)
        # ‖A y − θ y‖ for y = Qᵀ s is ‖H[m:, :m] s‖: the part of A Q outside the basis,
        # plus what breakdowns dropped: y is a unit combination of every column computed
        # since the start, so those couplings add at most their root sum of squares.
        bounds = column_norms(H[m:, :m] @ S[:, idx]) + dropped
        floor = 50 * eps * jnp.max(jnp.abs(theta))
        conv = bounds <= jnp.maximum(tol * jnp.abs(theta[idx]), floor)
        return (theta, S, idx), bounds, conv, jnp.all(conv[:k])

    def cond(state):
        restarts, done = state[2], state[3]
        return (~done) & (restarts < max_restarts)

    def body(state):
        Q, H, restarts, _, scale, dropped, (theta, S, idx) = state
        keep = idx[:p]
        Sk = S[:, keep]  # (m, p)
        Y = lax.dot_general(Sk.astype(dtype), Q[:m], (((0,), (0,)), ((), ())), precision=_HIGHEST)
        Q = Q.at[:p].set(Y).at[p : p + b].set(Q[m:])
        coupling = H[m:, :m] @ Sk  # (b, p)
        # The restarted projection is an arrowhead: diag(θ_kept) coupled to the residual
        # block, then banded again from column p on.
        Hn = jnp.zeros_like(H).at[jnp.arange(p), jnp.arange(p)].set(theta[keep])
        Hn = Hn.at[p : p + b, :p].set(coupling).at[:p, p : p + b].set(coupling.T)
        ext = _extend_full(op.matvec, Q, Hn, p, m, jr.fold_in(k_run, restarts + 1), scale, sdt)
        dropped = jnp.hypot(dropped, _norm(ext.dropped, sdt))
        eig, _, _, done = check(ext.H, dropped)
        return ext.Q, ext.H, restarts + 1, done, ext.scale, dropped, eig

    dropped = _norm(out.dropped, sdt)  # root sum of squares
    eig, _, _, done = check(out.H, dropped)
    state = (out.Q, out.H, jnp.zeros((), jnp.int32), done, out.scale, dropped, eig)
    Q, H, restarts, _, _, dropped, _ = lax.while_loop(cond, body, state)

    (theta, S, idx), bounds, conv, _ = check(H, dropped)
    want = idx[:k]
    values = theta[want]
    num_matvecs = m + restarts * (m - p)
    if not return_eigenvectors:
        return EigshResult(values, None, bounds[:k], bounds[:k], conv[:k], restarts, num_matvecs)
    vecs = _combine(Q, jnp.pad(S[:, want], ((0, b), (0, 0))))  # (n, k); rows m.. unused
    vecs = vecs / column_norms(vecs).astype(dtype)[None, :]
    Av = jax.vmap(op.matvec, in_axes=1, out_axes=1)(vecs)
    resid = column_norms(Av - vecs * values[None, :].astype(dtype))
    return EigshResult(values, vecs, resid, bounds[:k], conv[:k], restarts, num_matvecs + k)


# --------------------------------------------------------------------------------------
# Stochastic estimators
# --------------------------------------------------------------------------------------


def _map_probes(fn, xs, batch_size: int | None):
    """``vmap`` over probes, or ``lax.map`` in chunks of ``batch_size`` to bound memory."""
    if batch_size is None:
        return jax.vmap(fn)(xs)
    return lax.map(fn, xs, batch_size=int(batch_size))


def density(
    op,
    *,
    key: jax.Array,
    num_probes: int = 8,
    num_steps: int = 90,
    reorthogonalize: bool = True,
    probe_batch_size: int | None = None,
    memory_budget: int | None = None,
) -> DensityResult:
    """Spectral density by stochastic Lanczos quadrature (SLQ), probes vmapped.

    For each Rademacher probe ``v`` (normalised) Lanczos gives ``T = S diag(θ) Sᵀ``; the
    nodes ``θ`` and weights ``S[0]²`` are the Gauss quadrature of ``vᵀ f(A) v``, whose mean
    over probes estimates ``(1/n) tr f(A)``. Smooth with :meth:`DensityResult.smooth`.

    Args:
      op: an :class:`~lljax.curvature.Operator`.
      key: PRNG key (probes and restarts).
      num_probes: random probes (static).
      num_steps: Lanczos steps per probe (static; capped at ``size``).
      reorthogonalize: full reorthogonalisation (default; basis memory ``(m+1)·size`` per
        probe in flight). ``False`` uses O(size) memory per probe; the quadrature stays
        accurate but converged nodes may appear more than once with split weights.
      probe_batch_size: run probes in chunks of this many (``lax.map``) instead of all at
        once, to bound memory.
      memory_budget: bytes for the bases in flight (see :func:`lanczos`).

    Returns:
      A :class:`DensityResult` with ``(num_probes, num_steps)`` nodes, weights, bounds.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([1.0, 1.0, 2.0, 4.0])))
      >>> d = ll.spectrum.density(op, key=jax.random.key(0), num_probes=4, num_steps=4)
      >>> round(float(jnp.mean(jnp.sum(d.weights * d.nodes, axis=1))), 3)  # ≈ tr(A)/n = 2
      2.0...

    References:
      Ubaru, Chen & Saad, SIAM J. Matrix Anal. Appl. 38 (2017); arXiv:1901.10159.
    """
    op = _as_operator(op)
    key = as_key(key)
    n = op.size
    if n < 1:
        raise ValueError("op: the operator has size 0; there is no spectrum")
    num_probes = _check_int(num_probes, "num_probes")
    m = min(_check_int(num_steps, "num_steps"), n)
    _check_int(probe_batch_size, "probe_batch_size", optional=True)
    dtype = jnp.dtype(op.dtype)
    if reorthogonalize:
        in_flight = num_probes if probe_batch_size is None else min(probe_batch_size, num_probes)
        hint = _LOW_MEMORY_HINT
        _check_basis_memory(in_flight * (m + 1), n, dtype, memory_budget, hint)
    k_probe, k_run = jr.split(key)
    probes = jr.rademacher(k_probe, (num_probes, n), dtype)
    keys = jr.split(k_run, num_probes)

    def one(args):
        v, kk = args
        _, alpha, beta, dropped = _lanczos_run(
            op.matvec, n, m, kk, v, reorthogonalize, False, dtype
        )
        theta, S = _linalg.eigh(_tridiagonal(alpha, beta))
        return theta, S[0] ** 2, _ritz_bounds(S, beta[-1], dropped)

    nodes, weights, bounds = _map_probes(one, (probes, keys), probe_batch_size)
    return DensityResult(nodes, weights, bounds)


def _rademacher_matvecs(op, key, num, batch_size, dtype):
    _check_int(batch_size, "batch_size", optional=True)
    z = jr.rademacher(key, (num, op.size), dtype)
    az = _map_probes(op.matvec, z, batch_size)
    return z, az.astype(dtype)


def trace(
    op,
    *,
    key: jax.Array,
    num_probes: int = 100,
    method: str = "hutchinson",
    batch_size: int | None = None,
) -> Estimate:
    """Stochastic trace estimate with its standard error, from ``num_probes`` matvecs.

    * ``"hutchinson"``: mean of ``zᵀ A z`` over Rademacher ``z``; standard error
      ``std / sqrt(num_probes)``.
    * ``"hutch++"``: with ``s = num_probes // 3``, ``Q = orth(A S)`` for an ``n × s``
      Rademacher sketch, ``tr(Qᵀ A Q)`` exactly plus Hutchinson on the deflated
      ``(I − QQᵀ) A (I − QQᵀ)`` with the remaining ``num_probes − 2s`` probes; the
      standard error is that of the deflated part given ``Q`` (the low-rank part is exact).
      Same total matvecs as Hutchinson, error ``O(1/num_probes)`` instead of
      ``O(1/sqrt(num_probes))`` on spectra with decaying eigenvalues.

    Args:
      op: an :class:`~lljax.curvature.Operator`.
      key: PRNG key.
      num_probes: total matvecs (static; ≥ 2, and ≥ 4 for Hutch++).
      method: ``"hutchinson"`` or ``"hutch++"``.
      batch_size: apply the operator to this many probes at a time (``lax.map``)
        instead of all at once.

    Returns:
      ``Estimate(value, stderr)`` (scalars, in the operator dtype or float64 if enabled).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.arange(1.0, 5.0)))
      >>> t = ll.spectrum.trace(op, key=jax.random.key(0), num_probes=30, method="hutch++")
      >>> round(float(t.value), 4)
      10.0

    References:
      Hutchinson (1990); Meyer, Musco, Musco & Woodruff, arXiv:2010.09649.
    """
    op = _as_operator(op)
    key = as_key(key)
    num_probes = _check_int(num_probes, "num_probes")  # static: it sizes the probe arrays
    dtype = jnp.dtype(op.dtype)
    sdt = _scalar_dtype(dtype)
    if method == "hutchinson":
        if num_probes < 2:
            raise ValueError(f"num_probes: expected >= 2 for an error bar, got {num_probes}")
        z, az = _rademacher_matvecs(op, key, num_probes, batch_size, dtype)
        samples = jax.vmap(lambda a, b: _dot(a, b, sdt))(z, az)
        return Estimate(jnp.mean(samples), _stderr(samples))
    if method == "hutch++":
        s = num_probes // 3
        g = num_probes - 2 * s
        if s < 1 or g < 2:
            raise ValueError(f"num_probes: expected >= 4 for hutch++, got {num_probes}")
        k_s, k_g = jr.split(key)
        _, a_s = _rademacher_matvecs(op, k_s, s, batch_size, dtype)
        q, _ = _linalg.qr(a_s.T)  # (n, s) orthonormal basis of range(A S)
        aq = _map_probes(op.matvec, q.T, batch_size).astype(dtype)  # (s, n)
        low = jnp.sum(jax.vmap(lambda a, b: _dot(a, b, sdt))(q.T, aq))
        gz = jr.rademacher(k_g, (g, op.size), dtype)
        coef = lax.dot_general(gz, q, (((1,), (0,)), ((), ())), precision=_HIGHEST)
        gz = gz - lax.dot_general(coef, q, (((1,), (1,)), ((), ())), precision=_HIGHEST)
        agz = _map_probes(op.matvec, gz, batch_size).astype(dtype)
        samples = jax.vmap(lambda a, b: _dot(a, b, sdt))(gz, agz)
        return Estimate(low + jnp.mean(samples), _stderr(samples))
    raise ValueError(f"method: expected 'hutchinson' or 'hutch++', got {method!r}")


def diagonal(
    op, *, key: jax.Array, num_probes: int = 100, batch_size: int | None = None
) -> Estimate:
    """Stochastic diagonal estimate ``mean(z ⊙ A z)`` over Rademacher ``z``.

    Unbiased (``z_i² = 1``); the per-entry standard error is ``std / sqrt(num_probes)``.

    Args:
      op: an :class:`~lljax.curvature.Operator`.
      key: PRNG key.
      num_probes: matvecs (static, ≥ 2).
      batch_size: probes per operator application (``lax.map``), default all at once.

    Returns:
      ``Estimate(value, stderr)``, each ``(size,)``.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([1.0, 2.0, 3.0])))
      >>> ll.spectrum.diagonal(op, key=jax.random.key(0), num_probes=4).value.tolist()
      [1.0, 2.0, 3.0]

    References:
      Bekas, Kokiopoulou & Saad, Appl. Numer. Math. 57 (2007).
    """
    op = _as_operator(op)
    key = as_key(key)
    if _check_int(num_probes, "num_probes") < 2:
        raise ValueError(f"num_probes: expected >= 2 for an error bar, got {num_probes}")
    z, az = _rademacher_matvecs(op, key, num_probes, batch_size, jnp.dtype(op.dtype))
    samples = z * az
    return Estimate(jnp.mean(samples, axis=0), _stderr(samples, axis=0))


def negative_fraction(
    op,
    *,
    key: jax.Array,
    num_probes: int = 16,
    num_steps: int = 90,
    threshold: float | jax.Array | None = None,
    reorthogonalize: bool = True,
    probe_batch_size: int | None = None,
) -> Estimate:
    """Fraction of eigenvalues below ``-threshold`` (the saddle index), from SLQ.

    Each probe's quadrature weight on nodes ``< -threshold`` is an estimate; the value is
    their mean and the error bar their standard error (probe variance only: quadrature
    bias is small once ``num_steps`` resolves the spectrum near the threshold).

    ``threshold=None`` (default) is relative, like :func:`exact_negative_fraction`'s:
    ``min(size · eps, sqrt(eps)) · max|θ|`` with ``max|θ|`` the largest Ritz value magnitude
    over all probes (≈ ``max|λ|``) and ``eps`` that of the operator's dtype. A zero
    eigenvalue (a symmetry, a rank-deficient GGN) gives a Ritz node at rounding level, a few
    ``eps · max|λ|`` of either sign in float32 and float64, which with ``threshold=0`` counts
    as negative on about half the probes. The band is capped at ``sqrt(eps)`` (3.5e-4 in
    float32) of ``max|λ|``; negative eigenvalues smaller than that, common beside large
    outliers, are not counted: report the fraction at a few thresholds (``threshold=0.0``
    counts every node below zero) when the spectrum near zero matters. Operators with
    reduced matmul precision (``"bfloat16"``, ``"tensorfloat32"``) round at a coarser level
    than their dtype's ``eps``: pass an explicit ``threshold`` for them.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([-2.0, 0.0, 0.0, 1.0, 3.0, 4.0])))
      >>> f = ll.spectrum.negative_fraction(op, key=jax.random.key(0), num_probes=64)
      >>> bool(abs(f.value - 1 / 6) < 4 * f.stderr + 1e-6)
      True
    """
    _check_sign(threshold, "threshold")  # −1 would count eigenvalues below +1
    given = getattr(op, "dtype", None)
    if given is not None:  # a NumPy float64 matrix runs in float32 unless x64 is on
        given = jax.dtypes.canonicalize_dtype(given)
    op = _as_operator(op)
    # A half-precision operator's products round at its own eps, though the Krylov algebra
    # around them runs in float32.
    given = given if given is not None and jnp.issubdtype(given, jnp.floating) else op.dtype
    eps = float(jnp.finfo(given).eps)
    key = as_key(key)
    d = density(
        op,
        key=key,
        num_probes=num_probes,
        num_steps=num_steps,
        reorthogonalize=reorthogonalize,
        probe_batch_size=probe_batch_size,
    )
    if threshold is None:
        threshold = min(op.size * eps, math.sqrt(eps)) * jnp.max(jnp.abs(d.nodes))
    per_probe = jnp.sum(jnp.where(d.nodes < -threshold, d.weights, 0.0), axis=1)
    # A NaN spectrum (a diverged model) gives NaN, not a confident 0.
    finite = jnp.all(jnp.isfinite(d.nodes) & jnp.isfinite(d.weights), axis=1)
    per_probe = jnp.where(finite, per_probe, jnp.nan)
    err = _stderr(per_probe) if num_probes > 1 else jnp.full((), jnp.nan)
    return Estimate(jnp.mean(per_probe), err)


def exact_negative_fraction(op, threshold: float | None = None) -> jax.Array:
    """Exact fraction of eigenvalues below ``-threshold`` from ``op.dense()`` (small only).

    ``threshold`` defaults to the numerical-rank tolerance ``size · eps · max|λ|`` so that
    exact zeros computed as tiny negatives are not counted.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([-1.0, 0.0, 2.0, 3.0])))
      >>> float(ll.spectrum.exact_negative_fraction(op))
      0.25
    """
    op = _as_operator(op)
    lam = _linalg.eigvalsh(op.dense())
    if threshold is None:
        threshold = op.size * jnp.finfo(lam.dtype).eps * jnp.max(jnp.abs(lam))
    frac = jnp.mean((lam < -threshold).astype(lam.dtype))
    return jnp.where(jnp.all(jnp.isfinite(lam)), frac, jnp.nan)


def power_iteration(
    op,
    *,
    key: jax.Array,
    num_iters: int = 100,
    tol: float = 1e-3,
    v0: jax.Array | None = None,
) -> PowerIterationResult:
    """Power iteration for the largest-magnitude eigenpair (the peers' baseline).

    Stops when the Rayleigh quotient's relative change is below ``tol`` (PyHessian's rule
    ``|λ − λ_prev| / (|λ_prev| + 1e-6) < tol`` without its absolute 1e-6, which stops at
    once when |λ| is far below 1e-6; default ``tol = 1e-3``) or after
    ``num_iters``. Converges at rate ``|λ_2 / λ_1|`` and stops early on slow problems:
    prefer :func:`eigsh`.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([1.0, 2.0, 10.0])))
      >>> r = ll.spectrum.power_iteration(op, key=jax.random.key(0), tol=1e-6)
      >>> round(float(r.eigenvalue), 3)
      10.0
    """
    op = _as_operator(op)
    key = as_key(key)
    num_iters = _check_int(num_iters, "num_iters")
    _check_sign(tol, "tol")
    dtype = jnp.dtype(op.dtype)
    sdt = _scalar_dtype(dtype)
    v = _start_vector(key, op.size, dtype, v0, sdt)

    def cond(state):
        _, lam, lam_prev, it = state
        # Relative, with no absolute term: an operator of scale 1e-20 would "converge" at once.
        settled = jnp.abs(lam - lam_prev) <= tol * jnp.abs(lam_prev)
        return (it < num_iters) & ((it < 2) | ~settled)

    def body(state):
        v, lam, _, it = state
        w = op.matvec(v).astype(dtype)
        lam_new = _dot(v, w, sdt)
        norm = _norm(w, sdt)
        # A zero product (v in the null space) keeps v: any unit vector is then exact.
        v = jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1.0).astype(dtype), v)
        return v, lam_new, lam, it + 1

    zero = jnp.zeros((), sdt)
    v, lam, _, it = lax.while_loop(cond, body, (v, zero, zero, jnp.zeros((), jnp.int32)))
    av = op.matvec(v).astype(dtype)
    lam = _dot(v, av, sdt)
    resid = _norm(av - lam.astype(dtype) * v, sdt)
    return PowerIterationResult(lam, v, resid, it)
