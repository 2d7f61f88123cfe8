"""Langevin samplers as optax transformations: SGLD, pSGLD, SGHMC, and MALA steps.

Every sampler here follows one update rule. For a loss ``L`` (a minibatch estimate ``ĝ`` of
its gradient), step size ``ε``, temperature ``T``, gradient scale ``nβ`` and an optional
localisation ``γ`` toward an anchor ``w₀``::

    Δw = −ε [nβ ĝ(w) + γ (w − w₀)] + √(2 ε T) ξ,        ξ ~ N(0, I)

whose stationary law (as ε → 0, with exact gradients) is

    p(w) ∝ exp(−[nβ L(w) + γ/2 ‖w − w₀‖²] / T).

``T = 0`` is plain gradient descent (``optax.sgd(ε)`` exactly when ``nβ = 1`` and there is
no localisation). The noise is added to the *scaled* step, unlike ``optax.noisy_sgd``,
whose annealed noise is not Langevin noise.

The samplers are ``optax.GradientTransformation`` s: ``update(grads, state, params)`` returns
the increment ``Δw`` to add with ``optax.apply_updates``. The PRNG key lives in the state
(``state.key``), and so do the step size, temperature, ``nβ`` and ``γ`` (as scalar arrays), so
a sweep over them is one compiled program: build the transformation inside ``jax.vmap`` with
per-member values, or replace the fields of a stacked state. The hyperparameters are
scalars: an array (one value per coordinate or per member, outside ``vmap``) is refused,
as are optax schedules.

Independent chains need their own keys. A sampler built once holds one key, so
``jax.vmap(opt.init)(stacked_params)`` gives every chain that same key and the chains draw
identical noise; build one sampler per chain inside ``vmap`` instead::

    states = jax.vmap(lambda k, p: sgld(1e-3, 1.0, key=k).init(p))(jax.random.split(key, n), ps)

(:func:`lljax.ensemble.train` does this for a sampler passed to it: it folds each member's
data-order key into the key).

Converters map other conventions onto this one: :func:`from_devinterp` / :func:`to_devinterp`
(devinterp's ``Δw = ε/2 (−nβ ∇L − γ (w − w₀)) + N(0, ε)``) and :func:`from_blackjax` /
:func:`to_blackjax` (blackjax's ``w + h ∇log p + √(2 T h) ξ``).

Examples:
  >>> import jax, jax.numpy as jnp, optax, lljax as ll
  >>> opt = ll.optim.sgld(learning_rate=1e-2, temperature=1.0, key=jax.random.key(0))
  >>> params = {"w": jnp.zeros(3)}
  >>> state = opt.init(params)
  >>> grads = jax.grad(lambda p: 0.5 * jnp.sum(p["w"] ** 2))(params)
  >>> updates, state = opt.update(grads, state, params)
  >>> optax.apply_updates(params, updates)["w"].shape
  (3,)

References:
  Welling & Teh 2011 (SGLD, ICML); Li et al. 2016 (pSGLD, arXiv:1512.07666);
  Chen, Fox & Guestrin 2014 (SGHMC, arXiv:1402.4102); Roberts & Tweedie 1996 (MALA);
  Lau et al. 2023 (localised SGLD for the LLC, arXiv:2308.12108).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from lljax.train import _check_sign

Params = Any

__all__ = [
    "SGLDState",
    "PSGLDState",
    "SGHMCState",
    "MALAState",
    "MALAInfo",
    "sgld",
    "psgld",
    "sghmc",
    "mala_init",
    "mala_step",
    "from_devinterp",
    "to_devinterp",
    "from_blackjax",
    "to_blackjax",
    "stationary_variance",
]


class SGLDState(NamedTuple):
    """State of :func:`sgld`.

    Attributes:
      key: PRNG key for the next step's noise.
      anchor: the localisation centre ``w₀`` (a params-shaped pytree), or ``None``.
      learning_rate, temperature, nbeta, localization: scalar arrays (per member when
        stacked); ``localization`` is unused when ``anchor`` is ``None``.
    """

    # Fields a resumed run takes from the optimizer it is given (lljax.train.fit).
    hyperparameters = ("learning_rate", "temperature", "nbeta", "localization")

    key: jax.Array
    anchor: Params | None
    learning_rate: jax.Array
    temperature: jax.Array
    nbeta: jax.Array
    localization: jax.Array


class PSGLDState(NamedTuple):
    """State of :func:`psgld`: as :class:`SGLDState` plus ``nu``, the mean squared drift,
    and its ``decay`` (1 holds ν fixed)."""

    hyperparameters = ("learning_rate", "temperature", "nbeta", "localization", "decay")

    key: jax.Array
    anchor: Params | None
    nu: Params
    learning_rate: jax.Array
    temperature: jax.Array
    nbeta: jax.Array
    localization: jax.Array
    decay: jax.Array


class SGHMCState(NamedTuple):
    """State of :func:`sghmc`: as :class:`SGLDState` plus ``momentum`` and ``friction``."""

    hyperparameters = ("learning_rate", "temperature", "nbeta", "localization", "friction")

    key: jax.Array
    anchor: Params | None
    momentum: Params
    learning_rate: jax.Array
    temperature: jax.Array
    nbeta: jax.Array
    localization: jax.Array
    friction: jax.Array


def _check_key(key, name: str):
    if key is None:
        raise ValueError(f"{name}: key is required (e.g. key=jax.random.key(0)) for the noise")
    return key


def _leaf_noise(key: jax.Array, tree: Params) -> Params:
    """Standard normal noise shaped and typed like ``tree``, one subkey per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jr.split(key, max(len(leaves), 1))
    noise = [jr.normal(keys[i], jnp.shape(x), jnp.result_type(x)) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, noise)


