"""Signal propagation: mean-field theory at initialisation and its measurement in real networks.

Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) follows a random network
``h^{l+1} = W^l φ(h^l) + b^l`` with ``W_ij ~ N(0, σ_w²/fan_in)``, ``b_i ~ N(0, σ_b²)`` (the
parametrisation of :func:`lljax.init.gaussian`) through depth at infinite width. The
pre-activation second moment follows the *length map*
``q ↦ σ_w² E[φ(√q z)²] + σ_b²`` to a fixed point ``q*``, and the correlation of two inputs
follows the *c-map* ``c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q*`` with ``(u₁, u₂)`` centred
Gaussian, variances ``q*`` and correlation ``c``. Its slope at ``c = 1``,
``χ₁ = σ_w² E[φ'(√q* z)²]``, separates order (``χ₁ < 1``: inputs merge) from chaos
(``χ₁ > 1``: inputs decorrelate); ``χ₁ = 1`` is the *edge of chaos*, where the depth scale
``ξ_c = −1/log χ_c`` over which correlations are forgotten diverges.

Every theory function takes an activation (a name from :data:`lljax.models.ACTIVATIONS` or
an elementwise callable) and σ's that may be traced, so ``jax.vmap`` over σ arrays works,
e.g. the critical line is ``jax.vmap(lambda b: critical_sigma_w2("tanh", b))(sigma_b2s)``.
Fixed points and roots are found by a bracket search followed by a fixed number of bisection
steps in ``lax``, so they jit and vmap.

Quadrature. Expectations are two-dimensional Gaussian integrals taken in polar coordinates,
``(z₁, z₂) = r (cos t, sin t)``, with composite Gauss–Legendre rules: radial panels refined
geometrically towards ``r = 0`` (weight ``r e^{-r²/2}``), and angular panels split exactly at
the four rays where ``u₁`` or ``u₂`` changes sign and refined geometrically towards them. The
kinks of ReLU-like activations and the boundary layers of saturating ones at large ``q`` (of
angular width ~1/√q next to the rays) sit on or next to panel edges, so the rule converges
spectrally for them too: the ReLU arc-cosine kernel is reproduced to ~1e-14 in float64,
where a 128×128 tensor Gauss–Hermite rule errs by ~2e-3 (it is exact only for polynomials,
and it needs ``O(q)`` nodes to resolve ``tanh(√q z)``), and the erf c-map to ~1e-13 for
``q`` up to 1e5. One-dimensional expectations use the radial rule on both half-lines (its
finest panel, 2^-8, resolves ``tanh(√q z)`` to ~1e-12 up to ``q ≈ 1e5``; beyond, e.g.
tanh at σ_w² ≈ 1e6, χ₁ errs by ~1e-6). Results are computed in the floating dtype of the inputs
(float32, or float64 with ``jax_enable_x64``).

The second half of the module measures the same quantities in a given network
(:func:`propagation`) and its input–output Jacobian (:func:`jacobian_spectrum`).

Examples:
  >>> import lljax as ll
  >>> round(float(ll.signal.chi1("relu", 2.0, 0.0)), 4)
  1.0
  >>> round(float(ll.signal.critical_sigma_w2("erf", 0.0)), 4)  # π/4
  0.7854

References:
  Poole et al. 2016, arXiv:1606.05340 (length and correlation maps, order-to-chaos).
  Schoenholz et al. 2017, arXiv:1611.01232 (depth scales ξ_q, ξ_c; χ₁ = 1 trainability).
  Pennington et al. 2017, arXiv:1711.04735 (dynamical isometry, Jacobian spectra).
  Roy & Vetterli 2007, EUSIPCO (entropy effective rank).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from lljax import _linalg, _static
from lljax import models as models_lib

Activation = str | Callable[[jax.Array], jax.Array]

# ---------------------------------------------------------------------------------------------
# Quadrature
# ---------------------------------------------------------------------------------------------

# Radial panels: geometric towards 0 (features of scale 1/√q at large q live there), unit
# panels through the bulk of the Gaussian, then out to r = 12, beyond which the mass e^{-72} is
# below float64 resolution. Moments E[z^2k], k ≤ 4, come out exact to float64 rounding.
_RADIAL_EDGES = np.array([0.0] + [2.0**k for k in range(-8, 1)] + [2, 3, 4, 5, 6, 7, 8, 10, 12.0])
_RADIAL_NODES_PER_PANEL = 10
_ANGULAR_NODES_PER_PANEL = 12
_ANGULAR_LEVELS = 5
_ANGULAR_RATIO = 4.0


@functools.cache
def _gauss_legendre01(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


@functools.cache
def _radial_rule() -> tuple[np.ndarray, np.ndarray]:
    """Nodes r and weights for ∫_0^∞ f(r) r e^{-r²/2} dr (float64 numpy)."""
    x, w = _gauss_legendre01(_RADIAL_NODES_PER_PANEL)
    a, b = _RADIAL_EDGES[:-1, None], _RADIAL_EDGES[1:, None]
    r = (a + (b - a) * x).ravel()
    wr = ((b - a) * w).ravel() * r * np.exp(-0.5 * r * r)
    return r, wr


def _gaussian_expectation(f: Callable, q: jax.Array, dtype) -> jax.Array:
    """E[f(√q z)], z ~ N(0, 1), for elementwise ``f``: radial rule on both half-lines."""
    r, wr = _radial_rule()
    # ∫_0^∞ g(z) e^{-z²/2} dz / √(2π): the radial rule's weight carries an extra factor r.
    z = jnp.asarray(r, dtype)
    w = jnp.asarray(wr / r / math.sqrt(2.0 * math.pi), dtype)
    # Nodes on a trailing axis: an array of q's (elementwise maps broadcast) keeps its shape.
    q = jnp.asarray(q)
    lead = (1,) * q.ndim
    u = jnp.sqrt(q)[..., None] * z.reshape(lead + z.shape)
    return jnp.sum(w.reshape(lead + w.shape) * (f(u) + f(-u)), axis=-1)


@functools.cache
def _angular_fractions() -> np.ndarray:
    """Sub-panel edges in [0, 1] for a panel between two rays: geometric towards both ends."""
    half = 0.5 * _ANGULAR_RATIO ** -np.arange(_ANGULAR_LEVELS, -1, -1.0)  # ρ^-K/2 … 1/2
    return np.concatenate([[0.0], half, 1.0 - half[-2::-1], [1.0]])


def _pair_nodes(q: jax.Array, c: jax.Array, dtype):
    """Nodes (u₁, u₂) and weights for E[g(u₁, u₂)], u ~ N(0, q [[1, c], [c, 1]])."""
    r, wr = _radial_rule()
    x, w = _gauss_legendre01(_ANGULAR_NODES_PER_PANEL)
    theta = jnp.arccos(jnp.clip(c, -1.0, 1.0))
    two_pi = 2.0 * math.pi
    # u₁ ∝ cos t and u₂ ∝ cos(t − θ) change sign on these rays: make them panel edges. At
    # radius r, φ(√q r cos t) changes over an angle ~1/(√q r) next to them (a kink, or the
    # boundary layer of a saturating φ), so each panel is refined geometrically towards both
    # of its rays, as the radial rule is towards r = 0. The integrand is 2π-periodic: the
    # last panel wraps around.
    rays = jnp.sort(
        jnp.stack(
            [
                jnp.asarray(0.5 * math.pi, dtype),
                jnp.asarray(1.5 * math.pi, dtype),
                jnp.mod(theta + 0.5 * math.pi, two_pi),
                jnp.mod(theta + 1.5 * math.pi, two_pi),
            ]
        )
    )
    edges = jnp.concatenate([rays, rays[:1] + two_pi])
    frac = jnp.asarray(_angular_fractions(), dtype)
    sub = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None, :]
    a, b = sub[:, :-1].ravel()[:, None], sub[:, 1:].ravel()[:, None]
    t = (a + (b - a) * jnp.asarray(x, dtype)[None, :]).ravel()
    wt = ((b - a) * jnp.asarray(w, dtype)[None, :]).ravel() / two_pi
    sq = jnp.sqrt(q)
    rr = jnp.asarray(r, dtype)[:, None]
    u1 = sq * rr * jnp.cos(t)[None, :]
    u2 = sq * rr * jnp.cos(t - theta)[None, :]
    weights = jnp.asarray(wr, dtype)[:, None] * wt[None, :]
    return u1, u2, weights


def _derivative(act: Callable) -> Callable:
    """φ' of an elementwise φ (forward mode, so it vectorises without vmap)."""

    def dact(u):
        return jax.jvp(act, (u,), (jnp.ones_like(u),))[1]

    return dact


