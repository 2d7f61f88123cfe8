"""Critical points and saddles: finding them, classifying them, escaping them.

Gradient descent is repelled by saddles, so to *find* them we minimise the squared gradient
norm ``½‖∇L(θ)‖²`` instead, with Levenberg–Marquardt steps on the residual ``r = ∇L`` (whose
Jacobian is the Hessian): ``δ = −(H² + λI)⁻¹ H ∇L``, with ``λ`` adapted by step acceptance.
Near a non-degenerate critical point of any index this is Newton's method on ``∇L = 0``, so
saddles are reached as readily as minima (Dauphin et al. 2014; Frye et al. 2019 on the
pitfalls: ``‖∇L‖²`` also has non-critical minima, which :func:`classify` exposes by a
non-zero gradient norm). Dense Hessians make this exact and cheap for small models; the
index is counted from the exact eigenvalues.

Escape from a strict saddle is simulated with any stepper ``x_{t+1} = step_fn(x_t, key_t)``
over many seeds at once (:func:`escape_times`) and compared with the quadratic-saddle law
(:func:`saddle_escape_cdf`).

Examples:
  >>> import jax, jax.numpy as jnp, lljax as ll
  >>> loss_fn = lambda p, batch: p["x"] ** 2 - p["y"] ** 2 + p["y"] ** 4  # saddle at 0
  >>> cp = ll.critical.find_critical_point(loss_fn, {"x": 0.3, "y": 0.2}, None)
  >>> round(float(cp.grad_norm), 6), int(cp.index)
  (0.0, 1)

References:
  Dauphin et al. 2014, arXiv:1406.2572 (saddles in high dimension, saddle-free Newton).
  Baldi & Hornik 1989, Neural Networks 2:53 (linear autoencoder critical points).
  Jin et al. 2017, arXiv:1703.00887 (perturbed gradient descent escapes saddles).
  Frye et al. 2019, arXiv:1901.10603 (gradient-norm minimisation finds non-critical points).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from lljax import _linalg
from lljax.train import _check_int, _check_sign

LossFn = Callable[[Any, Any], jax.Array]


class CriticalPoint(NamedTuple):
    """A (candidate) critical point and its classification.

    Attributes:
      params: the point, a pytree like the input params.
      loss: ``L(params)``.
      grad_norm: ``‖∇L(params)‖₂`` (small at a true critical point).
      index: number of Hessian eigenvalues below ``−tol`` (0 for a minimum).
      negative_fraction: ``index / num_params``.
      eigenvalues: all Hessian eigenvalues, ascending, ``(num_params,)``.
    """

    params: Any
    loss: jax.Array
    grad_norm: jax.Array
    index: jax.Array
    negative_fraction: jax.Array
    eigenvalues: jax.Array


def _flat(loss_fn: LossFn, params, batch):
    flat, unravel = ravel_pytree(params)

    def f(v):
        return loss_fn(unravel(v), batch)

    return flat, unravel, f


def _default_tol(eigenvalues: jax.Array) -> jax.Array:
    eps = jnp.finfo(eigenvalues.dtype).eps
    # Relative to the spectrum's scale, so the index does not change when the loss is
    # rescaled.
    return 100.0 * eps * jnp.max(jnp.abs(eigenvalues)) * eigenvalues.shape[0]


def classify(loss_fn: LossFn, params, batch, *, tol: float | None = None) -> CriticalPoint:
    """Loss, gradient norm and exact Hessian index at ``params``.

    The Hessian is formed densely (``jax.hessian`` of the flattened loss, full-precision
    matmuls) and diagonalised with ``eigh``; for models of up to a few thousand parameters.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: a pytree.
      batch: passed through to ``loss_fn``.
      tol: eigenvalues below ``−tol`` count as negative; default ``100 · eps · n · max|λ|``
        so that the zero modes of symmetries are not counted.

    Returns:
      A :class:`CriticalPoint`.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> cp = ll.critical.classify(lambda p, b: p[0] * p[1], jnp.zeros(2), None)
      >>> int(cp.index), cp.eigenvalues.tolist()
      (1, [-1.0, 1.0])
    """
    flat, _, f = _flat(loss_fn, params, batch)
    with jax.default_matmul_precision("highest"):
        loss, grad = jax.value_and_grad(f)(flat)
        hess = jax.hessian(f)(flat)
        eig = _linalg.eigvalsh(0.5 * (hess + hess.T))
    _check_sign(tol, "tol")  # a negative tol counts positive eigenvalues as negative
    tol = _default_tol(eig) if tol is None else jnp.asarray(tol, eig.dtype)
    index = jnp.sum(eig < -tol)
    return CriticalPoint(
        params=params,
        loss=loss,
        grad_norm=jnp.linalg.norm(grad),
        index=index,
        negative_fraction=index / eig.shape[0],
        eigenvalues=eig,
    )


def find_critical_point(
    loss_fn: LossFn,
    params,
    batch,
    *,
    num_steps: int = 50,
    damping: float = 1e-3,
    tol: float | None = None,
) -> CriticalPoint:
    """Finds a nearby critical point (any index) by Levenberg–Marquardt on ``½‖∇L‖²``.

    Each step solves ``(H² + λI) δ = −H g`` with the dense Hessian ``H`` and gradient ``g``;
    a step is accepted if it lowers ``‖∇L‖``, after which ``λ`` is divided by 3, otherwise
    ``λ`` is doubled and the point kept. With small ``λ`` this is Newton's method on
    ``∇L = 0``, which converges quadratically to saddles as well as minima; large ``λ``
    makes it gradient descent on ``½‖∇L‖²``. A fixed number of steps in ``lax.scan``, so it
    jits and vmaps over starting points.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the starting point (a pytree).
      batch: passed through to ``loss_fn``.
      num_steps: Levenberg–Marquardt iterations.
      damping: the initial ``λ``, in the units of ``H²`` (loss² / param⁴); it adapts.
      tol: negative-eigenvalue threshold for the index (see :func:`classify`).

    Returns:
      A :class:`CriticalPoint` at the final iterate. Check ``grad_norm``: a minimum of
      ``‖∇L‖²`` that is not a critical point has a clearly non-zero one.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> loss_fn = lambda p, b: jnp.sum(jnp.cos(p))  # saddles and extrema on a lattice
      >>> cp = ll.critical.find_critical_point(loss_fn, jnp.array([0.2, 2.9]), None)
      >>> [round(v, 4) for v in cp.params.tolist()], int(cp.index)
      ([0.0, 3.1416], 1)

    References:
      Levenberg 1944; Marquardt 1963; Dauphin et al. 2014, arXiv:1406.2572.
    """
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
    _check_sign(damping, "damping", positive=True)
    flat, unravel, f = _flat(loss_fn, params, batch)
    grad_fn = jax.grad(f)
    eye = jnp.eye(flat.shape[0], dtype=flat.dtype)

    def step(carry, _):
        x, lam = carry
        with jax.default_matmul_precision("highest"):
            g = grad_fn(x)
            h = jax.hessian(f)(x)
            h = 0.5 * (h + h.T)
            delta = -_linalg.solve(h @ h + lam * eye, h @ g)
        x_new = x + delta
        better = jnp.linalg.norm(grad_fn(x_new)) < jnp.linalg.norm(g)
        better = better & jnp.all(jnp.isfinite(x_new))
        x = jnp.where(better, x_new, x)
        lam = jnp.where(better, lam / 3.0, lam * 2.0)
        return (x, lam), None

    lam0 = jnp.asarray(damping, flat.dtype)
    (x, _), _ = jax.lax.scan(step, (flat, lam0), None, length=int(num_steps))
    return classify(loss_fn, unravel(x), batch, tol=tol)


# ---------------------------------------------------------------------------------------------
# The linear autoencoder: exact critical points
# ---------------------------------------------------------------------------------------------


class AutoencoderCriticalPoint(NamedTuple):
    """A critical point of the linear autoencoder, from Baldi & Hornik (1989).

    Attributes:
      subset: indices (into the descending eigenvalues) of the eigenvectors kept.
      loss: ``½ Σ_{j ∉ subset} λ_j``.
      index: ``#{(i ∈ subset, j ∉ subset): λ_j > λ_i}``.
      eigenvalues: the Hessian eigenvalues at ``A = U_Iᵀ, B = U_I``, ascending.
    """

    subset: tuple[int, ...]
    loss: float
    index: int
    eigenvalues: np.ndarray


def linear_autoencoder_critical_points(eigenvalues, k: int) -> list[AutoencoderCriticalPoint]:
    """Closed-form critical points of ``L(A, B) = ½ E‖x − B A x‖²`` with ``k`` hidden units.

    With data second moment ``Σ = U diag(λ) Uᵀ`` (distinct ``λ``, descending) the
    full-rank critical points are ``A = C U_Iᵀ``, ``B = U_I C⁻¹`` for any ``k``-subset
    ``I`` of eigenvectors and invertible ``C`` (Baldi & Hornik 1989). All share the loss
    ``½ Σ_{j∉I} λ_j``. Only the top-``k`` subset is a minimum; every other is a saddle.
    At ``C = I`` the Hessian splits into 2×2 blocks: for each ``i ∈ I, j ∉ I``,
    ``[[λ_j, −λ_j], [−λ_j, λ_i]]`` (one negative eigenvalue iff ``λ_j > λ_i``), and for
    each pair of code units ``(m, l)``, ``λ_{i_l} [[1, 1], [1, 1]]`` (eigenvalues
    ``2λ_{i_l}`` and 0, the ``GL(k)`` symmetry).

    Args:
      eigenvalues: the ``n`` eigenvalues of the data second moment ``E[x xᵀ]``.
      k: number of hidden units, ``1 <= k < n``.

    Returns:
      One :class:`AutoencoderCriticalPoint` per subset, in ``itertools.combinations``
      order over the eigenvalues sorted in descending order.

    Examples:
      >>> import lljax as ll
      >>> cps = ll.critical.linear_autoencoder_critical_points([3.0, 2.0, 1.0], 1)
      >>> [(cp.subset, cp.loss, cp.index) for cp in cps]
      [((0,), 1.5, 0), ((1,), 2.0, 1), ((2,), 2.5, 2)]

    References:
      Baldi & Hornik 1989, Neural Networks 2:53–58.
    """
    lam = np.asarray(eigenvalues, np.float64)
    if lam.ndim != 1 or lam.shape[0] < 2:
        raise ValueError(f"eigenvalues: expected a vector of length >= 2, got {eigenvalues!r}")
    lam = np.sort(lam)[::-1]
    n = lam.shape[0]
    if not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k: expected an int with 1 <= k < {n}, got {k!r}")
    out = []
    for subset in itertools.combinations(range(n), k):
        rest = [j for j in range(n) if j not in subset]
        eig = []
        for i in subset:
            for j in rest:
                eig.extend(np.linalg.eigvalsh(np.array([[lam[j], -lam[j]], [-lam[j], lam[i]]])))
        for _ in subset:
            for i in subset:
                eig.extend([2.0 * lam[i], 0.0])
        index = sum(1 for i in subset for j in rest if lam[j] > lam[i])
        out.append(
            AutoencoderCriticalPoint(
                subset, 0.5 * float(lam[rest].sum()), index, np.sort(np.array(eig))
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Escape from saddles
# ---------------------------------------------------------------------------------------------


def escape_times(
    step_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    keys: jax.Array,
    *,
    num_steps: int,
    radius: float,
    direction: jax.Array | None = None,
) -> jax.Array:
    """First step at which each seed's trajectory leaves a ball (or slab) around ``x0``.

    Runs ``x_{t+1} = step_fn(x_t, key_t)`` from ``x0`` for ``num_steps`` steps, one
    trajectory per key (vmapped), and records the first ``t`` with ``‖x_t − x0‖ ≥ radius``
    (or ``|⟨x_t − x0, direction⟩| ≥ radius`` if ``direction`` is given).

    Args:
      step_fn: ``step_fn(x, key) -> x`` (flat vectors): GD, perturbed GD, SGD, ...
      x0: the saddle, ``(n,)``.
      keys: ``(seeds,)`` PRNG keys, one trajectory each.
      num_steps: steps per trajectory.
      radius: escape distance.
      direction: optional unit vector (e.g. the negative-curvature eigenvector).

    Returns:
      ``(seeds,)`` escape steps as floats; ``inf`` for trajectories that never escaped.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> step = lambda x, key: x + 0.1 * x * jnp.array([1.0, -1.0])  # GD on ½(y² − x²)
      >>> keys = jax.random.split(jax.random.key(0), 2)
      >>> ll.critical.escape_times(step, jnp.array([1e-3, 0.0]), keys,
      ...                          num_steps=200, radius=1.0).tolist()
      [73.0, 73.0]
    """
    num_steps = _check_int(num_steps, "num_steps", low=0)
    _check_sign(radius, "radius", positive=True)  # radius ≤ 0 "escapes" at step 1
    x0 = jnp.asarray(x0)
    x0 = x0.astype(jnp.result_type(x0, float))  # integer starts walk in floating point

    def one(key):
        def body(carry, k):
            x, t, first = carry
            x = step_fn(x, k)
            d = x - x0
            dist = jnp.linalg.norm(d) if direction is None else jnp.abs(d @ direction)
            first = jnp.where(jnp.isinf(first) & (dist >= radius), t + 1.0, first)
            return (x, t + 1.0, first), None

        init = (x0, jnp.zeros((), x0.dtype), jnp.full((), jnp.inf, x0.dtype))
        (_, _, first), _ = jax.lax.scan(body, init, jax.random.split(key, num_steps))
        return first

    return jax.vmap(one)(keys)


def saddle_escape_cdf(
    t,
    *,
    curvature,
    learning_rate,
    radius,
    noise_std=0.0,
    initial_std=0.0,
) -> jax.Array:
    """``P(τ ≤ t)`` for escaping a quadratic saddle along its negative-curvature direction.

    Along the eigenvector of eigenvalue ``−γ`` (``curvature = γ > 0``) gradient steps with
    additive Gaussian noise are ``y_{t+1} = a y_t + σ ξ_t``, ``a = 1 + ηγ``, from
    ``y_0 ~ N(0, s₀²)``. So ``y_t ~ N(0, v_t)`` with
    ``v_t = a^{2t} s₀² + σ² (a^{2t} − 1)/(a² − 1)``, and the escape time ``τ`` (first
    ``|y_t| ≥ R``) has ``P(τ ≤ t) ≈ P(|y_t| ≥ R) = erfc(R / √(2 v_t))``. Exact for a single
    initial perturbation (``σ = 0``: perturbed GD, |y_t| grows monotonically); for noise at
    every step (noisy GD, SGD with gradient-noise std ``σ/η``) it neglects returns inside
    the radius after a first exit, so it is a lower bound, tight once the drift dominates
    (``ηγ R ≫ σ``) and loose in the diffusive regime (``ηγ → 0``: at ``R = 10σ`` and
    ``t = 1000`` a simulated walk has escaped with probability 1.0 where the formula says
    0.75). ``γ = 0`` (a flat direction) gives ``v_t = s₀² + σ² t``. Plain GD from the
    saddle (``σ = s₀ = 0``) never escapes.

    Args:
      t: step(s), any shape.
      curvature: ``γ ≥ 0``, minus the negative eigenvalue.
      learning_rate: ``η``.
      radius: ``R``.
      noise_std: ``σ``, the std of the per-step displacement noise along the direction.
      initial_std: ``s₀``, the std of the initial perturbation along the direction.

    Returns:
      ``P(τ ≤ t)``, shaped like ``t``.

    Examples:
      >>> import lljax as ll
      >>> p = ll.critical.saddle_escape_cdf(50, curvature=1.0, learning_rate=0.1,
      ...                                   radius=1.0, initial_std=0.01)
      >>> round(float(p), 4)  # P(|N(0, 1.1^100 · 1e-4)| ≥ 1)
      0.3943
    """
    for name, value, positive in (
        ("curvature", curvature, False),
        ("learning_rate", learning_rate, True),
        ("radius", radius, True),
        ("noise_std", noise_std, False),
        ("initial_std", initial_std, False),
    ):
        _check_sign(value, name, positive=positive)
    t = jnp.asarray(t)
    dtype = jnp.result_type(t, curvature, learning_rate, float)
    log_a = jnp.log1p(jnp.asarray(learning_rate, dtype) * jnp.asarray(curvature, dtype))
    two_t_log_a = 2.0 * t.astype(dtype) * log_a
    # (a^{2t} − 1)/(a² − 1) through expm1: exact down to ηγ → 0, where it tends to t (the
    # plain sum of t noise variances); a² − 1 computed directly is 0 in float32 once
    # ηγ < 6e-8.
    am1 = jnp.expm1(2.0 * log_a)
    ratio = jnp.where(am1 != 0, jnp.expm1(two_t_log_a) / jnp.where(am1 != 0, am1, 1.0), t)
    s0, sigma = jnp.square(initial_std), jnp.square(noise_std)
    # Terms are kept apart so that a^{2t} overflowing to inf gives v = inf (certain
    # escape), never 0 · inf = NaN.
    v = jnp.where(s0 > 0, s0 * jnp.exp(two_t_log_a), 0.0) + jnp.where(sigma > 0, sigma * ratio, 0.0)
    safe = jnp.where(v > 0, v, 1.0)
    return jnp.where(v > 0, jax.scipy.special.erfc(radius / jnp.sqrt(2.0 * safe)), 0.0)