def _drift(grads, params, anchor, nbeta, localization):
    """``nβ ĝ + γ (w − w₀)`` leaf by leaf (``nβ ĝ`` alone without an anchor)."""
    if anchor is None:
        return jax.tree.map(lambda g: nbeta * g, grads)
    if params is None:
        raise ValueError("update: params are required when the sampler has a localisation anchor")
    return jax.tree.map(lambda g, w, w0: nbeta * g + localization * (w - w0), grads, params, anchor)


def _check_scalar(value, name: str):
    """A ValueError for a schedule (a callable) or an array with axes: the value would be
    held fixed, or broadcast against the params (a different step per coordinate). Traced
    values are checked by shape too: inside ``vmap`` a per-member value is a scalar."""
    if value is None:
        return value
    if callable(value):
        raise ValueError(
            f"{name}: schedules (callables) are not supported; pass a number (to change it "
            f"during a run, replace the state's field: state._replace({name}=...))"
        )
    shape = jnp.shape(value)
    if shape != ():
        raise ValueError(
            f"{name}: expected a scalar, got shape {shape}; build the sampler inside vmap "
            "for per-member values"
        )
    return value


def _check_common(learning_rate, temperature, nbeta, localization, anchor):
    """The samplers' shared arguments, checked where they are concrete."""
    for value, name in (
        (learning_rate, "learning_rate"),
        (temperature, "temperature"),
        (nbeta, "nbeta"),
        (localization, "localization"),
    ):
        _check_scalar(value, name)
    _check_sign(learning_rate, "learning_rate", positive=True)
    _check_sign(temperature, "temperature")
    _check_sign(localization, "localization")
    _check_sign(nbeta, "nbeta")
    if anchor is not None and localization is None:
        raise ValueError("anchor: given without localization, so it would be ignored")


def _anchor(anchor, localization, params):
    if localization is None:
        return None
    return jax.tree.map(jnp.asarray, params if anchor is None else anchor)


def _hyper(value, default=0.0):
    return jnp.asarray(default if value is None else value)