def _resolve(activation: Activation) -> Callable:
    if isinstance(activation, str) or callable(activation):
        return models_lib.activation(activation)
    raise ValueError(
        f"activation: expected a name from lljax.models.ACTIVATIONS or a callable, "
        f"got {activation!r}"
    )


def _is_real(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)


def _check_nonnegative(value, name: str, *, scalar: bool = True) -> None:
    """A σ² or q must be a real scalar ≥ 0 (``inf`` allowed): checked on concrete values.

    Traced values (under jit/vmap) pass unchecked, except for their shape: the root finders
    work on one scalar, and an array of σ's is ``jax.vmap``'s job.
    """
    shape = np.shape(value) if not isinstance(value, jax.core.Tracer) else value.shape
    if scalar and shape != ():
        raise ValueError(
            f"{name}: expected a scalar (jax.vmap over an array of values), got shape {shape}"
        )
    if isinstance(value, jax.core.Tracer):
        return
    values = np.asarray(value)
    if not _is_real(values.dtype):
        raise ValueError(f"{name}: expected a real non-negative variance, got {value!r}")
    if not np.all(values >= 0):  # NaN fails too
        raise ValueError(f"{name}: expected a non-negative variance, got {value!r}")


def _dtype(*values):
    return jnp.result_type(*values, float)


# Bracket for q*: q = 2^k, k = -60..40; then bisection inside [2^(k-1), 2^k].
_Q_EXPONENTS = np.arange(-60, 41)
# Bracket for the critical σ_w²: 2^k, k = -10..20.
_SW_EXPONENTS = np.arange(-10, 21)
_BISECTION_STEPS = 64
# Quadrature sums are accurate to a few ulps: ratios this close to 1 count as exactly 1.
_ROUNDING_ULPS = 16


def _bisect(g: Callable, lo, hi, num_steps: int = _BISECTION_STEPS):
    """Bisection keeping g(lo) > 0 ≥ g(hi) (so it finds a down-crossing); fixed steps."""

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = g(mid) > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, num_steps, body, (lo, hi))
    return 0.5 * (lo + hi)


def _implicit(g: Callable, root: jax.Array, ok: jax.Array | None = None) -> jax.Array:
    """``root`` (value unchanged) with the implicit-function-theorem derivative of g = 0.

    Bisection carries no derivative with respect to the parameters ``g`` closes over; one
    Newton step whose value is cancelled, ``root + (t − stop_gradient(t))`` with
    ``t = −g(root) / g'(root)``, restores ``d root = −∂g / g'`` (Blondel et al. 2022,
    arXiv:2105.15183). Only where ``ok`` (default: finite positive roots; roots at 0 or ±inf
    keep a zero derivative); elsewhere g is evaluated at a safe point, 1 or 0.
    """
    if ok is None:
        ok, safe = jnp.isfinite(root) & (root > 0), jnp.ones_like(root)
    else:
        safe = jnp.zeros_like(root)
    r = jax.lax.stop_gradient(jnp.where(ok, root, safe))
    value, slope = jax.jvp(g, (r,), (jnp.ones_like(r),))
    slope = jax.lax.stop_gradient(slope)
    t = -value / jnp.where(slope != 0, slope, jnp.ones_like(slope))
    return root + jnp.where(ok, t - jax.lax.stop_gradient(t), jnp.zeros_like(t))


