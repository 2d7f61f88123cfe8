"""Geometry around solutions: sharpness, basin volume, slices, interpolation, mode connectivity.

Every function here takes ``loss_fn(params, batch, **loss_kwargs) -> scalar`` and a params
pytree, is pure (randomness is a keyword-only ``key``), jit-compatible (integer counts and
string options are static) and runs under ``jax.vmap`` over a stacked population of params.
Loss evaluations at many points (slice grids, random perturbations, interpolation points) are
``vmap``-ed, or run in chunks of ``chunk_size`` points (``lax.map``) to bound memory.

Sections:

- **Flatness.** :func:`top_eigenvalue`, :func:`hessian_trace`, :func:`epsilon_sharpness`
  (Keskar et al.), :func:`expected_sharpness` (Gaussian perturbations),
  :func:`pac_bayes_flatness` (Jiang et al.'s σ′), :func:`log_determinant` (SLQ) and the
  quadratic-approximation volume :func:`quadratic_log_volume`; :func:`sharpness` collects them
  in one :class:`Sharpness` record.
- **Volume.** :func:`basin_volume`: Monte-Carlo log-volume of an ε-sublevel set from radii
  along random rays (Huang et al.), with a confidence interval.
- **Slices.** :func:`random_direction` with filter normalisation (Li et al.),
  :func:`slice_1d`, :func:`slice_2d`, :func:`hessian_directions`.
- **Paths.** :func:`interpolate` (loss/accuracy on the straight line, barrier heights),
  :func:`instability` (Frankle et al.), :func:`connect` (Bezier / polygonal-chain curves of
  Garipov et al., for any model: the curve is a function of endpoint and control-point
  pytrees).

Examples:
  >>> import jax, jax.numpy as jnp, lljax as ll
  >>> from lljax import geometry
  >>> loss_fn = lambda p, batch: 0.5 * jnp.sum(p["w"] ** 2)
  >>> s = geometry.slice_1d(loss_fn, {"w": jnp.zeros(2)}, None,
  ...                       direction={"w": jnp.array([1.0, 0.0])}, num_points=3)
  >>> s.losses.tolist()
  [0.5, 0.0, 0.5]

References:
  Keskar et al. 2017, arXiv:1609.04836 (ε-sharpness).
  Jiang et al. 2019, arXiv:1912.02178 (PAC-Bayes flatness σ′).
  Huang et al. 2019, arXiv:1906.03291 (basin volume from random rays).
  Li et al. 2018, arXiv:1712.09913 (filter-normalised slices).
  Frankle et al. 2020, arXiv:1912.05671 (linear mode connectivity, instability).
  Garipov et al. 2018, arXiv:1802.10026 (curves between modes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree

from lljax import _static
from lljax import curvature as curvature_lib
from lljax import data as data_lib
from lljax import spectrum as spectrum_lib
from lljax.train import _check_sign, as_key

Params = Any

MEASURES = ("top_eigenvalue", "trace", "epsilon", "expected", "pac_bayes", "log_det")
NORMALIZATIONS = ("filter", "layer", "none")
CURVES = ("bezier", "polychain")


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


def _concrete(value) -> float | None:
    """``float(value)`` for a concrete scalar; None for a tracer (jit/vmap sweeps)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(value)


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


@jax.tree_util.register_pytree_node_class
class _LossKwargs(Mapping):
    """``loss_kwargs`` as one argument of the jitted kernels.

    Array leaves are traced; every other leaf (a string, a Python bool/int/float flag) is
    kept in the tree structure, i.e. static, so ``loss_fn`` sees it as a concrete Python
    value, exactly as when :func:`lljax.curvature.hessian` closes over its kwargs.
    """

    def __init__(self, kwargs):
        self._kwargs = dict(kwargs)

    def __getitem__(self, name):
        return self._kwargs[name]

    def __iter__(self):
        return iter(self._kwargs)

    def __len__(self):
        return len(self._kwargs)

    def tree_flatten(self):
        leaves, treedef = jax.tree.flatten(self._kwargs)
        dynamic = tuple(_is_array(x) for x in leaves)
        arrays = [x for x, d in zip(leaves, dynamic, strict=True) if d]
        static = tuple(_static.Static(x) for x, d in zip(leaves, dynamic, strict=True) if not d)
        return arrays, (treedef, dynamic, static)

    @classmethod
    def tree_unflatten(cls, aux, arrays):
        treedef, dynamic, static = aux
        arrays, static = iter(arrays), iter(static)
        leaves = [next(arrays) if d else next(static).value for d in dynamic]
        return cls(jax.tree.unflatten(treedef, leaves))


def _map(fn: Callable, xs: Any, chunk_size: int | None):
    """``vmap`` over the leading axis, or ``lax.map`` in chunks of ``chunk_size``."""
    if chunk_size is None:
        return jax.vmap(fn)(xs)
    return lax.map(fn, xs, batch_size=_check_int(chunk_size, "chunk_size"))


def _float_dtype(params: Params):
    leaves = jax.tree.leaves(params)
    if not leaves or not sum(jnp.size(x) for x in leaves):
        raise ValueError("params: expected a pytree with at least one parameter")
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"params: expected floating-point leaves, got {dtype}")
    return dtype


def _axpy(a, x: Params, y: Params) -> Params:
    """``y + a x`` leafwise, in ``y``'s dtypes."""
    return jax.tree.map(lambda xi, yi: yi + (a * xi).astype(yi.dtype), x, y)


def _lerp(t, a: Params, b: Params) -> Params:
    # (1 − t) a + t b, not a + t (b − a): exactly b at t = 1, exactly a at t = 0.
    return jax.tree.map(lambda ai, bi: ((1 - t) * ai + t * bi).astype(ai.dtype), a, b)


def _grid(radius, num_points: int, dtype) -> jax.Array:
    """``num_points`` values from −radius to radius, symmetric, built from integers so the
    middle of an odd grid is exactly 0 (``linspace`` gives ±1e-8) and the ends exactly
    ±radius."""
    # At least float32: bfloat16 holds integers exactly only up to 256.
    k = 2 * jnp.arange(num_points, dtype=jnp.promote_types(dtype, jnp.float32)) - (num_points - 1)
    return radius * k / max(num_points - 1, 1)


def _check_like(tree: Params, params: Params, name: str, like: str = "params"):
    """A ValueError unless ``tree`` has the structure and leaf shapes of ``params``."""
    if jax.tree.structure(tree) != jax.tree.structure(params):
        raise ValueError(f"{name}: expected the same tree structure as {like}")
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for (path, a), b in zip(leaves, jax.tree.leaves(tree), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"{name}: leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(b)}, "
                f"expected {jnp.shape(a)} as in {like}"
            )


def _stderr(samples: jax.Array) -> jax.Array:
    n = samples.shape[0]
    if n < 2:  # one draw has no error bar (not a zero one)
        return jnp.full((), jnp.nan, samples.dtype)
    return jnp.std(samples, ddof=1) / math.sqrt(n)


def _bind(loss_fn: Callable, batch: Any, loss_kwargs: dict) -> Callable[[Params], jax.Array]:
    return lambda p: loss_fn(p, batch, **loss_kwargs)


def log_unit_ball_volume(dim: int) -> float:
    """``log V_d = (d/2) log π − log Γ(d/2 + 1)``, the log-volume of the unit ``d``-ball.

    Examples:
      >>> round(math.exp(log_unit_ball_volume(2)), 6)  # π
      3.141593
    """
    dim = _check_int(dim, "dim")
    return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1.0)


# --------------------------------------------------------------------------------------
# Flatness
# --------------------------------------------------------------------------------------


class Eigenvalue(NamedTuple):
    """An eigenvalue with its true residual ``‖H v − λ v‖`` (``v`` a unit vector)."""

    value: jax.Array
    residual: jax.Array


class EpsilonSharpness(NamedTuple):
    """Output of :func:`epsilon_sharpness`.

    Attributes:
      value: Keskar's ``100 · (max_{z∈C_ε} L(w + z) − L(w)) / (1 + L(w))``.
      loss: ``L(w)``.
      max_loss: the largest loss found in the box (a lower bound on the true maximum).
      perturbation: the maximising ``z`` (params-shaped).
    """

    value: jax.Array
    loss: jax.Array
    max_loss: jax.Array
    perturbation: Params


class PacBayesFlatness(NamedTuple):
    """Output of :func:`pac_bayes_flatness`.

    Attributes:
      sigma: σ′, the largest σ found with ``E[L(w + σz)] − L(w) ≤ target_deviation``.
      flatness: ``1 / σ′²`` (Jiang et al.'s ``pacbayes.flatness``; larger is sharper).
      deviation: the Monte-Carlo ``E[L(w + σ′z)] − L(w)`` at σ′.
      deviation_stderr: its standard error over perturbations.
      bracketed: False when the target was not crossed in ``[sigma_min, sigma_max]``
        (σ′ is then the bound that was hit).
    """

    sigma: jax.Array
    flatness: jax.Array
    deviation: jax.Array
    deviation_stderr: jax.Array
    bracketed: jax.Array


class LogDeterminant(NamedTuple):
    """Output of :func:`log_determinant`.

    Attributes:
      value: SLQ estimate of ``log det(H + δI)`` (NaN if a quadrature node is ``≤ −δ``,
        i.e. ``H + δI`` is not positive definite there: raise the damping).
      stderr: standard error over probes.
      min_node: the smallest SLQ node (≈ the smallest eigenvalue of ``H``).
    """

    value: jax.Array
    stderr: jax.Array
    min_node: jax.Array