def sgld(
    learning_rate: float | jax.Array,
    temperature: float | jax.Array = 1.0,
    *,
    key: jax.Array,
    nbeta: float | jax.Array = 1.0,
    localization: float | jax.Array | None = None,
    anchor: Params | None = None,
) -> optax.GradientTransformation:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011), optionally localised.

    The update (the module-level rule)::

        Δw = −ε [nβ ĝ + γ (w − w₀)] + √(2 ε T) ξ,    ξ ~ N(0, I)

    targets ``p(w) ∝ exp(−[nβ L(w) + γ/2 ‖w − w₀‖²] / T)`` up to O(ε) discretisation bias
    (on ``L = ½ a w²`` the stationary variance is exactly ``T / (nβ a (1 − ε nβ a / 2))``).
    With ``T = 0``, ``nβ = 1`` and no localisation it is exactly ``optax.sgd(ε)``.

    Args:
      learning_rate: the step size ε, a scalar (for per-member values build the sampler
        inside ``jax.vmap``; arrays with axes and optax schedules are refused).
      temperature: T ≥ 0 (a scalar, as ``learning_rate``).
      key: PRNG key for the noise, stored in the state.
      nbeta: gradient scale nβ (e.g. ``n / log n`` for the tempered posterior of the LLC).
      localization: γ ≥ 0; ``None`` (default) means no anchor is stored and no pull.
      anchor: the centre ``w₀``; by default the params passed to ``init``.

    Returns:
      An ``optax.GradientTransformation``; ``update`` needs ``params`` when localised.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> opt = ll.optim.sgld(1e-3, 0.0, key=jax.random.key(0))   # T = 0: plain SGD
      >>> state = opt.init(jnp.ones(2))
      >>> opt.update(jnp.ones(2), state)[0].tolist()
      [-0.001, -0.001]
    """
    key = _check_key(key, "sgld")
    _check_common(learning_rate, temperature, nbeta, localization, anchor)

    def init_fn(params):
        return SGLDState(
            key=key,
            anchor=_anchor(anchor, localization, params),
            learning_rate=_hyper(learning_rate),
            temperature=_hyper(temperature),
            nbeta=_hyper(nbeta),
            localization=_hyper(localization),
        )

    def update_fn(grads, state, params=None):
        key, sub = jr.split(state.key)
        drift = _drift(grads, params, state.anchor, state.nbeta, state.localization)
        noise = _leaf_noise(sub, grads)
        lr = state.learning_rate
        scale = jnp.sqrt(2.0 * lr * state.temperature)
        updates = jax.tree.map(
            lambda g, d, z: ((-lr) * d + scale * z).astype(jnp.result_type(g)), grads, drift, noise
        )
        return updates, state._replace(key=key)

    return optax.GradientTransformation(init_fn, update_fn)


def psgld(
    learning_rate: float | jax.Array,
    temperature: float | jax.Array = 1.0,
    *,
    key: jax.Array,
    decay: float | jax.Array = 0.99,
    eps: float = 1e-5,
    nbeta: float | jax.Array = 1.0,
    localization: float | jax.Array | None = None,
    anchor: Params | None = None,
) -> optax.GradientTransformation:
    """RMSprop-preconditioned SGLD (Li et al. 2016), *without* the Γ correction term.

    With the drift ``d = nβ ĝ + γ (w − w₀)``, ``ν ← decay·ν + (1 − decay) d²`` and
    ``G = 1 / (eps + √ν)`` (elementwise)::

        Δw = −ε G ⊙ d + √(2 ε T G) ⊙ ξ

    The preconditioner adapts to the whole drift, localisation included, as Li et al.'s
    adapts to the gradient of the whole negative log-posterior (the localisation is a
    Gaussian prior at w₀). Along a direction the loss ignores (a dead unit's weights) the
    pull then keeps ``√ν`` near ``√(γ T)``; from the loss gradient alone ν would stay 0 and
    G at ``1/eps``, so the steps there would be ``ε γ / eps``: unstable for any useful ε.

    The Γ term (the divergence of G) is dropped, as Li et al. recommend. It is small only
    while ν averages over many mixing times of the chain; a ν that follows the chain's
    state weights the law toward where G is small (+30% on λ̂ of a 4-parameter
    regression with the default decay, whose window is ~100 steps). To sample without
    that bias, let ν adapt during burn-in and then hold it with ``state._replace(decay=1.0)``:
    the chain is then exactly SGLD with the diagonal metric G (as
    :func:`lljax.landscape.llc` does). ``T = 0`` is
    ``optax.rmsprop(ε, decay, eps, eps_in_sqrt=False)`` for ``nβ = 1`` and no localisation
    (to float rounding: the same update, computed in another order).

    Args:
      learning_rate, temperature, key, nbeta, localization, anchor: as in :func:`sgld`.
      decay: RMSprop decay of the squared-drift average, in [0, 1) (a scalar). ``decay = 1``
        holds ν at its state value, a fixed metric: a ``1`` given here is refused, since
        ν would stay at its initial 0 (steps ``ε/eps``); hold an adapted ν after burn-in
        with ``state._replace(decay=1.0)`` (a traced 1, inside ``vmap``, is not checked).
      eps: the damping λ added to ``√ν``.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> opt = ll.optim.psgld(1e-3, key=jax.random.key(0))
      >>> state = opt.init(jnp.zeros(4))
      >>> opt.update(jnp.ones(4), state)[0].shape
      (4,)

    References:
      Li, Chen, Carlson & Carin 2016, arXiv:1512.07666.
    """
    key = _check_key(key, "psgld")
    _check_common(learning_rate, temperature, nbeta, localization, anchor)
    _check_scalar(decay, "decay")
    _check_scalar(eps, "eps")
    _check_sign(decay, "decay")
    _check_sign(eps, "eps", positive=True)
    if not isinstance(decay, jax.core.Tracer) and np.any(np.asarray(decay) > 1):
        raise ValueError(f"decay: expected values in [0, 1), got {decay}")
    if not isinstance(decay, jax.core.Tracer) and np.any(np.asarray(decay) == 1):
        raise ValueError(
            "decay: 1 freezes ν at its initial 0, so the preconditioner is 1/eps (steps "
            "ε/eps); it is meant for holding an adapted ν after burn-in: build the sampler "
            "with decay < 1 and set state._replace(decay=1.0) once ν has adapted "
            "(lljax.landscape.llc does this itself for sampler='psgld')"
        )

    def init_fn(params):
        return PSGLDState(
            key=key,
            anchor=_anchor(anchor, localization, params),
            nu=jax.tree.map(jnp.zeros_like, params),
            learning_rate=_hyper(learning_rate),
            temperature=_hyper(temperature),
            nbeta=_hyper(nbeta),
            localization=_hyper(localization),
            decay=_hyper(decay),
        )

    def update_fn(grads, state, params=None):
        key, sub = jr.split(state.key)
        drift = _drift(grads, params, state.anchor, state.nbeta, state.localization)
        decay = state.decay
        nu = jax.tree.map(
            lambda n, d: (decay * n + (1 - decay) * jnp.square(d)).astype(n.dtype),
            state.nu,
            drift,
        )
        precond = jax.tree.map(lambda n: 1 / (jnp.sqrt(n) + eps), nu)
        noise = _leaf_noise(sub, grads)
        lr = state.learning_rate
        two_lr_t = 2.0 * lr * state.temperature
        updates = jax.tree.map(
            lambda g, p, d, z: ((-lr) * (p * d) + jnp.sqrt(two_lr_t * p) * z).astype(
                jnp.result_type(g)
            ),
            grads,
            precond,
            drift,
            noise,
        )
        return updates, state._replace(key=key, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def sghmc(
    learning_rate: float | jax.Array,
    temperature: float | jax.Array = 1.0,
    *,
    key: jax.Array,
    friction: float | jax.Array = 0.1,
    nbeta: float | jax.Array = 1.0,
    localization: float | jax.Array | None = None,
    anchor: Params | None = None,
) -> optax.GradientTransformation:
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15), with friction.

    In Chen et al.'s "SGD with momentum" form, with learning rate η = ε²/m, friction
    α = ε C/m and no gradient-noise estimate (β̂ = 0)::

        v ← (1 − α) v − η [nβ ĝ + γ (w − w₀)] + √(2 α η T) ξ
        Δw = v

    The stationary law of ``w`` tends to the same ``exp(−[nβ L + γ/2 ‖w − w₀‖²]/T)`` as
    :func:`sgld` as η → 0 (the update of ``w`` uses the new momentum, as in the paper).
    ``T = 0`` is heavy-ball momentum: ``optax.sgd(η, momentum=1 − α)``.

    Args:
      learning_rate: η (a scalar, as in :func:`sgld`).
      friction: α in (0, 1] (a scalar); ``α = 1`` keeps no momentum and is exactly
        :func:`sgld` with ε = η.
      temperature, key, nbeta, localization, anchor: as in :func:`sgld`.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> opt = ll.optim.sghmc(1e-2, key=jax.random.key(0), friction=0.1)
      >>> state = opt.init(jnp.zeros(2))
      >>> state.momentum.shape
      (2,)

    References:
      Chen, Fox & Guestrin 2014, arXiv:1402.4102.
    """
    key = _check_key(key, "sghmc")
    _check_common(learning_rate, temperature, nbeta, localization, anchor)
    _check_scalar(friction, "friction")
    if not isinstance(friction, (bool, jax.core.Tracer)) and isinstance(
        friction, (int, float, np.number, np.ndarray, jax.Array)
    ):
        f = np.asarray(friction)
        if not np.all((f > 0) & (f <= 1)):  # NaN fails too
            raise ValueError(f"friction: expected values in (0, 1], got {friction}")

    def init_fn(params):
        return SGHMCState(
            key=key,
            anchor=_anchor(anchor, localization, params),
            momentum=jax.tree.map(jnp.zeros_like, params),
            learning_rate=_hyper(learning_rate),
            temperature=_hyper(temperature),
            nbeta=_hyper(nbeta),
            localization=_hyper(localization),
            friction=_hyper(friction),
        )

    def update_fn(grads, state, params=None):
        key, sub = jr.split(state.key)
        drift = _drift(grads, params, state.anchor, state.nbeta, state.localization)
        noise = _leaf_noise(sub, grads)
        lr, alpha = state.learning_rate, state.friction
        scale = jnp.sqrt(2.0 * alpha * lr * state.temperature)
        momentum = jax.tree.map(
            lambda v, d, z: ((1 - alpha) * v - lr * d + scale * z).astype(v.dtype),
            state.momentum,
            drift,
            noise,
        )
        updates = jax.tree.map(lambda g, v: v.astype(jnp.result_type(g)), grads, momentum)
        return updates, state._replace(key=key, momentum=momentum)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------
# Metropolis-adjusted Langevin (MALA): exact reference runs.


class MALAState(NamedTuple):
    """The current potential and its gradient, cached so each step costs one evaluation.

    Attributes:
      potential: ``U(w)`` at the current params (scalar).
      grad: ``∇U(w)`` (params-shaped).
    """

    potential: jax.Array
    grad: Params


class MALAInfo(NamedTuple):
    """What one :func:`mala_step` did: ``acceptance_prob`` = min(1, α) and ``accepted``."""

    acceptance_prob: jax.Array
    accepted: jax.Array


def mala_init(potential_fn: Callable[[Params], jax.Array], params: Params) -> MALAState:
    """Evaluates ``U`` and ``∇U`` at ``params`` to start a MALA chain.

    Args:
      potential_fn: ``U(params) -> scalar``; the target is ``exp(−U/T)``. For the sampler
        rule of this module use ``U = nβ L(w) + γ/2 ‖w − w₀‖²`` on the full data.
      params: the starting point.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> u = lambda w: 0.5 * jnp.sum(w**2)
      >>> state = ll.optim.mala_init(u, jnp.ones(3))
      >>> float(state.potential), state.grad.tolist()
      (1.5, [1.0, 1.0, 1.0])
    """
    potential, grad = jax.value_and_grad(potential_fn)(params)
    return MALAState(potential, grad)


def _sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def mala_step(
    potential_fn: Callable[[Params], jax.Array],
    params: Params,
    state: MALAState,
    *,
    key: jax.Array,
    step_size: float | jax.Array,
    temperature: float | jax.Array = 1.0,
) -> tuple[Params, MALAState, MALAInfo]:
    """One Metropolis-adjusted Langevin step; usable inside ``lax.scan`` and ``vmap``.

    Proposes the :func:`sgld` move with exact gradients, ``w' = w − ε ∇U(w) + √(2εT) ξ``,
    and accepts it with probability ``min(1, exp(−(U(w') − U(w))/T) q(w|w') / q(w'|w))``,
    so the chain's stationary law is exactly ``∝ exp(−U/T)`` at any step size.

    Args:
      potential_fn: ``U(params) -> scalar`` (see :func:`mala_init`).
      params: current position.
      state: from :func:`mala_init` or the previous step.
      key: PRNG key for this step (proposal noise and the accept draw).
      step_size: ε > 0 (a scalar).
      temperature: T > 0 (a scalar).

    Returns:
      ``(params, state, info)``; average ``info.acceptance_prob`` for the acceptance rate.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> u = lambda w: 0.5 * jnp.sum(w ** 2)
      >>> w = jnp.zeros(2)
      >>> state = ll.optim.mala_init(u, w)
      >>> w, state, info = ll.optim.mala_step(u, w, state, key=jax.random.key(0), step_size=0.1)
      >>> bool(0 <= info.acceptance_prob <= 1)
      True

    References:
      Roberts & Tweedie 1996 (Bernoulli 2(4)); Besag 1994.
    """
    for value, name in ((step_size, "step_size"), (temperature, "temperature")):
        _check_scalar(value, name)
        _check_sign(value, name, positive=True)  # ε or T ≤ 0: the chain never moves
    k_noise, k_accept = jr.split(key)
    eps = jnp.asarray(step_size)
    temp = jnp.asarray(temperature)
    noise = _leaf_noise(k_noise, params)
    scale = jnp.sqrt(2.0 * eps * temp)
    proposal = jax.tree.map(
        lambda w, g, z: (w - eps * g + scale * z).astype(jnp.result_type(w)),
        params,
        state.grad,
        noise,
    )
    prop_u, prop_g = jax.value_and_grad(potential_fn)(proposal)

    # log q(b | a) = −‖b − a + ε ∇U(a)‖² / (4 ε T) + const.
    def log_q(b, a, grad_a):
        diff = jax.tree.map(lambda x, y, g: x - y + eps * g, b, a, grad_a)
        return -_sq_norm(diff) / (4.0 * eps * temp)

    log_alpha = (
        -(prop_u - state.potential) / temp
        + log_q(params, proposal, prop_g)
        - log_q(proposal, params, state.grad)
    )
    # A non-finite proposal (divergence) is always rejected.
    log_alpha = jnp.where(jnp.isfinite(log_alpha), log_alpha, -jnp.inf)
    accept_prob = jnp.minimum(1.0, jnp.exp(log_alpha))
    accepted = jr.uniform(k_accept, (), accept_prob.dtype) < accept_prob
    new_params = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), proposal, params)
    new_state = MALAState(
        jnp.where(accepted, prop_u, state.potential).astype(state.potential.dtype),
        jax.tree.map(lambda a, b: jnp.where(accepted, a, b), prop_g, state.grad),
    )
    return new_params, new_state, MALAInfo(accept_prob, accepted)