def _bracket(g: Callable, exponents: np.ndarray, dtype, tol: float = 0.0):
    """The first grid point 2^k with g ≤ −tol, and the last grid point before it with g > 0
    (or 0 if none): a bracket of the first down-crossing. ``found`` is False if none.

    The lower end is not simply the predecessor of 2^k: where g lies in (−tol, 0] over the
    grid points below 2^k (e.g. tanh at the critical point σ_w² = 1, σ_b² = 0, where
    g(q) ≈ −2q), there is no crossing between them, and bisecting from the predecessor would
    return it, a spurious root of size ~tol, instead of the crossing further down (at 0).
    """
    grid = jnp.asarray(2.0 ** exponents.astype(np.float64), dtype)
    vals = jax.vmap(g)(grid)
    below = ~(vals > -tol)  # NaN counts as "below" so divergence does not hide a root
    found = jnp.any(below)
    k = jnp.argmax(below)
    hi = grid[k]
    index = jnp.arange(grid.shape[0])
    j = jnp.max(jnp.where((vals > 0) & (index < k), index, -1))
    lo = jnp.where(j >= 0, grid[jnp.maximum(j, 0)], jnp.zeros((), dtype))
    return lo, hi, found


# ---------------------------------------------------------------------------------------------
# Mean-field theory
# ---------------------------------------------------------------------------------------------


@functools.partial(_static.jit, static_argnums=0)
def _length_map(act, sigma_w2, sigma_b2, q):
    dtype = _dtype(sigma_w2, sigma_b2, q)
    e = _gaussian_expectation(lambda u: jnp.square(act(u)), jnp.asarray(q, dtype), dtype)
    return sigma_w2 * e + sigma_b2


def length_map(activation: Activation, sigma_w2, sigma_b2, q) -> jax.Array:
    """The length map ``q ↦ σ_w² E[φ(√q z)²] + σ_b²`` (one layer of infinite width).

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in (scalar, may be traced).
      sigma_b2: bias variance (scalar, may be traced).
      q: pre-activation second moment of the previous layer (scalar).

    Returns:
      The next layer's pre-activation second moment (scalar).

    Examples:
      >>> import lljax as ll
      >>> float(ll.signal.length_map("relu", 2.0, 0.5, 3.0))  # σ_w² q / 2 + σ_b²
      3.5

    References:
      Poole et al. 2016, arXiv:1606.05340, eq. (3).
    """
    # The map is elementwise: arrays of σ's and q's broadcast.
    _check_nonnegative(sigma_w2, "sigma_w2", scalar=False)
    _check_nonnegative(sigma_b2, "sigma_b2", scalar=False)
    _check_nonnegative(q, "q", scalar=False)
    return _length_map(_resolve(activation), sigma_w2, sigma_b2, q)


@functools.partial(_static.jit, static_argnums=0)
def _q_star(act, sigma_w2, sigma_b2):
    dtype = _dtype(sigma_w2, sigma_b2)
    sigma_w2 = jnp.asarray(sigma_w2, dtype)
    sigma_b2 = jnp.asarray(sigma_b2, dtype)

    # V(q)/q − 1 has the sign of V(q) − q but stays well conditioned as q* → 0 near the
    # critical point (where V'(q*) → 1 makes V(q) − q flat), so χ₁ there is accurate.
    def g(q):
        e = _gaussian_expectation(lambda u: jnp.square(act(u)), q, dtype)
        return sigma_w2 * (e / q) + sigma_b2 / q - 1.0

    # A crossing must clear the quadrature's rounding: where V(q)/q is within rounding of 1
    # for all large q (ReLU at σ_w² = 2, the identity at σ_w² = 1) the sign of g is noise,
    # and a "root" at q ~ σ_b²/eps would be spurious: there is no resolvable fixed point.
    tol = _ROUNDING_ULPS * float(jnp.finfo(dtype).eps)
    lo, hi, found = _bracket(g, _Q_EXPONENTS, dtype, tol)
    q = jnp.where(found, _bisect(g, lo, hi), jnp.inf)
    return _implicit(lambda qq: _length_map(act, sigma_w2, sigma_b2, qq) - qq, q)


def q_star(activation: Activation, sigma_w2, sigma_b2) -> jax.Array:
    """Fixed point ``q*`` of the length map: the pre-activation second moment deep in the net.

    The stable fixed point reached from small ``q``: the smallest root where
    ``length_map(q) − q`` crosses from positive to non-positive. It is ``0`` (up to ~1e-18)
    when ``q = 0`` is stable (e.g. odd activations with ``σ_b² = 0`` in the ordered phase),
    and ``+inf`` when the length map has no fixed point below ``2^40`` (e.g. ReLU with
    ``σ_w² > 2``, where the variance grows geometrically). A crossing must clear the
    quadrature's rounding (16 eps in ``V(q)/q``), so on the critical line of ReLU
    (``σ_w² = 2``, where ``V(q) = q + σ_b²``, and where every ``q`` is fixed if ``σ_b² = 0``)
    the result is ``+inf`` too. The other functions read ``q* = inf`` as the ``q → ∞``
    limit of their maps (see :func:`mean_field`).

    Found by a bracket search over powers of two and 64 bisection steps, so it jits and
    vmaps over ``sigma_w2`` and ``sigma_b2``.

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in.
      sigma_b2: bias variance.

    Returns:
      ``q*`` (scalar, in the inputs' floating dtype).

    Examples:
      >>> import lljax as ll
      >>> float(ll.signal.q_star("relu", 1.0, 0.5))  # σ_b² / (1 − σ_w²/2)
      1.0

    References:
      Poole et al. 2016, arXiv:1606.05340, Fig. 1.
    """
    _check_nonnegative(sigma_w2, "sigma_w2")
    _check_nonnegative(sigma_b2, "sigma_b2")
    return _q_star(_resolve(activation), sigma_w2, sigma_b2)