class Sharpness(NamedTuple):
    """All flatness measures at one point (:func:`sharpness`); unrequested fields are None.

    Attributes:
      loss: ``L(w)`` on the batch.
      top_eigenvalue, top_eigenvalue_residual: largest Hessian eigenvalue (Lanczos) and its
        residual.
      trace, trace_stderr: Hessian trace (Hutch++).
      epsilon_sharpness: Keskar et al.'s measure (×100, normalised by ``1 + L``).
      expected_sharpness, expected_sharpness_stderr: ``E_z[L(w + σz)] − L(w)``.
      pac_bayes_sigma, pac_bayes_flatness: Jiang et al.'s σ′ and ``1/σ′²``.
      log_det, log_det_stderr: ``log det(H + δI)`` by SLQ.
      log_volume: ``log`` volume of ``{z : ½ zᵀ(H + δI)z ≤ ε}`` (:func:`quadratic_log_volume`).
    """

    loss: jax.Array
    top_eigenvalue: jax.Array | None = None
    top_eigenvalue_residual: jax.Array | None = None
    trace: jax.Array | None = None
    trace_stderr: jax.Array | None = None
    epsilon_sharpness: jax.Array | None = None
    expected_sharpness: jax.Array | None = None
    expected_sharpness_stderr: jax.Array | None = None
    pac_bayes_sigma: jax.Array | None = None
    pac_bayes_flatness: jax.Array | None = None
    log_det: jax.Array | None = None
    log_det_stderr: jax.Array | None = None
    log_volume: jax.Array | None = None


def top_eigenvalue(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    num_steps: int | None = None,
    tol: float | None = None,
    **loss_kwargs,
) -> Eigenvalue:
    """The largest Hessian eigenvalue by (thick-restart) Lanczos, with its residual.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the point (a pytree).
      batch: what ``loss_fn`` takes.
      key: PRNG key for the Lanczos start vector.
      num_steps, tol: as in :func:`lljax.spectrum.eigsh`.
      **loss_kwargs: passed to ``loss_fn`` (e.g. ``stats=``).

    Returns:
      An :class:`Eigenvalue`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(jnp.array([1.0, 4.0, 2.0]) * p ** 2)
      >>> r = top_eigenvalue(loss_fn, jnp.zeros(3), None, key=jax.random.key(0))
      >>> round(float(r.value), 4)
      4.0
    """
    return _top_eigenvalue(
        loss_fn,
        params,
        batch,
        as_key(key),
        _LossKwargs(loss_kwargs),
        num_steps=num_steps,
        tol=tol,
    )


@functools.partial(_static.jit, static_argnames=("loss_fn", "num_steps", "tol"))
def _top_eigenvalue(loss_fn, params, batch, key, loss_kwargs, *, num_steps, tol):
    H = curvature_lib.hessian(loss_fn, params, batch, **loss_kwargs)
    r = spectrum_lib.eigsh(H, k=1, which="LA", key=key, num_steps=num_steps, tol=tol)
    return Eigenvalue(r.eigenvalues[0], r.residuals[0])


def hessian_trace(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    num_probes: int = 30,
    method: str = "hutch++",
    **loss_kwargs,
) -> spectrum_lib.Estimate:
    """Hessian trace by Hutch++ (or Hutchinson), ``Estimate(value, stderr)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(jnp.array([1.0, 4.0, 2.0]) * p ** 2)
      >>> t = hessian_trace(loss_fn, jnp.zeros(3), None, key=jax.random.key(0))
      >>> round(float(t.value), 4)
      7.0

    References:
      Meyer et al. 2021, arXiv:2010.09649 (Hutch++).
    """
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"method: expected 'hutchinson' or 'hutch++', got {method!r}")
    num_probes = _check_int(num_probes, "num_probes", low=2)
    return _hessian_trace(
        loss_fn,
        params,
        batch,
        as_key(key),
        _LossKwargs(loss_kwargs),
        num_probes=num_probes,
        method=method,
    )


@functools.partial(_static.jit, static_argnames=("loss_fn", "num_probes", "method"))
def _hessian_trace(loss_fn, params, batch, key, loss_kwargs, *, num_probes, method):
    H = curvature_lib.hessian(loss_fn, params, batch, **loss_kwargs)
    return spectrum_lib.trace(H, key=key, num_probes=num_probes, method=method)


def epsilon_sharpness(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    epsilon: float = 1e-3,
    num_steps: int = 20,
    step_size: float = 0.2,
    num_lanczos_steps: int = 20,
    **loss_kwargs,
) -> EpsilonSharpness:
    """Keskar et al.'s ε-sharpness: the worst loss increase in a parameter-scaled box.

    ``C_ε = {z : |z_i| ≤ ε (|w_i| + 1)}`` and the measure is
    ``100 · (max_{z ∈ C_ε} L(w + z) − L(w)) / (1 + L(w))`` (the ``×100`` and the
    ``1 + L`` normalisation are the paper's). The maximum is taken over the full parameter
    space (the paper's ``A = I``) by projected sign-gradient ascent (the ℓ∞ steepest-ascent
    step suited to a box), ``z ← clip(z + step_size · b ⊙ sign(∇L(w + z)), −b, b)`` with
    ``b = ε(|w| + 1)``, run from two starts: a uniform random point of the box (drawn from
    ``key``) and a *spectral corner* ``±b ⊙ sign(v)``, ``v`` the top eigenvector (by
    ``num_lanczos_steps`` Lanczos steps) of the Hessian in box coordinates
    ``s ↦ L(w + b ⊙ s)`` — the classic rounding for maximising a quadratic over a cube,
    which sign ascent alone misses when the curvature is correlated (it stalls in any
    corner where the gradient points outwards). The best loss over all iterates is kept
    (Keskar et al. used L-BFGS-B from one start).

    Guarantee: maximising even a convex quadratic over a box is NP-hard (it contains
    MAX-CUT), so no ascent is exact in general; ``max_loss`` is the largest loss actually
    evaluated, a lower bound on the true maximum. For ``L(w + z) = L(w) + ½ zᵀHz`` with
    ``H ⪰ 0`` and an exact eigenvector (``num_lanczos_steps ≥`` the number of parameters),
    the spectral corner scores at least ``½ λ_max(BHB)``, ``B = diag(b)`` (the maximum over
    the ball inscribed in the box), and it is an optimal corner — the result is exact —
    when ``H`` is diagonal or there are two parameters.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the point ``w``.
      batch: what ``loss_fn`` takes.
      key: PRNG key for the random start and the Lanczos start vector.
      epsilon: box size (the paper uses 1e-3 and 5e-4).
      num_steps: ascent steps per start (static); each costs one gradient.
      step_size: step as a fraction of the box half-width ``b``.
      num_lanczos_steps: Lanczos steps (Hessian-vector products) for the spectral start
        (static; at least 3, capped at the number of parameters; 0 disables it and keeps
        the random start alone).
      **loss_kwargs: passed to ``loss_fn``.

    Returns:
      An :class:`EpsilonSharpness`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> H = jnp.array([[1.0, -0.9], [-0.9, 1.0]])   # best corner ±(ε, −ε): ½ · 3.8 · ε²
      >>> loss_fn = lambda p, b: 0.5 * p @ H @ p
      >>> r = epsilon_sharpness(loss_fn, jnp.zeros(2), None, key=jax.random.key(0), epsilon=0.1)
      >>> round(float(r.value), 4)                       # 100 · 0.019 / (1 + 0)
      1.9

    References:
      Keskar et al. 2017, "On large-batch training for deep learning: generalization gap
      and sharp minima", arXiv:1609.04836 (Metric 2.1).
    """
    key = as_key(key)
    _float_dtype(params)
    _check_sign(epsilon, "epsilon", positive=True)
    _check_sign(step_size, "step_size", positive=True)
    num_steps = _check_int(num_steps, "num_steps")
    num_lanczos_steps = _check_int(num_lanczos_steps, "num_lanczos_steps", low=0)
    return _epsilon_sharpness(
        loss_fn,
        params,
        batch,
        key,
        epsilon,
        step_size,
        _LossKwargs(loss_kwargs),
        num_steps=num_steps,
        num_lanczos_steps=num_lanczos_steps,
    )


@functools.partial(_static.jit, static_argnames=("loss_fn", "num_steps", "num_lanczos_steps"))
def _epsilon_sharpness(
    loss_fn, params, batch, key, epsilon, step_size, loss_kwargs, *, num_steps, num_lanczos_steps
):
    flat, unravel = ravel_pytree(params)
    f = lambda z: loss_fn(unravel(flat + z), batch, **loss_kwargs)
    loss0 = loss_fn(params, batch, **loss_kwargs)
    bound = epsilon * (jnp.abs(flat) + 1)
    starts = [jr.uniform(key, flat.shape, flat.dtype, -1.0, 1.0) * bound]
    if num_lanczos_steps > 0:
        # Top eigenvector of the Hessian of s ↦ L(w + b ⊙ s): one Lanczos run, no restarts
        # (a start only needs the sign pattern), rounded to a corner; of ±corner (equal to
        # second order) the one the gradient term favours.
        H = curvature_lib.hessian(lambda s, _: f(bound * s), jnp.zeros_like(flat), None)
        m = min(flat.size, max(num_lanczos_steps, 3))
        r = spectrum_lib.eigsh(
            H, k=1, which="LA", key=jr.fold_in(key, 1), num_steps=m, max_restarts=0
        )
        corner = bound * jnp.where(r.eigenvectors[:, 0] >= 0, 1.0, -1.0).astype(flat.dtype)
        starts.append(jnp.where(f(corner) >= f(-corner), corner, -corner))

    def ascend(z0):
        def step(carry, _):
            z, best_z, best = carry
            val, g = jax.value_and_grad(f)(z)
            better = val > best
            best_z = jnp.where(better, z, best_z)
            best = jnp.where(better, val, best)
            z = jnp.clip(z + step_size * bound * jnp.sign(g), -bound, bound)
            return (z, best_z, best), None

        init = (z0, jnp.zeros_like(z0), loss0)  # z = 0 is in the box: the max is >= L(w)
        (z, best_z, best), _ = lax.scan(step, init, None, length=num_steps)
        last = f(z)
        return jnp.where(last > best, z, best_z), jnp.maximum(best, last)

    best_zs, bests = jax.vmap(ascend)(jnp.stack(starts))
    i = jnp.argmax(bests)
    best, best_z = bests[i], best_zs[i]
    value = 100.0 * (best - loss0) / (1.0 + loss0)
    return EpsilonSharpness(value, loss0, best, unravel(best_z))