# ----------------------------------------------------------------------------------------
# Conventions.


def from_devinterp(epsilon: float, nbeta: float, localization: float | None = 0.0) -> dict:
    """Keyword arguments for :func:`sgld` reproducing devinterp's SGLD step exactly.

    devinterp (``SGLD`` / ``SGMCMC.sgld``, noise level σ = 1) updates
    ``Δw = ε/2 (−nβ ∇L_m(w) − γ (w − w₀)) + N(0, ε)`` with ``L_m`` the minibatch *mean*
    loss. That is this module's rule with step ``ε/2``, the same nβ and γ, and ``T = 1``
    (noise variance ``2 · ε/2 · 1 = ε``). devinterp's γ = 0 (no pull) becomes
    ``localization=None``: no anchor is stored and ``update`` does not need params.

    Examples:
      >>> import lljax as ll
      >>> ll.optim.from_devinterp(1e-4, 100.0, 10.0)
      {'learning_rate': 5e-05, 'temperature': 1.0, 'nbeta': 100.0, 'localization': 10.0}
      >>> ll.optim.from_devinterp(1e-4, 100.0)["localization"] is None
      True
    """
    if _is_zero(localization):
        localization = None
    return {
        "learning_rate": epsilon / 2,
        "temperature": 1.0,
        "nbeta": nbeta,
        "localization": localization,
    }