def _cap_q(q, dtype):
    # q* = inf (the length diverges) means the q → ∞ limit of the maps; it is reached, to
    # the dtype's precision, at this q, still small enough that φ(√q z)² cannot overflow
    # for the unbounded (asymptotically linear) activations that make q* infinite.
    return jnp.minimum(q, jnp.asarray(float(jnp.finfo(dtype).max) ** 0.25, dtype))


def _floor_q(q, dtype):
    # At q* = 0 the c-map is 0/0; its limit is the linearised map, reached at any tiny q.
    q = _cap_q(q, dtype)
    return jnp.maximum(q, jnp.asarray(float(jnp.finfo(dtype).tiny) ** 0.3, dtype))


def _cmap_once(act, sigma_w2, sigma_b2, q, c, dtype):
    u1, u2, w = _pair_nodes(q, c, dtype)
    f1, f2 = act(u1), act(u2)
    q12 = sigma_w2 * jnp.sum(w * f1 * f2) + sigma_b2
    # Normalise by the same rule's variances so that c = 1 maps to 1 to rounding.
    q11 = sigma_w2 * jnp.sum(w * f1 * f1) + sigma_b2
    q22 = sigma_w2 * jnp.sum(w * f2 * f2) + sigma_b2
    return q12 / jnp.sqrt(q11 * q22)


@functools.partial(_static.jit, static_argnums=(0, 5, 6))
def _correlation_map(act, sigma_w2, sigma_b2, c, q, num_iters, trajectory):
    dtype = _dtype(sigma_w2, sigma_b2, c)
    c = jnp.asarray(c, dtype)
    q = _q_star(act, sigma_w2, sigma_b2) if q is None else jnp.asarray(q, dtype)
    q = _floor_q(q, dtype)
    step = jnp.vectorize(lambda ci: _cmap_once(act, sigma_w2, sigma_b2, q, ci, dtype))

    def body(ci, _):
        cn = step(ci)
        return cn, cn

    c_last, cs = jax.lax.scan(body, c, None, length=num_iters)
    return cs if trajectory else c_last


def correlation_map(
    activation: Activation,
    sigma_w2,
    sigma_b2,
    c,
    *,
    num_iters: int = 1,
    q=None,
    trajectory: bool = False,
) -> jax.Array:
    """The c-map ``c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²) / q*`` and its iterates.

    ``(u₁, u₂)`` is centred Gaussian with variances ``q`` and correlation ``c``. The
    denominator is computed by the same quadrature (equal to ``q*`` at the fixed point) so
    that ``c = 1`` is mapped to 1 to rounding. ``q = inf`` (the default where ``q* = inf``,
    e.g. ReLU with ``σ_w² ≥ 2``) gives the ``q → ∞`` limit, where ``σ_b²`` no longer
    matters: for ReLU the arc-cosine kernel ``(√(1 − c²) + (π − arccos c) c) / π``, which
    is also its c-map at every ``q`` when ``σ_b² = 0`` (positive homogeneity).

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in.
      sigma_b2: bias variance.
      c: starting correlation(s) in ``[-1, 1]``, any shape.
      num_iters: how many layers to apply the map (static).
      q: the pre-activation second moment to use; default ``q*`` (:func:`q_star`);
        ``inf`` means the ``q → ∞`` limit.
      trajectory: if True return all iterates ``(num_iters, *c.shape)`` (layers 1..L);
        otherwise only the last, shaped like ``c``.

    Returns:
      The correlation after ``num_iters`` layers (or the whole trajectory).

    Raises:
      ValueError: if ``num_iters`` is not a positive int, a σ² or ``q`` is not a
        non-negative scalar, or a (concrete) ``c`` lies outside ``[-1, 1]``.

    Examples:
      >>> import lljax as ll
      >>> round(float(ll.signal.correlation_map("relu", 2.0, 0.0, 0.0)), 5)  # 1/π
      0.31831

    References:
      Poole et al. 2016, arXiv:1606.05340, eq. (5); Cho & Saul 2009 (arc-cosine kernel).
    """
    if not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise ValueError(f"num_iters: expected a positive int, got {num_iters!r}")
    _check_nonnegative(sigma_w2, "sigma_w2")
    _check_nonnegative(sigma_b2, "sigma_b2")
    if q is not None:
        _check_nonnegative(q, "q")
    if not isinstance(c, jax.core.Tracer):
        # The quadrature clips c to [-1, 1], so c = 1.5 would silently be read as 1; allow
        # only the rounding of a computed cosine.
        cs = np.asarray(c)
        eps = float(jnp.finfo(cs.dtype).eps) if jnp.issubdtype(cs.dtype, jnp.floating) else 0.0
        if not (_is_real(cs.dtype) and np.all(np.abs(cs) <= 1 + 16 * eps)):
            raise ValueError(f"c: expected correlations in [-1, 1], got {c!r}")
    return _correlation_map(
        _resolve(activation), sigma_w2, sigma_b2, c, q, int(num_iters), bool(trajectory)
    )


@functools.partial(_static.jit, static_argnums=0)
def _chi1(act, sigma_w2, sigma_b2):
    dtype = _dtype(sigma_w2, sigma_b2)
    q = _cap_q(_q_star(act, sigma_w2, sigma_b2), dtype)
    dact = _derivative(act)
    return sigma_w2 * _gaussian_expectation(lambda u: jnp.square(dact(u)), q, dtype)