def _gaussian_deviations(f, flat, keys, sigma, loss0, chunk_size):
    """Per-sample antithetic ``½(L(w + σz) + L(w − σz)) − L(w)``, one ``z`` per key.

    Each ``z`` is drawn inside the mapped function, so ``chunk_size`` bounds the memory of
    the perturbations too (a ``(num_samples, d)`` matrix would not fit for large models);
    the same keys give the same ``z`` at every σ (common random numbers).
    """

    def one(k):
        dz = (sigma * jr.normal(k, flat.shape, flat.dtype)).astype(flat.dtype)
        return 0.5 * (f(flat + dz) + f(flat - dz)) - loss0

    return _map(one, keys, chunk_size)


def expected_sharpness(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    sigma: float = 0.01,
    num_samples: int = 64,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> spectrum_lib.Estimate:
    """``E_z[L(w + σz)] − L(w)`` for ``z ~ N(0, I)``, Monte Carlo with its standard error.

    Antithetic pairs ``±z`` are used (``2 · num_samples`` loss evaluations): the linear term
    ``σ gᵀz`` cancels exactly in each pair, so away from a minimum the estimator keeps only
    the curvature and higher even-order noise. On a quadratic the expectation is exactly
    ``σ²/2 · Tr H``; in general it is ``σ²/2 · Tr H + O(σ⁴)``.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the point ``w``.
      batch: what ``loss_fn`` takes.
      key: PRNG key for the perturbations.
      sigma: perturbation standard deviation (absolute, the same for every parameter).
      num_samples: antithetic pairs (static, ≥ 2 for an error bar).
      chunk_size: evaluate this many pairs at a time instead of all at once.
      **loss_kwargs: passed to ``loss_fn``.

    Returns:
      ``Estimate(value, stderr)``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(p ** 2)        # Tr H = 3
      >>> e = expected_sharpness(loss_fn, jnp.zeros(3), None, key=jax.random.key(0),
      ...                        sigma=0.1, num_samples=2000)
      >>> bool(abs(e.value - 0.015) < 4 * e.stderr)
      True

    References:
      Neyshabur et al. 2017, arXiv:1706.08947 (expected sharpness);
      Jiang et al. 2019, arXiv:1912.02178.
    """
    key = as_key(key)
    _check_sign(sigma, "sigma")
    num_samples = _check_int(num_samples, "num_samples")
    return _expected_sharpness(
        loss_fn,
        params,
        batch,
        key,
        sigma,
        _LossKwargs(loss_kwargs),
        num_samples=num_samples,
        chunk_size=chunk_size,
    )


@functools.partial(_static.jit, static_argnames=("loss_fn", "num_samples", "chunk_size"))
def _expected_sharpness(
    loss_fn, params, batch, key, sigma, loss_kwargs, *, num_samples, chunk_size
):
    flat, unravel = ravel_pytree(params)
    f = lambda v: loss_fn(unravel(v), batch, **loss_kwargs)
    loss0 = f(flat)
    dev = _gaussian_deviations(f, flat, jr.split(key, num_samples), sigma, loss0, chunk_size)
    return spectrum_lib.Estimate(jnp.mean(dev), _stderr(dev))


def pac_bayes_flatness(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    target_deviation: float = 0.1,
    num_samples: int = 32,
    num_bisections: int = 24,
    sigma_min: float = 1e-5,
    sigma_max: float = 10.0,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> PacBayesFlatness:
    """Jiang et al.'s PAC-Bayes flatness: the largest σ′ with ``E[L(w+σ′z)] − L(w) ≤ d``.

    σ′ is found by bisection on ``log σ`` in ``[sigma_min, sigma_max]``. The same
    ``num_samples`` antithetic perturbations ``z ~ N(0, I)`` are reused for every σ
    (common random numbers), so the Monte-Carlo deviation is a smooth function of σ and the
    bisection is well defined. The reported measure is ``1/σ′²`` as in the paper
    (``pacbayes.flatness``; it grows with sharpness). Jiang et al. measure the deviation of
    the training *error* (0-1 loss) with ``d = 0.1``; pass an error function as ``loss_fn``
    to reproduce that exactly (the bisection needs no gradients).

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the point ``w``.
      batch: what ``loss_fn`` takes.
      key: PRNG key for the perturbations.
      target_deviation: ``d``, the allowed increase of the expected loss.
      num_samples: antithetic perturbation pairs (static).
      num_bisections: bisection steps (static); the bracket shrinks by ``2^-k`` in log σ.
      sigma_min, sigma_max: the search range.
      chunk_size: evaluate this many pairs at a time.
      **loss_kwargs: passed to ``loss_fn``.

    Returns:
      A :class:`PacBayesFlatness`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(p ** 2)   # deviation σ²/2 · E‖z‖² ≈ σ²
      >>> r = pac_bayes_flatness(loss_fn, jnp.zeros(2), None, key=jax.random.key(0),
      ...                        target_deviation=0.01, num_samples=4000)
      >>> round(float(r.sigma), 1)
      0.1

    References:
      Jiang et al. 2019, "Fantastic generalization measures and where to find them",
      arXiv:1912.02178; Dziugaite & Roy 2017, arXiv:1703.11008.
    """
    key = as_key(key)
    _check_sign(target_deviation, "target_deviation", positive=True)
    _check_sign(sigma_min, "sigma_min", positive=True)
    _check_sign(sigma_max, "sigma_max", positive=True)
    lo, hi = _concrete(sigma_min), _concrete(sigma_max)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"sigma_max: expected more than sigma_min={lo}, got {hi}")
    num_samples = _check_int(num_samples, "num_samples")
    num_bisections = _check_int(num_bisections, "num_bisections", low=0)
    return _pac_bayes_flatness(
        loss_fn,
        params,
        batch,
        key,
        target_deviation,
        sigma_min,
        sigma_max,
        _LossKwargs(loss_kwargs),
        num_samples=num_samples,
        num_bisections=num_bisections,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit, static_argnames=("loss_fn", "num_samples", "num_bisections", "chunk_size")
)
def _pac_bayes_flatness(
    loss_fn,
    params,
    batch,
    key,
    target_deviation,
    sigma_min,
    sigma_max,
    loss_kwargs,
    *,
    num_samples,
    num_bisections,
    chunk_size,
):
    flat, unravel = ravel_pytree(params)
    f = lambda v: loss_fn(unravel(v), batch, **loss_kwargs)
    loss0 = f(flat)
    keys = jr.split(key, num_samples)
    dev = lambda s: jnp.mean(_gaussian_deviations(f, flat, keys, s, loss0, chunk_size))
    dtype = loss0.dtype
    lo = jnp.log(jnp.asarray(sigma_min, dtype))
    hi = jnp.log(jnp.asarray(sigma_max, dtype))
    ok_hi = dev(jnp.exp(hi)) <= target_deviation
    ok_lo = dev(jnp.exp(lo)) <= target_deviation

    def body(_, bracket):
        a, b = bracket
        mid = 0.5 * (a + b)
        ok = dev(jnp.exp(mid)) <= target_deviation  # NaN counts as too far
        return jnp.where(ok, mid, a), jnp.where(ok, b, mid)

    a, _ = lax.fori_loop(0, num_bisections, body, (lo, hi))
    log_sigma = jnp.where(ok_hi, hi, jnp.where(ok_lo, a, lo))
    sigma = jnp.exp(log_sigma)
    samples = _gaussian_deviations(f, flat, keys, sigma, loss0, chunk_size)
    return PacBayesFlatness(
        sigma, 1.0 / sigma**2, jnp.mean(samples), _stderr(samples), ok_lo & ~ok_hi
    )


def log_determinant(
    op,
    *,
    key: jax.Array,
    damping: float = 1e-3,
    num_probes: int = 8,
    num_steps: int = 30,
    probe_batch_size: int | None = None,
) -> LogDeterminant:
    """``log det(A + δI)`` of a symmetric operator by stochastic Lanczos quadrature.

    With SLQ nodes ``θ_pk`` and weights ``w_pk`` (each probe's weights sum to 1),
    ``log det(A + δI) = tr log(A + δI) ≈ n · mean_p Σ_k w_pk log(θ_pk + δ)``. The error
    bar is the standard error over probes; the quadrature is exact per probe when
    ``num_steps ≥ size``.

    Args:
      op: an :class:`~lljax.curvature.Operator` (e.g. :func:`lljax.curvature.hessian`) or a
        dense symmetric ``(n, n)`` array.
      key: PRNG key for the probes.
      damping: ``δ`` (> 0): regularises near-zero and small negative eigenvalues.
      num_probes, num_steps, probe_batch_size: as in :func:`lljax.spectrum.density`.

    Returns:
      A :class:`LogDeterminant` (NaN value when a node is ``≤ −δ``; check ``min_node``).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> op = ll.curvature.from_matrix(jnp.diag(jnp.array([1.0, 2.0, 4.0])))
      >>> r = jax.jit(lambda: log_determinant(op, key=jax.random.key(0), damping=1e-9,
      ...                                     num_probes=2, num_steps=3))()
      >>> round(float(r.value), 3)   # log 8 (exact: diagonal operator, full quadrature)
      2.079

    References:
      Ubaru, Chen & Saad 2017, SIAM J. Matrix Anal. Appl. 38 (SLQ for log det).
    """
    _check_sign(damping, "damping", positive=True)
    n = _operator_size(op)
    d = spectrum_lib.density(
        op,
        key=as_key(key),
        num_probes=num_probes,
        num_steps=num_steps,
        probe_batch_size=probe_batch_size,
    )
    shifted = d.nodes + damping
    logs = jnp.where(shifted > 0, jnp.log(jnp.where(shifted > 0, shifted, 1.0)), jnp.nan)
    per_probe = n * jnp.sum(d.weights * logs, axis=-1)
    return LogDeterminant(jnp.mean(per_probe), _stderr(per_probe), jnp.min(d.nodes))


def _operator_size(op) -> int:
    # A dense matrix's ``.size`` is n², not the dimension n: check arrays first.
    if _is_array(op):
        if op.ndim != 2 or op.shape[0] != op.shape[1]:
            raise ValueError(f"op: expected a square (n, n) matrix, got shape {op.shape}")
        return int(op.shape[0])
    if hasattr(op, "matvec") and isinstance(getattr(op, "size", None), (int, np.integer)):
        return int(op.size)
    raise ValueError(f"op: expected an Operator (matvec, size, ...) or a square array, got {op!r}")


def quadratic_log_volume(log_det, dim: int, epsilon) -> jax.Array:
    """Log-volume of ``{z : ½ zᵀ A z ≤ ε}`` for positive definite ``A`` (``dim × dim``).

    ``V = V_d (2ε)^{d/2} det(A)^{-1/2}``, so
    ``log V = log V_d + (d/2) log(2ε) − ½ log det A``.

    Examples:
      >>> round(float(quadratic_log_volume(0.0, 2, 0.5)), 6)   # the unit disc: log π
      1.14473
    """
    dim = _check_int(dim, "dim")
    log_det = jnp.asarray(log_det)
    return (
        log_unit_ball_volume(dim) + 0.5 * dim * jnp.log(2.0 * jnp.asarray(epsilon, log_det.dtype))
    ) - 0.5 * log_det


def sharpness(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    measures: Sequence[str] = MEASURES,
    epsilon: float = 1e-3,
    sigma: float = 0.01,
    target_deviation: float = 0.1,
    damping: float = 1e-3,
    volume_epsilon: float = 0.1,
    num_samples: int = 32,
    num_probes: int = 30,
    num_steps: int = 30,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Sharpness:
    """The flatness measures at ``params`` in one record.

    Measures (any subset, static): ``"top_eigenvalue"`` (:func:`top_eigenvalue`),
    ``"trace"`` (:func:`hessian_trace`, Hutch++ with ``num_probes``), ``"epsilon"``
    (:func:`epsilon_sharpness` with ``epsilon``), ``"expected"``
    (:func:`expected_sharpness` with ``sigma`` and ``num_samples``), ``"pac_bayes"``
    (:func:`pac_bayes_flatness` with ``target_deviation``), ``"log_det"``
    (:func:`log_determinant` of the Hessian with ``damping``, ``max(2, num_probes // 4)`` probes
    of ``num_steps`` Lanczos steps, and the quadratic log-volume of the
    ``volume_epsilon``-sublevel set). Each measure gets its own key split from ``key``.

    Returns:
      A :class:`Sharpness`; fields of measures not requested are None.

    Raises:
      ValueError: for an unknown measure.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(jnp.array([1.0, 3.0]) * p ** 2)
      >>> s = sharpness(loss_fn, jnp.zeros(2), None, key=jax.random.key(0),
      ...               measures=("top_eigenvalue", "trace"))
      >>> round(float(s.top_eigenvalue), 4), round(float(s.trace), 4), s.log_det
      (3.0, 4.0, None)
    """
    measures = (measures,) if isinstance(measures, str) else tuple(measures)
    for m in measures:
        if m not in MEASURES:
            raise ValueError(f"measures: unknown {m!r}; expected a subset of {MEASURES}")
    for name, value in (
        ("epsilon", epsilon),
        ("sigma", sigma),
        ("damping", damping),
        ("target_deviation", target_deviation),
        ("volume_epsilon", volume_epsilon),
    ):
        _check_sign(value, name, positive=True)
    return _sharpness(
        loss_fn,
        params,
        batch,
        as_key(key),
        epsilon,
        sigma,
        target_deviation,
        damping,
        volume_epsilon,
        _LossKwargs(loss_kwargs),
        measures=measures,
        num_samples=_check_int(num_samples, "num_samples"),
        num_probes=_check_int(num_probes, "num_probes", low=4),
        num_steps=_check_int(num_steps, "num_steps"),
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=("loss_fn", "measures", "num_samples", "num_probes", "num_steps", "chunk_size"),
)
def _sharpness(
    loss_fn,
    params,
    batch,
    key,
    epsilon,
    sigma,
    target_deviation,
    damping,
    volume_epsilon,
    loss_kwargs,
    *,
    measures,
    num_samples,
    num_probes,
    num_steps,
    chunk_size,
):
    keys = dict(zip(MEASURES, jr.split(key, len(MEASURES)), strict=True))
    out: dict[str, Any] = {"loss": loss_fn(params, batch, **loss_kwargs)}
    if "top_eigenvalue" in measures:
        r = top_eigenvalue(loss_fn, params, batch, key=keys["top_eigenvalue"], **loss_kwargs)
        out.update(top_eigenvalue=r.value, top_eigenvalue_residual=r.residual)
    if "trace" in measures:
        t = hessian_trace(
            loss_fn, params, batch, key=keys["trace"], num_probes=num_probes, **loss_kwargs
        )
        out.update(trace=t.value, trace_stderr=t.stderr)
    if "epsilon" in measures:
        e = epsilon_sharpness(
            loss_fn, params, batch, key=keys["epsilon"], epsilon=epsilon, **loss_kwargs
        )
        out.update(epsilon_sharpness=e.value)
    if "expected" in measures:
        e = expected_sharpness(
            loss_fn,
            params,
            batch,
            key=keys["expected"],
            sigma=sigma,
            num_samples=num_samples,
            chunk_size=chunk_size,
            **loss_kwargs,
        )
        out.update(expected_sharpness=e.value, expected_sharpness_stderr=e.stderr)
    if "pac_bayes" in measures:
        p = pac_bayes_flatness(
            loss_fn,
            params,
            batch,
            key=keys["pac_bayes"],
            target_deviation=target_deviation,
            num_samples=num_samples,
            chunk_size=chunk_size,
            **loss_kwargs,
        )
        out.update(pac_bayes_sigma=p.sigma, pac_bayes_flatness=p.flatness)
    if "log_det" in measures:
        H = curvature_lib.hessian(loss_fn, params, batch, **loss_kwargs)
        ld = log_determinant(
            H,
            key=keys["log_det"],
            damping=damping,
            num_probes=max(2, num_probes // 4),
            num_steps=num_steps,
        )
        out.update(
            log_det=ld.value,
            log_det_stderr=ld.stderr,
            log_volume=quadratic_log_volume(ld.value, H.size, volume_epsilon),
        )
    return Sharpness(**out)


# --------------------------------------------------------------------------------------
# Basin volume
# --------------------------------------------------------------------------------------


class BasinVolume(NamedTuple):
    """Output of :func:`basin_volume`.

    Attributes:
      log_volume: ``log V_d + log mean_u r(u)^d``.
      stderr: delta-method standard error of ``log_volume``.
      ci_low, ci_high: bootstrap percentile confidence interval of ``log_volume``.
      radii: ``(num_directions,)`` radius along each ray.
      effective_sample_size: ``(Σ r^d)² / Σ r^{2d}``: how many rays the estimate really
        rests on (near 1 means one ray dominates and the error bars are not reliable).
      num_unbounded: rays that stayed below the threshold out to the largest radius
        searched (their radius is that cap, so the volume is a lower bound).
    """

    log_volume: jax.Array
    stderr: jax.Array
    ci_low: jax.Array
    ci_high: jax.Array
    radii: jax.Array
    effective_sample_size: jax.Array
    num_unbounded: jax.Array


def basin_volume(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    epsilon: float,
    num_directions: int = 1000,
    min_radius: float = 1e-4,
    num_scan: int = 32,
    num_bisections: int = 24,
    confidence: float = 0.95,
    num_bootstrap: int = 1000,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> BasinVolume:
    """Monte-Carlo log-volume of the ε-sublevel set ``{w : L(w) − L(w*) ≤ ε}`` around ``w*``.

    For ``num_directions`` unit directions ``u`` uniform on the sphere of the flattened
    params (``d`` dimensions), the radius ``r(u)`` where the ray ``w* + r u`` first leaves
    the set is bracketed on a geometric grid ``min_radius · 2^k`` (``k < num_scan``) and
    refined by ``num_bisections`` bisection steps. The star-shaped part of the set has volume
    ``V_d · E_u[r(u)^d]`` (``V_d`` the unit-ball volume), so
    ``log V = log V_d + logsumexp(d log r) − log N``, all in log space. The error bars are a
    delta-method standard error of the log-mean-exp and a bootstrap percentile interval.

    **Variance limits.** ``r^d`` is a heavy-tailed variable once ``d`` is large: its
    relative variance grows like ``exp(d² Var[log r])``, so the mean is dominated by the
    rare longest rays and for ``d ≫ 1`` the estimate is essentially
    ``log V_d + d log max_u r(u) − log N`` — biased low by many orders of magnitude, with
    error bars (delta method and bootstrap alike) that do not see what was never sampled.
    ``effective_sample_size`` near 1 is the warning sign. On a quadratic the exact answer is
    ``V_d (2ε)^{d/2} det(H)^{-1/2}`` and the estimator agrees with it in low dimension
    (tested for d = 2..6); for networks the number is only meaningful as a comparison
    between solutions at equal ``d`` and ``N`` (as in Huang et al.), and the quadratic
    approximation (:func:`sharpness`, ``"log_det"``) is the alternative for large ``d``.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the minimum ``w*``.
      batch: what ``loss_fn`` takes.
      key: PRNG key (directions and bootstrap).
      epsilon: the loss threshold above ``L(w*)``.
      num_directions: rays ``N`` (static).
      min_radius: the first radius of the bracketing grid.
      num_scan: grid points (static): radii up to ``min_radius · 2^(num_scan − 1)``.
      num_bisections: bisection steps per ray (static).
      confidence: level of the bootstrap interval.
      num_bootstrap: bootstrap resamples (static).
      chunk_size: process this many rays at a time instead of all at once.
      **loss_kwargs: passed to ``loss_fn``.

    Returns:
      A :class:`BasinVolume` (natural-log units).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(p ** 2)   # the unit disc for ε = ½: log π
      >>> r = basin_volume(loss_fn, jnp.zeros(2), None, key=jax.random.key(0), epsilon=0.5,
      ...                  num_directions=64)
      >>> round(float(r.log_volume), 3)
      1.145

    References:
      Huang et al. 2019, "Understanding generalization through visualizations",
      arXiv:1906.03291.
    """
    key = as_key(key)
    _float_dtype(params)
    _check_sign(epsilon, "epsilon", positive=True)
    _check_sign(min_radius, "min_radius", positive=True)
    num_directions = _check_int(num_directions, "num_directions", low=2)
    num_scan = _check_int(num_scan, "num_scan")
    num_bisections = _check_int(num_bisections, "num_bisections", low=0)
    num_bootstrap = _check_int(num_bootstrap, "num_bootstrap")
    level = _concrete(confidence)  # a traced level (swept under jit/vmap) is not checked
    if level is not None and not 0 < level < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}")
    return _basin_volume(
        loss_fn,
        params,
        batch,
        key,
        epsilon,
        min_radius,
        confidence,
        _LossKwargs(loss_kwargs),
        num_directions=num_directions,
        num_scan=num_scan,
        num_bisections=num_bisections,
        num_bootstrap=num_bootstrap,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=(
        "loss_fn",
        "num_directions",
        "num_scan",
        "num_bisections",
        "num_bootstrap",
        "chunk_size",
    ),
)
def _basin_volume(
    loss_fn,
    params,
    batch,
    key,
    epsilon,
    min_radius,
    confidence,
    loss_kwargs,
    *,
    num_directions,
    num_scan,
    num_bisections,
    num_bootstrap,
    chunk_size,
):
    flat, unravel = ravel_pytree(params)
    dim = flat.size
    f = lambda v: loss_fn(unravel(v), batch, **loss_kwargs)
    loss0 = f(flat)
    dtype = loss0.dtype
    inside = lambda v: f(v) - loss0 <= epsilon  # NaN counts as outside
    k_dir, k_boot = jr.split(key)
    # Doubling radii, capped at the dtype's largest finite value (float32 overflows at 2¹²⁸).
    grid = jnp.minimum(min_radius * 2.0 ** jnp.arange(num_scan, dtype=dtype), jnp.finfo(dtype).max)

    def radius(k):
        # Drawn here, not as a (num_directions, d) matrix, so chunk_size bounds the memory.
        ui = jr.normal(k, flat.shape, flat.dtype)
        ui = ui / jnp.linalg.norm(ui)
        ray = lambda r: flat + (r * ui).astype(flat.dtype)
        outside = ~jax.vmap(lambda r: inside(ray(r)))(grid)
        found = jnp.any(outside)
        first = jnp.argmax(outside)
        hi = grid[first]
        lo = jnp.where(first > 0, grid[jnp.maximum(first - 1, 0)], 0.0)

        def body(_, bracket):
            a, b = bracket
            mid = 0.5 * (a + b)
            ok = inside(ray(mid))
            return jnp.where(ok, mid, a), jnp.where(ok, b, mid)

        a, b = lax.fori_loop(0, num_bisections, body, (lo, hi))
        return jnp.where(found, 0.5 * (a + b), grid[-1]), ~found

    radii, unbounded = _map(radius, jr.split(k_dir, num_directions), chunk_size)
    log_terms = dim * jnp.log(radii)
    log_n = math.log(num_directions)
    log_ball = log_unit_ball_volume(dim)
    lme = jax.nn.logsumexp(log_terms) - log_n
    w = jnp.exp(log_terms - jnp.max(log_terms))
    stderr = jnp.std(w, ddof=1) / (jnp.mean(w) * math.sqrt(num_directions))
    ess = jnp.sum(w) ** 2 / jnp.sum(w**2)
    idx = jr.randint(k_boot, (num_bootstrap, num_directions), 0, num_directions)
    boot = jax.nn.logsumexp(log_terms[idx], axis=1) - log_n
    q = jnp.array([(1 - confidence) / 2, (1 + confidence) / 2], dtype)
    ci = jnp.quantile(boot, q) + log_ball
    return BasinVolume(
        lme + log_ball, stderr, ci[0], ci[1], radii, ess, jnp.sum(unbounded).astype(jnp.int32)
    )


# --------------------------------------------------------------------------------------
# Slices
# --------------------------------------------------------------------------------------


class Slice1D(NamedTuple):
    """Output of :func:`slice_1d`: ``losses[i] = L(w + alphas[i] · direction)``."""

    alphas: jax.Array
    losses: jax.Array
    direction: Params


class Slice2D(NamedTuple):
    """Output of :func:`slice_2d`: ``losses[i, j] = L(w + alphas[i] d₁ + betas[j] d₂)``."""

    alphas: jax.Array
    betas: jax.Array
    losses: jax.Array
    directions: tuple[Params, Params]


def _check_normalization(normalization: str, vectors: str | None) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}")
    if vectors is None:
        vectors = "include" if normalization == "none" else "zero"
    if vectors not in ("zero", "include"):
        raise ValueError(f"vectors: expected 'zero', 'include' or None, got {vectors!r}")
    return vectors


def normalize_direction(
    direction: Params,
    params: Params,
    normalization: str = "filter",
    *,
    vectors: str | None = None,
) -> Params:
    """Rescales a direction to the scale of ``params`` (Li et al.'s filter normalisation).

    * ``"filter"``: every leaf with ``ndim ≥ 2`` (a kernel) is split into filters along its
      **last axis** and each filter ``d[..., j]`` is rescaled to the norm of ``w[..., j]``.
      In flax a Dense kernel is ``(in, out)``, so a filter is one output unit's column of
      incoming weights; a Conv kernel is ``(*window, in, out)``, so a filter is one output
      channel's ``(*window, in)`` block (PyTorch stores these as the first axis, which is
      what Li et al.'s code normalises).
    * ``"layer"``: each leaf is rescaled as a whole to the norm of the matching params leaf.
    * ``"none"``: the direction is returned as is (raw).

    Leaves with ``ndim ≤ 1`` — biases and normalisation scales/offsets — are handled by
    ``vectors``: ``"zero"`` (default for ``"filter"``/``"layer"``, as in the paper) sets the
    direction to zero on them; ``"include"`` keeps them, rescaled as a single filter under
    ``"filter"``/``"layer"``, raw under ``"none"`` (the default for ``"none"``). A filter
    whose weights are all zero gets a zero direction.

    Examples:
      >>> import jax.numpy as jnp
      >>> p = {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "bias": jnp.ones(2)}
      >>> d = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
      >>> n = normalize_direction(d, p)
      >>> jnp.linalg.norm(n["kernel"], axis=0).tolist(), n["bias"].tolist()
      ([5.0, 1.0], [0.0, 0.0])
    """
    vectors = _check_normalization(normalization, vectors)
    _check_like(direction, params, "direction")

    def one(d, w):
        if d.shape != w.shape:
            raise ValueError(
                f"direction: leaf of shape {d.shape} does not match params leaf {w.shape}"
            )
        if d.ndim <= 1 and vectors == "zero":
            return jnp.zeros_like(d)
        if normalization == "none":
            return d
        if normalization == "filter" and d.ndim >= 2:
            axes = tuple(range(d.ndim - 1))
        else:
            axes = tuple(range(d.ndim))
        dn = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
        wn = jnp.sqrt(jnp.sum(jnp.square(w), axis=axes, keepdims=True))
        return d * (wn / jnp.where(dn > 0, dn, 1.0)).astype(d.dtype)

    return jax.tree.map(one, direction, params)


def random_direction(
    params: Params,
    *,
    key: jax.Array,
    normalization: str = "filter",
    vectors: str | None = None,
) -> Params:
    """A Gaussian direction shaped like ``params``, normalised by :func:`normalize_direction`.

    The draw is one ``N(0, I)`` vector over the flattened params, so the same key gives the
    same raw direction for any params with the same tree structure and shapes.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> p = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
      >>> d = random_direction(p, key=jax.random.key(0))
      >>> [round(float(x), 4) for x in jnp.linalg.norm(d["kernel"], axis=0)], d["bias"].tolist()
      ([1.7321, 1.7321], [0.0, 0.0])

    References:
      Li et al. 2018, "Visualizing the loss landscape of neural nets", arXiv:1712.09913.
    """
    _check_normalization(normalization, vectors)
    flat, unravel = ravel_pytree(params)
    raw = unravel(jr.normal(as_key(key), flat.shape, flat.dtype))
    return normalize_direction(raw, params, normalization, vectors=vectors)


def hessian_directions(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array,
    k: int = 2,
    which: str = "LA",
    **loss_kwargs,
) -> tuple[jax.Array, tuple[Params, ...]]:
    """The ``k`` extreme Hessian eigenvectors as unit-norm params pytrees, for slices.

    Returns:
      ``(eigenvalues, directions)``: ``(k,)`` eigenvalues in :func:`lljax.spectrum.eigsh`
      order and a tuple of ``k`` params-shaped unit directions.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * (p["a"] ** 2 + 9 * p["b"] ** 2)
      >>> vals, dirs = hessian_directions(loss_fn, {"a": 0.0, "b": 0.0}, None,
      ...                                 key=jax.random.key(0), k=1)
      >>> round(float(vals[0]), 4), round(abs(float(dirs[0]["b"])), 4)
      (9.0, 1.0)
    """
    k = _check_int(k, "k")
    return _hessian_directions(
        loss_fn, params, batch, as_key(key), _LossKwargs(loss_kwargs), k=k, which=which
    )


@functools.partial(_static.jit, static_argnames=("loss_fn", "k", "which"))
def _hessian_directions(loss_fn, params, batch, key, loss_kwargs, *, k, which):
    H = curvature_lib.hessian(loss_fn, params, batch, **loss_kwargs)
    r = spectrum_lib.eigsh(H, k=k, which=which, key=key)
    return r.eigenvalues, tuple(H.unravel(r.eigenvectors[:, i]) for i in range(k))


def slice_1d(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array | None = None,
    num_points: int = 51,
    radius: float = 1.0,
    normalization: str = "filter",
    vectors: str | None = None,
    direction: Params | None = None,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Slice1D:
    """The loss along ``w + α d`` for ``α`` in ``linspace(−radius, radius, num_points)``.

    The direction ``d`` is either drawn from ``key`` (:func:`random_direction` with
    ``normalization`` and ``vectors``; filter normalisation by default, biases and
    normalisation parameters zeroed) or given as ``direction`` and then used as is (e.g. a
    Hessian eigenvector from :func:`hessian_directions`; call :func:`normalize_direction`
    yourself to rescale it). With filter normalisation the plot is invariant to rescaling a
    ReLU layer by c and the next by 1/c (which leaves the function unchanged), so slices of
    different networks can be compared (Li et al. 2018); rescaling single hidden units
    changes it, since a filter holds a unit's incoming weights, not its outgoing ones.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the centre ``w``.
      batch: what ``loss_fn`` takes.
      key: PRNG key for a random direction (needed when ``direction`` is None).
      num_points: points on the line (static).
      radius: half-width of the ``α`` range.
      normalization: ``"filter"``, ``"layer"`` or ``"none"`` (random directions only).
      vectors: ``"zero"`` or ``"include"`` for 1-D leaves (see :func:`normalize_direction`).
      direction: a params-shaped direction, used unchanged.
      chunk_size: evaluate this many points at a time instead of all at once.
      **loss_kwargs: passed to ``loss_fn``.

    Returns:
      A :class:`Slice1D` (``alphas``, ``losses``: ``(num_points,)``; the direction used).

    Raises:
      ValueError: for a missing key and direction, or bad options.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([4, 8, 3])
      >>> loss_fn = ll.losses.cross_entropy(model)
      >>> batch = (jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1]))
      >>> s = slice_1d(loss_fn, model.init(jax.random.key(0)), batch, key=jax.random.key(1),
      ...              num_points=11)
      >>> s.losses.shape
      (11,)

    References:
      Li et al. 2018, "Visualizing the loss landscape of neural nets", arXiv:1712.09913.
    """
    num_points = _check_int(num_points, "num_points")
    _check_normalization(normalization, vectors)
    _float_dtype(params)
    if direction is None:
        if key is None:
            raise ValueError("key: a PRNG key is needed to draw a direction (or pass direction=)")
        key = as_key(key)
    else:
        _check_like(direction, params, "direction")
    return _slice_1d(
        loss_fn,
        params,
        batch,
        key,
        radius,
        direction,
        _LossKwargs(loss_kwargs),
        num_points=num_points,
        normalization=normalization,
        vectors=vectors,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=("loss_fn", "num_points", "normalization", "vectors", "chunk_size"),
)
def _slice_1d(
    loss_fn,
    params,
    batch,
    key,
    radius,
    direction,
    loss_kwargs,
    *,
    num_points,
    normalization,
    vectors,
    chunk_size,
):
    if direction is None:
        direction = random_direction(params, key=key, normalization=normalization, vectors=vectors)
    dtype = _float_dtype(params)
    alphas = _grid(radius, num_points, dtype)
    f = lambda a: loss_fn(_axpy(a, direction, params), batch, **loss_kwargs)
    return Slice1D(alphas, _map(f, alphas, chunk_size), direction)


def slice_2d(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    key: jax.Array | None = None,
    num_points: int = 25,
    radius: float = 1.0,
    normalization: str = "filter",
    vectors: str | None = None,
    directions: tuple[Params, Params] | None = None,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Slice2D:
    """The loss on the plane ``w + α d₁ + β d₂``, a ``num_points × num_points`` grid.

    Directions are two independent draws from ``key`` (as in :func:`slice_1d`) or the pair
    ``directions`` used as is (e.g. the top two Hessian eigenvectors). The grid's
    ``num_points²`` losses are evaluated with one ``vmap`` (or ``lax.map`` in chunks of
    ``chunk_size`` points).

    Returns:
      A :class:`Slice2D` with ``losses[i, j]`` at ``(alphas[i], betas[j])``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(p ** 2)
      >>> s = slice_2d(loss_fn, jnp.zeros(2), None, num_points=3,
      ...              directions=(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])))
      >>> s.losses.tolist()
      [[1.0, 0.5, 1.0], [0.5, 0.0, 0.5], [1.0, 0.5, 1.0]]

    References:
      Li et al. 2018, arXiv:1712.09913.
    """
    num_points = _check_int(num_points, "num_points")
    _check_normalization(normalization, vectors)
    _float_dtype(params)
    if directions is None:
        if key is None:
            raise ValueError("key: a PRNG key is needed to draw directions (or pass directions=)")
        key = as_key(key)
    elif _is_array(directions) or len(directions) != 2:
        raise ValueError(
            "directions: expected a pair (tuple or list) of params-shaped directions, got "
            + (
                f"an array of shape {directions.shape}"
                if _is_array(directions)
                else f"{len(directions)}"
            )
        )
    else:
        directions = tuple(directions)
        for i, d in enumerate(directions):
            _check_like(d, params, f"directions[{i}]")
    return _slice_2d(
        loss_fn,
        params,
        batch,
        key,
        radius,
        directions,
        _LossKwargs(loss_kwargs),
        num_points=num_points,
        normalization=normalization,
        vectors=vectors,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=("loss_fn", "num_points", "normalization", "vectors", "chunk_size"),
)
def _slice_2d(
    loss_fn,
    params,
    batch,
    key,
    radius,
    directions,
    loss_kwargs,
    *,
    num_points,
    normalization,
    vectors,
    chunk_size,
):
    if directions is None:
        directions = tuple(
            random_direction(params, key=k, normalization=normalization, vectors=vectors)
            for k in jr.split(key)
        )
    d1, d2 = directions
    dtype = _float_dtype(params)
    alphas = _grid(radius, num_points, dtype)
    a, b = jnp.meshgrid(alphas, alphas, indexing="ij")

    def f(ab):
        return loss_fn(_axpy(ab[1], d2, _axpy(ab[0], d1, params)), batch, **loss_kwargs)

    losses = _map(f, jnp.stack([a.ravel(), b.ravel()], axis=1), chunk_size)
    return Slice2D(alphas, alphas, losses.reshape(num_points, num_points), (d1, d2))


# --------------------------------------------------------------------------------------
# Interpolation and instability
# --------------------------------------------------------------------------------------


class Interpolation(NamedTuple):
    """Output of :func:`interpolate` (and the path evaluation of :func:`connect`).

    Attributes:
      t: ``(num_points,)`` path positions in ``[0, 1]``.
      losses: ``(num_points,)`` losses along the path.
      accuracies: ``(num_points,)`` accuracies, or None without ``accuracy_fn``.
      barrier: ``max_t [L(t) − ((1 − t) L(0) + t L(1))]``, the height above the linear
        interpolation of the endpoint losses (≥ 0; 0 for a convex path).
      barrier_t: where that maximum is.
      barrier_mean: ``max_t L(t) − ½ (L(0) + L(1))`` (Frankle et al.'s height convention).
      error_barrier: ``max_t E(t) − ½ (E(0) + E(1))`` with error ``E = 1 − accuracy``:
        Frankle et al.'s instability of the two endpoints; None without ``accuracy_fn``.
    """

    t: jax.Array
    losses: jax.Array
    accuracies: jax.Array | None
    barrier: jax.Array
    barrier_t: jax.Array
    barrier_mean: jax.Array
    error_barrier: jax.Array | None


def _path_record(t, losses, accuracies) -> Interpolation:
    excess = losses - ((1 - t) * losses[0] + t * losses[-1])
    i = jnp.argmax(excess)
    barrier_mean = jnp.max(losses) - 0.5 * (losses[0] + losses[-1])
    error_barrier = None
    if accuracies is not None:
        err = 1.0 - accuracies
        error_barrier = jnp.max(err) - 0.5 * (err[0] + err[-1])
    return Interpolation(t, losses, accuracies, excess[i], t[i], barrier_mean, error_barrier)


def _evaluate_path(path_fn, t, loss_fn, batch, accuracy_fn, apply_kwargs_fn, chunk_size, kw):
    def one(ti):
        p = path_fn(ti)
        extra = dict(kw)
        if apply_kwargs_fn is not None:
            extra.update(apply_kwargs_fn(p))
        loss = loss_fn(p, batch, **extra)
        acc = accuracy_fn(p, batch, **extra) if accuracy_fn is not None else None
        return loss, acc

    losses, accs = _map(one, t, chunk_size)
    return _path_record(t, losses, accs)


def interpolate(
    loss_fn: Callable,
    params_a: Params,
    params_b: Params,
    batch: Any,
    *,
    num_points: int = 25,
    accuracy_fn: Callable | None = None,
    apply_kwargs_fn: Callable[[Params], dict] | None = None,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Interpolation:
    """Loss (and accuracy) on the straight line ``(1 − t) θ_a + t θ_b``, with barrier heights.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params_a, params_b: the endpoints (same tree structure).
      batch: what ``loss_fn`` takes.
      num_points: points on ``[0, 1]``, endpoints included (static, ≥ 2).
      accuracy_fn: optional ``accuracy_fn(params, batch, **kwargs) -> scalar`` (e.g.
        :func:`lljax.losses.accuracy`); adds ``accuracies`` and ``error_barrier``.
      apply_kwargs_fn: ``apply_kwargs_fn(params_t) -> dict`` of extra keyword arguments for
        ``loss_fn``/``accuracy_fn`` at each point: the hook for recomputing BatchNorm
        statistics along the path, e.g. ``lambda p: {"stats": model.stats(p, x_train)}``
        (interpolated statistics of the endpoints are not the statistics of the
        interpolated network). lljax BatchNorm without ``stats`` already normalises by the
        statistics of the batch it is given.
      chunk_size: evaluate this many points at a time.
      **loss_kwargs: passed to ``loss_fn`` and ``accuracy_fn`` at every point.

    Returns:
      An :class:`Interpolation`.

    Examples:
      >>> import jax.numpy as jnp
      >>> ring = lambda p, b: (jnp.sum(p ** 2) - 1.0) ** 2       # the line crosses 0
      >>> r = interpolate(ring, jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0]), None,
      ...                 num_points=5)
      >>> float(r.barrier), float(r.barrier_t)
      (1.0, 0.5)

    References:
      Goodfellow et al. 2015, arXiv:1412.6544; Frankle et al. 2020, arXiv:1912.05671.
    """
    num_points = _check_int(num_points, "num_points", low=2)
    _check_like(params_b, params_a, "params_b", "params_a")
    return _interpolate(
        loss_fn,
        params_a,
        params_b,
        batch,
        _LossKwargs(loss_kwargs),
        num_points=num_points,
        accuracy_fn=accuracy_fn,
        apply_kwargs_fn=apply_kwargs_fn,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=("loss_fn", "num_points", "accuracy_fn", "apply_kwargs_fn", "chunk_size"),
)
def _interpolate(
    loss_fn,
    params_a,
    params_b,
    batch,
    loss_kwargs,
    *,
    num_points,
    accuracy_fn,
    apply_kwargs_fn,
    chunk_size,
):
    t = jnp.linspace(0.0, 1.0, num_points, dtype=_float_dtype(params_a))
    path_fn = lambda ti: _lerp(ti, params_a, params_b)
    return _evaluate_path(
        path_fn, t, loss_fn, batch, accuracy_fn, apply_kwargs_fn, chunk_size, loss_kwargs
    )


class Instability(NamedTuple):
    """Output of :func:`instability`.

    Attributes:
      value: the error barrier ``max_t E(t) − ½(E(0) + E(1))`` (or the loss barrier of the
        same form, ``barrier_mean``, without ``accuracy_fn``).
      interpolation: the full :class:`Interpolation` between the two endpoints.
      params_a, params_b: the two trained endpoints.
    """

    value: jax.Array
    interpolation: Interpolation
    params_a: Params
    params_b: Params


def instability(
    loss_fn: Callable,
    params: Params,
    batch: Any,
    *,
    params_b: Params | None = None,
    train_fn: Callable[[Params, jax.Array], Params] | None = None,
    key: jax.Array | None = None,
    num_points: int = 25,
    accuracy_fn: Callable | None = None,
    apply_kwargs_fn: Callable[[Params], dict] | None = None,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Instability:
    """Frankle et al.'s instability to SGD noise: the error barrier between two copies.

    Two copies of the network are trained from the same point ``params`` with different
    data orders (SGD noise) and the error barrier ``max_t E(t) − ½(E(0) + E(1))`` on the
    straight line between them is reported; a network is *stable* (linearly mode connected)
    when it is ≈ 0. Give either ``train_fn(params, key) -> trained params`` (called with two
    keys split from ``key``; the keys should drive the data order) or the two trained
    endpoints directly (``params`` and ``params_b``).

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params: the shared starting point, or the first endpoint when ``params_b`` is given.
      batch: the evaluation batch.
      params_b: the second trained endpoint.
      train_fn: ``train_fn(params, key) -> params`` (e.g. around :func:`lljax.train.fit`).
      key: PRNG key for the two data orders.
      num_points, accuracy_fn, apply_kwargs_fn, chunk_size: as in :func:`interpolate`.
      **loss_kwargs: passed to ``loss_fn`` and ``accuracy_fn``.

    Returns:
      An :class:`Instability`.

    Raises:
      ValueError: unless exactly one of ``params_b`` or ``train_fn`` (with ``key``) is given.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> loss_fn = lambda p, b: 0.5 * jnp.sum(p ** 2)            # convex: stable
      >>> train_fn = lambda p, k: p * 0.1 + 0.01 * jax.random.normal(k, p.shape)
      >>> r = instability(loss_fn, jnp.ones(3), None, train_fn=train_fn, key=jax.random.key(0))
      >>> round(float(r.interpolation.barrier), 6)   # the path never rises above the chord
      0.0

    References:
      Frankle et al. 2020, "Linear mode connectivity and the lottery ticket hypothesis",
      arXiv:1912.05671.
    """
    if (params_b is None) == (train_fn is None):
        raise ValueError("params_b/train_fn: give exactly one (two endpoints, or how to train)")
    if train_fn is not None:
        if key is None:
            raise ValueError("key: train_fn needs a PRNG key for the two data orders")
        k1, k2 = jr.split(as_key(key))
        params_a, params_b = train_fn(params, k1), train_fn(params, k2)
    else:
        params_a = params
    interp = interpolate(
        loss_fn,
        params_a,
        params_b,
        batch,
        num_points=num_points,
        accuracy_fn=accuracy_fn,
        apply_kwargs_fn=apply_kwargs_fn,
        chunk_size=chunk_size,
        **loss_kwargs,
    )
    value = interp.barrier_mean if interp.error_barrier is None else interp.error_barrier
    return Instability(value, interp, params_a, params_b)


# --------------------------------------------------------------------------------------
# Mode connectivity
# --------------------------------------------------------------------------------------


def curve_weights(kind: str, num_bends: int, t) -> jax.Array:
    """Weights ``c_j(t)`` of the ``num_bends + 2`` curve points, so ``φ(t) = Σ_j c_j θ_j``.

    ``"bezier"``: Bernstein polynomials of degree ``n = num_bends + 1``,
    ``c_j = C(n, j) t^j (1 − t)^{n−j}``. ``"polychain"``: the bends sit at
    ``t = j / (num_bends + 1)`` and ``φ`` is linear between neighbours. ``t`` is a scalar
    (``jax.vmap`` over several), clipped to ``[0, 1]``: the curve ends at its endpoints.

    Examples:
      >>> curve_weights("bezier", 1, 0.5).tolist()
      [0.25, 0.5, 0.25]
      >>> curve_weights("polychain", 1, 0.25).tolist()
      [0.5, 0.5, 0.0]
    """
    if kind not in CURVES:
        raise ValueError(f"kind: expected one of {CURVES}, got {kind!r}")
    num_bends = _check_int(num_bends, "num_bends", low=0)
    t = jnp.asarray(t)
    if t.ndim != 0:  # an array would broadcast against the point axis into nonsense
        raise ValueError(f"t: expected a scalar (jax.vmap over several), got shape {t.shape}")
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.float32)
    t = jnp.clip(t, 0.0, 1.0)
    n = num_bends + 1
    if kind == "bezier":
        j = jnp.arange(n + 1, dtype=t.dtype)
        binom = jnp.array([math.comb(n, i) for i in range(n + 1)], t.dtype)
        return binom * t**j * (1 - t) ** (n - j)
    s = t * n
    seg = jnp.clip(jnp.floor(s), 0, n - 1).astype(jnp.int32)
    frac = s - seg
    return jnp.zeros(n + 1, t.dtype).at[seg].add(1 - frac).at[seg + 1].add(frac)


def curve_point(kind: str, points: Params, t) -> Params:
    """``φ(t)`` for stacked curve points ``points`` (leading axis ``num_bends + 2``).

    Examples:
      >>> import jax.numpy as jnp
      >>> pts = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])}
      >>> curve_point("bezier", pts, 0.5)["w"].tolist()
      [0.0, 1.0]
    """
    num = jax.tree.leaves(points)[0].shape[0]
    c = curve_weights(kind, num - 2, t)
    return jax.tree.map(lambda p: jnp.tensordot(c.astype(p.dtype), p, axes=1), points)


@struct.dataclass
class Curve:
    """A trained curve between two solutions (:func:`connect`); a pytree.

    Attributes:
      points: stacked curve points, leading axis ``num_bends + 2``: ``params_a``, the
        trained control points, ``params_b``.
      path: :class:`Interpolation` of the loss (and accuracy) along the curve; its
        ``barrier`` is the curve's barrier.
      linear: the same for the straight line between the endpoints.
      train_losses: ``(steps,)`` the loss at the sampled ``t`` each training step.
      kind: ``"bezier"`` or ``"polychain"`` (static).
    """

    points: Params
    path: Interpolation
    linear: Interpolation
    train_losses: jax.Array
    kind: str = struct.field(pytree_node=False, default="bezier")

    @property
    def controls(self) -> Params:
        """The trained control points alone, leading axis ``num_bends``."""
        return jax.tree.map(lambda p: p[1:-1], self.points)

    @property
    def barrier(self) -> jax.Array:
        return self.path.barrier

    def __call__(self, t) -> Params:
        """The params at position ``t`` on the curve."""
        return curve_point(self.kind, self.points, t)


def connect(
    loss_fn: Callable,
    params_a: Params,
    params_b: Params,
    data_or_batch: Any,
    *,
    key: jax.Array,
    kind: str = "bezier",
    num_bends: int = 1,
    steps: int = 1000,
    learning_rate: float = 1e-2,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    init_noise: float = 1e-2,
    num_points: int = 25,
    accuracy_fn: Callable | None = None,
    apply_kwargs_fn: Callable[[Params], dict] | None = None,
    chunk_size: int | None = None,
    **loss_kwargs,
) -> Curve:
    """Trains a Bezier curve or polygonal chain of low loss between two solutions.

    The curve ``φ_θ(t) = Σ_j c_j(t) θ_j`` (:func:`curve_weights`) is a pure function of the
    endpoint and control-point pytrees, so it works for any model without rewriting its
    layers: each of ``steps`` optimizer steps samples ``t ~ U(0, 1)`` (and a minibatch),
    evaluates ``loss_fn(φ_θ(t), batch)`` and updates the control points ``θ_1..θ_k`` with
    optax (the endpoints stay fixed), all inside one ``lax.scan``; this minimises
    ``E_t L(φ_θ(t))`` as in Garipov et al. The control points start on the straight line
    (at ``t = j/(k+1)``) plus Gaussian noise of ``init_noise`` times the RMS of
    ``θ_b − θ_a`` (drawn from ``key``), which breaks the symmetry that would keep a curve
    between symmetric minima on the line.

    BatchNorm: during training an lljax BatchNorm model without ``stats`` normalises by the
    statistics of each minibatch at ``φ(t)``, as in Garipov et al.'s training. For the
    evaluation along the path, ``apply_kwargs_fn(params_t) -> dict`` supplies extra
    keyword arguments at each evaluated point, e.g. statistics recomputed there:
    ``apply_kwargs_fn=lambda p: {"stats": model.stats(p, data.x_train)}``.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar``.
      params_a, params_b: the two solutions (same tree structure).
      data_or_batch: a :class:`~lljax.data.Dataset` (minibatches of ``batch_size`` drawn
        from its training split; the path is evaluated on the whole training split), or a
        fixed batch (anything ``loss_fn`` takes, ``None`` for data-free losses).
      key: PRNG key (initial noise, ``t`` samples, minibatches).
      kind: ``"bezier"`` (degree ``num_bends + 1``; quadratic by default) or ``"polychain"``.
      num_bends: number of trainable control points (static).
      steps: optimizer steps (static).
      learning_rate: Adam learning rate when ``optimizer`` is None.
      batch_size: minibatch size for a Dataset.
      optimizer: any optax transformation (e.g. ``optax.sgd(0.01, momentum=0.9)`` with
        ``optax.add_decayed_weights`` for Garipov et al.'s setup).
      init_noise: relative scale of the initial control-point noise.
      num_points: points of the evaluation grid on ``[0, 1]`` (static).
      accuracy_fn, apply_kwargs_fn, chunk_size: as in :func:`interpolate`.
      **loss_kwargs: passed to ``loss_fn`` (training and evaluation).

    Returns:
      A :class:`Curve`; ``curve.barrier`` vs ``curve.linear.barrier`` compares the trained
      path with the straight line, ``curve(t)`` gives the params at ``t``.

    Raises:
      ValueError: bad ``kind``, ``num_bends``, ``steps``, a Dataset without ``batch_size``,
        or endpoints of different structure.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> ring = lambda p, b: (jnp.sum(p ** 2) - 1.0) ** 2
      >>> c = connect(ring, jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0]), None,
      ...             key=jax.random.key(0), steps=300, learning_rate=0.05)
      >>> float(c.linear.barrier), bool(c.barrier < 0.1)
      (1.0, True)

    References:
      Garipov et al. 2018, "Loss surfaces, mode connectivity, and fast ensembling of
      DNNs", arXiv:1802.10026; Draxler et al. 2018, arXiv:1803.00885.
    """
    key = as_key(key)
    if kind not in CURVES:
        raise ValueError(f"kind: expected one of {CURVES}, got {kind!r}")
    num_bends = _check_int(num_bends, "num_bends")
    steps = _check_int(steps, "steps")
    _check_like(params_b, params_a, "params_b", "params_a")
    is_data = isinstance(data_or_batch, data_lib.Dataset)
    if is_data:
        if batch_size is None:
            raise ValueError("batch_size: needed to draw minibatches from a Dataset")
        batch_size = _check_int(batch_size, "batch_size")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    _check_sign(learning_rate, "learning_rate", positive=True)
    _check_sign(init_noise, "init_noise")
    num_points = _check_int(num_points, "num_points", low=2)
    return _connect(
        loss_fn,
        params_a,
        params_b,
        data_or_batch,
        key,
        learning_rate,
        init_noise,
        _LossKwargs(loss_kwargs),
        kind=kind,
        num_bends=num_bends,
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        num_points=num_points,
        accuracy_fn=accuracy_fn,
        apply_kwargs_fn=apply_kwargs_fn,
        chunk_size=chunk_size,
    )


@functools.partial(
    _static.jit,
    static_argnames=(
        "loss_fn",
        "kind",
        "num_bends",
        "steps",
        "batch_size",
        "optimizer",
        "num_points",
        "accuracy_fn",
        "apply_kwargs_fn",
        "chunk_size",
    ),
)
def _connect(
    loss_fn,
    params_a,
    params_b,
    data_or_batch,
    key,
    learning_rate,
    init_noise,
    loss_kwargs,
    *,
    kind,
    num_bends,
    steps,
    batch_size,
    optimizer,
    num_points,
    accuracy_fn,
    apply_kwargs_fn,
    chunk_size,
):
    is_data = isinstance(data_or_batch, data_lib.Dataset)
    eval_batch = data_or_batch.train if is_data else data_or_batch
    if optimizer is None:
        optimizer = optax.adam(learning_rate)
    dtype = _float_dtype(params_a)
    k_init, k_t, k_batch = jr.split(key, 3)

    # Control points on the line, plus symmetry-breaking noise.
    ts = jnp.arange(1, num_bends + 1, dtype=dtype) / (num_bends + 1)
    flat_a, unravel = ravel_pytree(params_a)
    flat_b, _ = ravel_pytree(params_b)
    scale = init_noise * jnp.sqrt(jnp.mean(jnp.square(flat_b - flat_a)))
    noise = scale * jr.normal(k_init, (num_bends, flat_a.size), flat_a.dtype)
    flat_controls = flat_a[None] + ts[:, None] * (flat_b - flat_a)[None] + noise
    controls = jax.vmap(unravel)(flat_controls)

    def stack(ctrl):
        return jax.tree.map(
            lambda a, c, b: jnp.concatenate([a[None], c, b[None]], axis=0),
            params_a,
            ctrl,
            params_b,
        )

    def objective(ctrl, t, batch):
        return loss_fn(curve_point(kind, stack(ctrl), t), batch, **loss_kwargs)

    def step(carry, i):
        ctrl, opt_state = carry
        t = jr.uniform(jr.fold_in(k_t, i), (), dtype)
        if is_data:
            batch = data_lib.sample_batch(
                data_or_batch, key=jr.fold_in(k_batch, i), batch_size=batch_size
            )
        else:
            batch = data_or_batch
        loss, grads = jax.value_and_grad(objective)(ctrl, t, batch)
        updates, opt_state = optimizer.update(grads, opt_state, ctrl)
        return (optax.apply_updates(ctrl, updates), opt_state), loss

    (controls, _), train_losses = lax.scan(
        step, (controls, optimizer.init(controls)), jnp.arange(steps)
    )
    points = stack(controls)
    t = jnp.linspace(0.0, 1.0, num_points, dtype=dtype)
    path = _evaluate_path(
        lambda ti: curve_point(kind, points, ti),
        t,
        loss_fn,
        eval_batch,
        accuracy_fn,
        apply_kwargs_fn,
        chunk_size,
        loss_kwargs,
    )
    linear = _interpolate(
        loss_fn,
        params_a,
        params_b,
        eval_batch,
        loss_kwargs,
        num_points=num_points,
        accuracy_fn=accuracy_fn,
        apply_kwargs_fn=apply_kwargs_fn,
        chunk_size=chunk_size,
    )
    return Curve(points, path, linear, train_losses, kind)