def _is_zero(value) -> bool:
    """Whether ``value`` is a concrete scalar 0 (``False`` for traced values)."""
    if value is None or isinstance(value, jax.core.Tracer) or np.ndim(value) != 0:
        return False
    return bool(np.asarray(value) == 0)


def to_devinterp(
    learning_rate: float,
    nbeta: float = 1.0,
    localization: float | None = 0.0,
    temperature: float = 1.0,
) -> dict:
    """devinterp's ``(lr, nbeta, localization)`` for this module's rule (inverse of the above).

    devinterp has no separate temperature; ``T ≠ 1`` is folded in by dividing nβ and γ by
    T and multiplying the step by T, which leaves the update unchanged. ``localization=None``
    (no pull) is devinterp's γ = 0, so ``to_devinterp(**from_devinterp(...))`` round-trips.

    Examples:
      >>> import lljax as ll
      >>> ll.optim.to_devinterp(5e-05, 100.0, 10.0)
      {'lr': 0.0001, 'nbeta': 100.0, 'localization': 10.0}
    """
    if temperature <= 0:
        raise ValueError(f"temperature: devinterp needs T > 0, got {temperature}")
    if localization is None:
        localization = 0.0
    return {
        "lr": 2 * learning_rate * temperature,
        "nbeta": nbeta / temperature,
        "localization": localization / temperature,
    }