def chi1(activation: Activation, sigma_w2, sigma_b2) -> jax.Array:
    """``χ₁ = σ_w² E[φ'(√q* z)²]``: the slope of the c-map at ``c = 1``.

    ``χ₁ < 1`` is the ordered phase, ``χ₁ > 1`` the chaotic phase; χ₁ is also the mean
    squared singular value of one layer's Jacobian, i.e. the per-layer growth factor of
    backpropagated gradient second moments.

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in.
      sigma_b2: bias variance.

    Returns:
      χ₁ (scalar).

    Examples:
      >>> import lljax as ll
      >>> round(float(ll.signal.chi1("tanh", 1.0, 0.0)), 4)
      1.0

    References:
      Poole et al. 2016, arXiv:1606.05340, eq. (7).
    """
    _check_nonnegative(sigma_w2, "sigma_w2")
    _check_nonnegative(sigma_b2, "sigma_b2")
    return _chi1(_resolve(activation), sigma_w2, sigma_b2)


class MeanField(NamedTuple):
    """Mean-field summary at ``(σ_w², σ_b²)``; every field is a scalar array.

    Attributes:
      q_star: fixed point of the length map (inf where the length diverges).
      c_star: stable fixed point of the c-map (1 in the ordered phase, and where
        ``q_star`` is inf).
      chi1: slope of the c-map at c = 1, ``σ_w² E[φ'²]``.
      chi_c: slope of the c-map at ``c_star``, ``σ_w² E[φ'(u₁)φ'(u₂)]``.
      chi_q: slope of the length map at ``q_star``.
      xi_c: correlation depth scale ``−1/log χ_c`` (inf at criticality and beyond).
      xi_q: length depth scale ``−1/log χ_q`` (inf at criticality and beyond).
    """

    q_star: jax.Array
    c_star: jax.Array
    chi1: jax.Array
    chi_c: jax.Array
    chi_q: jax.Array
    xi_c: jax.Array
    xi_q: jax.Array


@functools.partial(_static.jit, static_argnums=0)
def _mean_field(act, sigma_w2, sigma_b2):
    dtype = _dtype(sigma_w2, sigma_b2)
    sigma_w2 = jnp.asarray(sigma_w2, dtype)
    sigma_b2 = jnp.asarray(sigma_b2, dtype)
    q = _q_star(act, sigma_w2, sigma_b2)
    qe = _cap_q(q, dtype)  # q* = inf: the q → ∞ limit
    qf = _floor_q(q, dtype)
    dact = _derivative(act)
    ddact = _derivative(dact)
    chi_1 = sigma_w2 * _gaussian_expectation(lambda u: jnp.square(dact(u)), qe, dtype)
    # dV/dq at q* by Stein's lemma: σ_w² E[φ'² + φ φ''] (finite at q = 0, unlike d√q/dq).
    chi_q = sigma_w2 * _gaussian_expectation(
        lambda u: jnp.square(dact(u)) + act(u) * ddact(u), qe, dtype
    )

    def g(c):
        return _cmap_once(act, sigma_w2, sigma_b2, qf, c, dtype) - c

    # c = 1 is stable iff χ₁ ≤ 1 (order). In chaos, cmap(c) − c ≥ 0 at c = -1 and < 0 just
    # below 1, so bisection finds the stable fixed point c* < 1 in between. With q* = inf
    # the length diverges instead (φ grows linearly: ReLU-like, σ_w² beyond the critical
    # line): the q → ∞ c-map of such φ has slope 1 at c = 1 and lies on or above the
    # diagonal (for ReLU the arc-cosine kernel), so correlations still converge to c* = 1,
    # sub-exponentially; χ₁ > 1 there measures the growth of lengths, not decorrelation.
    # Halving [-1, 1] reaches the spacing of floats near 1 after nmant + 2 steps; more
    # steps (each a full two-dimensional quadrature) change nothing.
    steps = jnp.finfo(dtype).nmant + 2
    chaotic_c = _bisect(g, jnp.asarray(-1.0, dtype), jnp.asarray(1.0, dtype), steps)
    chaotic = (chi_1 > 1) & jnp.isfinite(q)
    # The chaotic c* moves with σ (c* = 0 too, for odd φ without bias: −g(0) = σ_b² E[..]).
    chaotic_c = _implicit(g, chaotic_c, chaotic & (jnp.abs(chaotic_c) < 1))
    c_star = jnp.where(chaotic, chaotic_c, jnp.ones((), dtype))
    u1, u2, w = _pair_nodes(qf, c_star, dtype)
    # At c* = 1 the c-map's slope is χ₁ itself; the two-dimensional rule would differ from it
    # by hundreds of ulps, which reads as a finite ξ_c ~ 1/eps on the critical line.
    chi_c = jnp.where(c_star == 1, chi_1, sigma_w2 * jnp.sum(w * dact(u1) * dact(u2)))
    return MeanField(
        q_star=q,
        c_star=c_star,
        chi1=chi_1,
        chi_c=chi_c,
        chi_q=chi_q,
        xi_c=_depth(chi_c),
        xi_q=_depth(chi_q),
    )


def _depth(chi):
    """``−1 / log χ``; at a stable fixed point χ ≤ 1, so χ ≥ 1 (criticality, or χ rounded just
    above 1 there) is an infinite depth scale, never a huge negative one. χ within the
    quadrature's rounding below 1 is criticality too, not a depth scale of ~1/eps layers."""
    inf = jnp.full_like(chi, jnp.inf)
    below = 1 - _ROUNDING_ULPS * jnp.finfo(chi.dtype).eps
    return jnp.where(chi < below, -1.0 / jnp.log(jnp.minimum(chi, below)), inf)