def from_blackjax(step_size: float, temperature: float = 1.0) -> dict:
    """Keyword arguments for :func:`sgld` matching ``blackjax.sgld``.

    blackjax's overdamped Langevin step is ``w + h ∇log p(w) + √(2 T h) ξ``. With
    ``log p = −nβ L − γ/2 ‖w − w₀‖²`` it is this module's rule with ε = h and the same T,
    nβ and γ (pass those through unchanged).

    Examples:
      >>> import lljax as ll
      >>> ll.optim.from_blackjax(1e-3)
      {'learning_rate': 0.001, 'temperature': 1.0}
    """
    return {"learning_rate": step_size, "temperature": temperature}


def to_blackjax(learning_rate: float, temperature: float = 1.0) -> dict:
    """blackjax's ``step_size`` (and ``temperature``) for this module's step ε.

    Examples:
      >>> import lljax as ll
      >>> ll.optim.to_blackjax(1e-3)
      {'step_size': 0.001, 'temperature': 1.0}
    """
    return {"step_size": learning_rate, "temperature": temperature}


def stationary_variance(learning_rate: float, curvature: float, temperature: float = 1.0) -> float:
    """Exact stationary variance of :func:`sgld` on ``L = ½ a w²`` (with nβ = 1, no pull).

    The chain ``w' = (1 − ε a) w + √(2εT) ξ`` is AR(1), so its variance solves
    ``v = (1 − εa)² v + 2εT``: ``v = T / (a (1 − ε a / 2))``, stable for ``0 < ε a < 2``.

    Examples:
      >>> import lljax as ll
      >>> ll.optim.stationary_variance(0.1, 1.0)  # doctest: +ELLIPSIS
      1.0526...
    """
    ea = learning_rate * curvature
    if not 0 < ea < 2:
        raise ValueError(f"learning_rate * curvature: expected in (0, 2) for stability, got {ea}")
    return temperature / (curvature * (1 - ea / 2))