def mean_field(activation: Activation, sigma_w2, sigma_b2) -> MeanField:
    """All mean-field quantities at ``(σ_w², σ_b²)``: q*, c*, χ₁, χ_c, χ_q, ξ_c, ξ_q.

    ``c*`` is found by bisection of ``cmap(c) − c`` on ``[-1, 1]``; ``χ_c`` is the c-map's
    slope there, ``σ_w² E[φ'(u₁)φ'(u₂)]``, which equals χ₁ in the ordered phase. A χ within
    16 eps of 1 counts as critical (its ξ is inf, not ~1/eps layers of rounding).

    Where ``q* = inf`` (activations growing linearly, e.g. ReLU, GELU, softplus, beyond
    their critical line) every quantity is the ``q → ∞`` limit of its formula: the lengths
    grow geometrically, ``c* = 1`` (the limiting c-map has slope 1 at ``c = 1`` and lies on
    or above the diagonal, so correlations converge, but sub-exponentially) and
    ``ξ_c = ξ_q = inf``; χ₁ and χ_c remain the per-layer growth of gradient second moments.
    For ReLU, in every regime: ``c* = 1`` and ``χ₁ = χ_c = χ_q = σ_w²/2``; for ``σ_w² < 2``,
    ``q* = σ_b² / (1 − σ_w²/2)`` (0 when ``σ_b² = 0``) and
    ``ξ_c = ξ_q = −1/log(σ_w²/2)``; for ``σ_w² ≥ 2``, ``q* = ξ_c = ξ_q = inf``.

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in.
      sigma_b2: bias variance.

    Returns:
      A :class:`MeanField`.

    Examples:
      >>> import lljax as ll
      >>> mf = ll.signal.mean_field("tanh", 4.0, 0.0)  # chaotic: inputs decorrelate
      >>> float(mf.c_star) < 0.01, float(mf.chi1) > 1
      (True, True)
      >>> mf = ll.signal.mean_field("relu", 2.5, 0.0)  # lengths explode, c → 1
      >>> float(mf.q_star), float(mf.c_star), round(float(mf.chi_c), 4), float(mf.xi_c)
      (inf, 1.0, 1.25, inf)

    References:
      Schoenholz et al. 2017, arXiv:1611.01232, eqs. (5)–(9).
    """
    _check_nonnegative(sigma_w2, "sigma_w2")
    _check_nonnegative(sigma_b2, "sigma_b2")
    return _mean_field(_resolve(activation), sigma_w2, sigma_b2)


class DepthScale(NamedTuple):
    """Depth scales (in layers) over which correlations (``xi_c``) and lengths (``xi_q``)
    approach their fixed points; ``xi_c`` diverges at the edge of chaos."""

    xi_c: jax.Array
    xi_q: jax.Array


def depth_scale(activation: Activation, sigma_w2, sigma_b2) -> DepthScale:
    """``ξ_c = −1/log χ_c`` and ``ξ_q = −1/log χ_q`` (Schoenholz et al. 2017).

    Networks deeper than a few ``ξ_c`` are untrainable at initialisation; ``ξ_c = inf`` on
    the critical line.

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_w2: weight variance × fan_in.
      sigma_b2: bias variance.

    Returns:
      A :class:`DepthScale` of scalars.

    Examples:
      >>> import lljax as ll
      >>> round(float(ll.signal.depth_scale("relu", 1.0, 0.1).xi_c), 4)  # −1/log(1/2)
      1.4427

    References:
      Schoenholz et al. 2017, arXiv:1611.01232, eqs. (6) and (9).
    """
    mf = mean_field(activation, sigma_w2, sigma_b2)
    return DepthScale(mf.xi_c, mf.xi_q)


@functools.partial(_static.jit, static_argnums=0)
def _critical_sigma_w2(act, sigma_b2):
    dtype = _dtype(sigma_b2)
    sigma_b2 = jnp.asarray(sigma_b2, dtype)

    def g(sw):
        return 1.0 - _chi1(act, sw, sigma_b2)

    # χ₁ grows with σ_w² along a line of fixed σ_b², from 0 at σ_w² = 0.
    lo, hi, found = _bracket(g, _SW_EXPONENTS, dtype)
    sw = jnp.where(found, _bisect(g, lo, hi), jnp.nan)
    return _implicit(g, sw)


def critical_sigma_w2(activation: Activation, sigma_b2) -> jax.Array:
    """The order-to-chaos transition: the σ_w² where ``χ₁(σ_w², σ_b²) = 1``.

    Root finding in σ_w² (bracket over powers of two up to 2^20, then bisection), each
    evaluation solving for ``q*``; jits and vmaps over ``sigma_b2``, so the whole critical
    line is ``jax.vmap(lambda b: critical_sigma_w2(act, b))(sigma_b2s)``. NaN where χ₁ stays
    below 1.

    Args:
      activation: a name from :data:`lljax.models.ACTIVATIONS` or an elementwise callable.
      sigma_b2: bias variance (scalar, may be traced).

    Returns:
      The critical σ_w² (scalar).

    Examples:
      >>> import lljax as ll
      >>> round(float(ll.signal.critical_sigma_w2("relu", 0.0)), 4)
      2.0
      >>> round(float(ll.signal.critical_sigma_w2("tanh", 0.05)), 2)
      1.76

    References:
      Poole et al. 2016, arXiv:1606.05340, Fig. 2; Schoenholz et al. 2017,
      arXiv:1611.01232, Fig. 1.
    """
    _check_nonnegative(sigma_b2, "sigma_b2")
    return _critical_sigma_w2(_resolve(activation), sigma_b2)


# ---------------------------------------------------------------------------------------------
# Measurement in a given network
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class Propagation:
    """Per-layer statistics of one forward and backward pass; arrays have a leading layer axis.

    Layer 0 is the input; then the output of each recorded submodule in call order (for an
    :func:`lljax.models.mlp` the Dense outputs, i.e. pre-activations, and norm outputs; for a
    residual net the embedding, each block's output and the head). Under ``jax.vmap`` over a
    population every array gains a leading member axis; ``names`` is static.

    Attributes:
      mean: mean of all entries, ``(layers,)``.
      second_moment: mean of squared entries, ``(layers,)``: mean-field ``q^l``.
      variance: ``second_moment − mean²``, ``(layers,)``.
      grad_second_moment: mean squared entry of the gradient of ``⟨cotangent, output⟩``
        with respect to the layer's output, ``(layers,)``: mean-field ``q̃^l``.
      cosine: cosine similarity of examples' (uncentred, flattened) representations:
        ``(layers,)`` mean over all pairs ``i < j``, or ``(layers, pairs)`` for the given
        ``pairs``: mean-field ``c^l``.
      effective_rank: ``exp(entropy)`` of the normalised singular values of the
        example-centred ``(batch, features)`` representation, ``(layers,)``; falls towards 1
        under rank collapse (0 when all examples coincide).
      names: layer names, ``("input", ...)`` (static).
    """

    mean: jax.Array
    second_moment: jax.Array
    variance: jax.Array
    grad_second_moment: jax.Array
    cosine: jax.Array
    effective_rank: jax.Array
    names: tuple[str, ...] = struct.field(pytree_node=False, default=())


def effective_rank(a: jax.Array) -> jax.Array:
    """Entropy effective rank (Roy & Vetterli 2007) of a ``(n, d)`` matrix's rows, centred.

    ``exp(−Σ p_i log p_i)`` with ``p_i = s_i / Σ s_j`` over the singular values of the
    column-centred matrix; between 1 and ``min(n − 1, d)``, and 0 for a constant matrix.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> round(float(ll.signal.effective_rank(jnp.eye(4))), 4)  # centred: rank 3, equal s
      3.0
    """
    a = jnp.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"a: expected a (n, d) matrix, got shape {a.shape}")
    a = a - jnp.mean(a, axis=0, keepdims=True)
    s = _linalg.svdvals(a)
    total = jnp.sum(s)
    p = s / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.where(total > 0, jnp.exp(entropy), 0.0)


def _module(model) -> nn.Module:
    module = getattr(model, "module", None)
    if not isinstance(module, nn.Module):
        raise ValueError(
            "model: expected an lljax Model built from a flax.linen module (model.module); "
            f"got module={module!r}. Wrap flax modules with lljax.models.wrap."
        )
    return module


def _recorded_forward(module, params, x, stats, eps, depth, names):
    """Applies ``module``, adding ``eps[i]`` to the i-th recorded submodule output.

    Records outputs of submodules at most ``depth`` levels below the root whose output is
    an array with the batch axis; their names go into ``names`` (a list, filled while
    tracing).
    """
    acts = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        scope = context.module.scope
        path = tuple(scope.path) if scope is not None else ()
        if (
            context.method_name != "__call__"
            or not 1 <= len(path) <= depth
            or not isinstance(out, jax.Array)
            or out.ndim < 1
            or out.shape[0] != x.shape[0]
        ):
            return out
        i = len(acts)
        if eps is not None:
            out = out + eps[i]
        acts.append(out)
        name = "/".join(path)
        while name in names[: len(acts) - 1]:  # a module called twice
            name += "'"
        if len(names) < len(acts):
            names.append(name)
        return out

    variables = {"params": params}
    if stats:
        variables["stats"] = stats
    with nn.intercept_methods(interceptor):
        out, _ = module.apply(variables, x, mutable=["batch_stats"])
    return out, acts


def _layer_stats(a, g, pairs):
    a = a.reshape(a.shape[0], -1)
    g = g.reshape(g.shape[0], -1)
    mean = jnp.mean(a)
    second = jnp.mean(jnp.square(a))
    norms = jnp.sqrt(jnp.sum(jnp.square(a), axis=1))
    safe = jnp.where(norms > 0, norms, 1.0)
    if pairs is None:
        n = a.shape[0]
        unit = a / safe[:, None]
        gram = unit @ unit.T
        iu = np.triu_indices(n, k=1)
        cosine = jnp.mean(gram[iu]) if n > 1 else jnp.asarray(jnp.nan, a.dtype)
    else:
        i, j = pairs[:, 0], pairs[:, 1]
        cosine = jnp.sum(a[i] * a[j], axis=1) / (safe[i] * safe[j])
    return (
        mean,
        second,
        second - jnp.square(mean),
        jnp.mean(jnp.square(g)),
        cosine,
        effective_rank(a),
    )


def propagation(
    model,
    params,
    x: jax.Array,
    *,
    pairs: jax.Array | Sequence[tuple[int, int]] | None = None,
    cotangent: jax.Array | None = None,
    key: jax.Array | None = None,
    stats: Any = None,
    depth: int = 1,
) -> Propagation:
    """Measures signal propagation through ``model`` at ``params`` on a batch ``x``.

    Reads every submodule's output of the flax module behind ``model`` (``model.module``)
    with a method interceptor, so it works for any lljax model: plain, residual (one entry
    per block), normalised (LayerNorm/BatchNorm outputs appear as their own layers). The
    backward pass differentiates ``⟨cotangent, output⟩`` with respect to each recorded
    output: with a random cotangent this is the mean-field gradient signal; pass
    ``cotangent = ∂loss/∂output`` for the loss gradient.

    Args:
      model: an lljax :class:`~lljax.models.Model` with a flax ``module``.
      params: its params (one member; ``jax.vmap`` over a population).
      x: a batch ``(batch, *input_shape)``.
      pairs: optional int array ``(pairs, 2)`` of example indices in ``[0, batch)`` whose
        cosine is reported individually; default: the mean over all pairs.
      cotangent: output cotangent ``(batch, *output_shape)``; default standard normal from
        ``key``, or ones if ``key`` is None.
      key: PRNG key for the random cotangent.
      stats: BatchNorm population statistics (``model.stats(params, x_all)``); default:
        normalise by the batch itself.
      depth: record submodules up to this many levels below the root (1: top-level
        layers/blocks; 2 also their sublayers, each child before its parent).

    Returns:
      A :class:`Propagation`.

    Raises:
      ValueError: if ``model`` has no flax module, ``x`` has no batch axis, or ``pairs``
        is malformed or (when concrete) out of range.

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.mlp([16, 64, 64, 4], activation="tanh")
      >>> params = model.init(jax.random.key(0))
      >>> x = jax.random.normal(jax.random.key(1), (8, 16))
      >>> p = ll.signal.propagation(model, params, x)
      >>> p.names
      ('input', 'Dense_0', 'Dense_1', 'Dense_2')
      >>> p.second_moment.shape
      (4,)

    References:
      Poole et al. 2016, arXiv:1606.05340; Schoenholz et al. 2017, arXiv:1611.01232;
      Roy & Vetterli 2007 (effective rank).
    """
    module = _module(model)
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch (batch, *input_shape), got shape {x.shape}")
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth: expected a positive int, got {depth!r}")
    if pairs is not None:
        pairs = jnp.asarray(pairs)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or not jnp.issubdtype(pairs.dtype, jnp.integer):
            raise ValueError(f"pairs: expected an int array (pairs, 2), got {pairs!r}")
        # Gathers clamp out-of-range indices silently; check them while they are concrete.
        if not isinstance(pairs, jax.core.Tracer) and pairs.size:
            low, high = int(jnp.min(pairs)), int(jnp.max(pairs))
            if low < 0 or high >= x.shape[0]:
                raise ValueError(
                    f"pairs: expected example indices in [0, {x.shape[0]}) (the batch), "
                    f"got indices from {low} to {high}"
                )

    names: list[str] = []
    out_shape = jax.eval_shape(
        lambda xx: _recorded_forward(module, params, xx, stats, None, depth, names)[0], x
    )
    if cotangent is not None and jnp.shape(cotangent) != out_shape.shape:
        raise ValueError(
            f"cotangent: expected the output's shape {out_shape.shape}, got {jnp.shape(cotangent)}"
        )
    stacked = _propagation(module, depth, params, x, pairs, cotangent, key, stats)
    return Propagation(*stacked, names=("input", *names))


@functools.partial(_static.jit, static_argnums=(0, 1))
def _propagation(module, depth, params, x, pairs, cotangent, key, stats):
    # One compiled program per (module, depth, shapes): much cheaper than op-by-op dispatch.
    shapes = jax.eval_shape(
        lambda xx: _recorded_forward(module, params, xx, stats, None, depth, [])[1], x
    )
    eps = [jnp.zeros(s.shape, s.dtype) for s in shapes]

    def forward(xx, ee):
        return _recorded_forward(module, params, xx, stats, ee, depth, [])

    out, vjp_fn, acts = jax.vjp(forward, x, eps, has_aux=True)
    if cotangent is None:
        if key is None:
            cotangent = jnp.ones_like(out)
        else:
            cotangent = jax.random.normal(key, out.shape, out.dtype)
    g_x, g_eps = vjp_fn(jnp.asarray(cotangent, out.dtype))
    per_layer = [_layer_stats(x, g_x, pairs)]
    per_layer += [_layer_stats(a, g, pairs) for a, g in zip(acts, g_eps, strict=True)]
    return [jnp.stack(column) for column in zip(*per_layer, strict=True)]


def jacobian_spectrum(model, params, x: jax.Array, *, stats: Any = None) -> jax.Array:
    """Singular values of the input–output Jacobian ``∂f(x)/∂x`` at each example.

    Dynamical isometry (Saxe et al. 2014; Pennington et al. 2017) is all singular values
    near 1: a deep linear net with orthogonal weights has exactly 1. The Jacobian of one
    example is taken with the example alone in its batch, so BatchNorm models need
    population ``stats``.

    Args:
      model: an lljax :class:`~lljax.models.Model`.
      params: its params.
      x: a batch ``(batch, *input_shape)``.
      stats: BatchNorm population statistics, passed to ``model.apply``.

    Returns:
      ``(batch, min(in_size, out_size))`` singular values in descending order (in the
      model's dtype; full-precision matmuls for the SVD).

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.mlp([8, 8, 8], activation="identity", bias=False,
      ...                       init="orthogonal")
      >>> s = ll.signal.jacobian_spectrum(model, model.init(jax.random.key(0)),
      ...                                 jax.numpy.ones((2, 8)))
      >>> s.shape, bool(jax.numpy.allclose(s, 1.0, atol=1e-5))
      ((2, 8), True)

    References:
      Saxe et al. 2014, arXiv:1312.6120; Pennington et al. 2017, arXiv:1711.04735.
    """
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch (batch, *input_shape), got shape {x.shape}")
    return _jacobian_spectrum(model.apply, params, x, stats)


@functools.partial(_static.jit, static_argnums=0)
def _jacobian_spectrum(apply_fn, params, x, stats):
    kwargs = {} if stats is None else {"stats": stats}

    def f(xi):
        return apply_fn(params, xi[None], **kwargs)[0]

    in_size = math.prod(x.shape[1:])
    out_size = math.prod(jax.eval_shape(f, x[0]).shape)
    jac_fn = jax.jacfwd(f) if in_size <= out_size else jax.jacrev(f)
    with jax.default_matmul_precision("highest"):
        jac = jax.vmap(jac_fn)(x).reshape(x.shape[0], out_size, in_size)
        return _linalg.svdvals(jac)
