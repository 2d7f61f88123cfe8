"""The local learning coefficient (LLC) by localised Langevin sampling, and its closed forms.

Singular learning theory measures the degeneracy of a solution ``w*`` by the learning
coefficient λ: the volume of ``{w near w* : L(w) − L(w*) < δ}`` scales as ``δ^λ``. A regular
model has λ = d/2; degenerate directions lower it. Lau et al. estimate it from the
tempered, localised posterior ``p(w) ∝ exp(−nβ L_n(w) − γ/2 ‖w − w*‖²)``::

    λ̂ = nβ (E_w[L_n(w)] − L_n(w*)),     nβ = n / log n by default (n = dataset size).

(devinterp's default uses the *batch* size in place of n; pass ``nbeta`` to match it.)

:func:`llc` runs every chain in one compiled call (``vmap`` over chains inside a
``lax.scan`` over steps, minibatches drawn on device) and returns the estimate, its
standard error, per-chain estimates, loss traces and diagnostics. Its pure core,
:func:`llc_samples`, returns arrays only and can itself be ``vmap``-ped over a population of
params (seeds × chains in one call) or a stack of training checkpoints (λ̂(t) in one call);
:func:`llc` also works under ``vmap`` (it then skips the host-side warnings).

Reference values: :func:`rrr_learning_coefficient` (Aoyagi & Watanabe 2005) and
:func:`deep_linear_learning_coefficient` (Aoyagi 2024).

Examples:
  >>> import jax, lljax as ll
  >>> ll.landscape.deep_linear_learning_coefficient([3, 2, 3], true_rank=1)
  3.5

References:
  Lau, Furman, Wang, Murfet & Wei 2023, arXiv:2308.12108 (the LLC and its SGLD estimator);
  Watanabe 2009/2013 (WBIC, arXiv:1208.6338); Furman & Lau 2024, arXiv:2402.03698;
  Aoyagi & Watanabe 2005 (Neural Networks 18(7)); Aoyagi 2024 (Neural Networks 178).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lljax import _linalg, _static, optim
from lljax import train as train_lib

Params = Any

__all__ = [
    "LLCState",
    "LLCResult",
    "llc",
    "llc_samples",
    "llc_init",
    "llc_run",
    "llc_summary",
    "effective_sample_size",
    "split_rhat",
    "rrr_learning_coefficient",
    "deep_linear_learning_coefficient",
    "deep_linear_teacher",
]

SAMPLERS = ("sgld", "psgld", "sghmc", "mala")

# ----------------------------------------------------------------------------------------
# Diagnostics on traces of shape (chains, draws). Pure jnp: they run on device and under vmap.


def _split_chains(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([x[..., :half], x[..., x.shape[-1] - half :]], axis=-2)


@jax.jit
def split_rhat(trace: jax.Array) -> jax.Array:
    """Split R-hat (Gelman et al. BDA3 §11.4) of a ``(chains, draws)`` trace.

    Each chain is split in halves; R-hat compares the between-half variance with the
    within-half variance (1 means the chains agree; > 1.01–1.1 means they have not mixed).

    Examples:
      >>> import jax, lljax as ll
      >>> x = jax.random.normal(jax.random.key(0), (4, 1000))
      >>> bool(abs(ll.landscape.split_rhat(x) - 1) < 0.01)
      True
    """
    x = _split_chains(trace)
    n = x.shape[-1]
    means = x.mean(-1)
    w = x.var(-1, ddof=1).mean(-1)
    b = n * means.var(-1, ddof=1)
    var_plus = (n - 1) / n * w + b / n
    return jnp.sqrt(var_plus / w)


@jax.jit
def effective_sample_size(trace: jax.Array) -> jax.Array:
    """Multi-chain effective sample size of the mean of a ``(chains, draws)`` trace.

    The estimator of Vehtari et al. 2021 (arXiv:1903.08008, eq. 10–11, without rank
    normalisation) on split chains: autocorrelations combined across chains through the
    split-R-hat variance, summed with Geyer's initial monotone positive-pair truncation.
    Stan's and ArviZ's code add the next autocorrelation past the truncation and stop four
    lags early; below ~20 effective draws their values differ from this one by up to ~7%.

    Examples:
      >>> import jax, lljax as ll
      >>> x = jax.random.normal(jax.random.key(0), (4, 500))
      >>> bool(1500 < ll.landscape.effective_sample_size(x) < 2600)
      True
    """
    x = _split_chains(trace)
    m, n = x.shape[-2], x.shape[-1]
    centred = x - x.mean(-1, keepdims=True)
    f = jnp.fft.rfft(centred, n=2 * n, axis=-1)
    acov = jnp.fft.irfft(f * jnp.conj(f), n=2 * n, axis=-1)[..., :n] / n  # biased, lag 0..n-1
    w = x.var(-1, ddof=1).mean(-1)
    b = n * x.mean(-1).var(-1, ddof=1)
    var_plus = (n - 1) / n * w + b / n
    rho = 1 - (w[..., None] - acov.mean(-2)) / var_plus[..., None]
    rho = rho.at[..., 0].set(1.0)
    num_pairs = n // 2
    pairs = rho[..., : 2 * num_pairs].reshape(*rho.shape[:-1], num_pairs, 2).sum(-1)
    # Geyer: keep the initial run of positive pair sums, made monotone non-increasing.
    keep = jnp.cumprod(pairs > 0, axis=-1).astype(pairs.dtype)
    pairs = jax.lax.cummin(jnp.where(keep > 0, pairs, jnp.inf), axis=pairs.ndim - 1)
    pairs = jnp.where(keep > 0, pairs, 0.0)
    tau = -1 + 2 * pairs.sum(-1)
    total = m * n
    tau = jnp.maximum(tau, 1.0 / jnp.log10(total))  # Stan's cap for antithetic chains
    finite = jnp.all(jnp.isfinite(trace), axis=(-2, -1))
    return jnp.where(finite, total / tau, jnp.nan)  # no sample size for a broken trace


# ----------------------------------------------------------------------------------------
# The sampler state and its pure pieces.


class LLCState(NamedTuple):
    """Everything a run needs to continue exactly; a pytree (save it to resume).

    Attributes:
      params: chain positions, leading axis ``chains``.
      sampler_state: the samplers' states (``optim.SGLDState`` … or ``optim.MALAState``),
        leading axis ``chains``.
      key: per-chain minibatch keys ``(chains,)``.
      step: steps taken so far, burn-in included (int32 scalar).
      block_loss, block_distance, block_accept: sums over the current record block
        ``(chains,)``.
      loss_trace: block means of the sampled loss ``(chains, num_draws // record_every)``
        (NaN until recorded).
      distance_trace: block means of ``‖w − w*‖²``, same shape.
      accept_trace: block means of the MALA acceptance probability (NaN for other samplers).
      init_loss: ``L_n(w*)`` on the full data (scalar).
      lambda_max: top (largest algebraic) Hessian eigenvalue of ``L_n`` at ``w*`` by power
        iteration (NaN when ``num_power_iterations=0``).
      layout: the run's coordinates, localisation, ``record_every``, ``num_burnin`` and
        ``num_draws`` as int32 codes, checked when the state is resumed.
    """

    params: Params
    sampler_state: Any
    key: jax.Array
    step: jax.Array
    block_loss: jax.Array
    block_distance: jax.Array
    block_accept: jax.Array
    loss_trace: jax.Array
    distance_trace: jax.Array
    accept_trace: jax.Array
    init_loss: jax.Array
    lambda_max: jax.Array
    layout: jax.Array


class LLCResult(NamedTuple):
    """The LLC estimate and what is needed to judge it (arrays; a pytree under ``vmap``).

    Attributes:
      mean: λ̂, the mean of the per-chain estimates.
      stderr: standard error of ``mean`` from the spread across chains, ``std / √chains``
        (NaN with one chain).
      std: standard deviation of the per-chain estimates.
      per_chain: ``(chains,)`` estimates ``nβ/T · (mean sampled loss − L_n(w*))``.
      loss_trace: ``(chains, records)`` block means of the sampled (minibatch) loss.
      distance_trace: ``(chains, records)`` block means of ``‖w − w*‖²``.
      init_loss: ``L_n(w*)`` on the full training data, shared by all chains.
      nbeta: the nβ used (``n / log n`` unless given).
      ess: multi-chain effective sample size of the loss trace (in records).
      rhat: split R-hat of the loss trace across chains.
      acceptance: mean MALA acceptance probability (NaN for the other samplers).
      lambda_max: top (largest algebraic) Hessian eigenvalue of ``L_n`` at ``w*`` (power
        iteration; at a saddle, not the most negative one).
      stability: the step along the sharpest direction, scaled so that the sampler
        diverges above 2: ``s = step_size · (nβ λ_max + γ)`` for SGLD and MALA (whose O(ε)
        bias grows like ``1/(1 − s/2)`` before that); ``s / (2 − α)`` for SGHMC with
        friction α (heavy ball: stable while ``s < 2(2 − α)``); ``s · max G`` for pSGLD,
        with ``G = 1 / (eps + √ν)`` its preconditioner at the end of the run (a bound: the
        largest G and the sharpest direction need not coincide).
      warnings: human-readable problems found on the host (empty under ``jit``/``vmap``).
      state: the final :class:`LLCState`, to resume an interrupted run (same arguments).
    """

    mean: jax.Array
    stderr: jax.Array
    std: jax.Array
    per_chain: jax.Array
    loss_trace: jax.Array
    distance_trace: jax.Array
    init_loss: jax.Array
    nbeta: jax.Array
    ess: jax.Array
    rhat: jax.Array
    acceptance: jax.Array
    lambda_max: jax.Array
    stability: jax.Array
    warnings: tuple = ()
    state: LLCState | None = None


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static settings (hashable: one compiled program per distinct value)."""

    num_chains: int
    num_burnin: int
    num_draws: int
    record_every: int
    batch_size: int | None
    sampler: str
    num_power_iterations: int
    localized: bool
    sampler_options: tuple
    coordinates: str = "raw"


class _Hyper(NamedTuple):
    """Traced hyperparameters: sweeps over them reuse the compiled program."""

    step_size: jax.Array
    nbeta: jax.Array
    localization: jax.Array
    temperature: jax.Array


def _as_xy(data):
    if hasattr(data, "x_train"):
        return data.x_train, data.y_train
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return tuple(data)
    raise ValueError(
        f"data: expected a lljax.data.Dataset or an (x, y) tuple, got {type(data).__name__}"
    )


def _num_examples(data) -> int:
    return int(jax.tree.leaves(_as_xy(data))[0].shape[0])


_SAMPLER_DEFAULT = {
    "friction": inspect.signature(optim.sghmc).parameters["friction"].default,
    "eps": inspect.signature(optim.psgld).parameters["eps"].default,
}


_FACTORIES = {"sgld": optim.sgld, "psgld": optim.psgld, "sghmc": optim.sghmc}
_STATES = {
    "sgld": optim.SGLDState,
    "psgld": optim.PSGLDState,
    "sghmc": optim.SGHMCState,
    "mala": optim.MALAState,
}
_SET_BY_LLC = ("learning_rate", "temperature", "key", "nbeta", "localization", "anchor")


def _check_sampler_options(sampler: str, options) -> None:
    factory = _FACTORIES.get(sampler)
    allowed = (
        []
        if factory is None
        else [p for p in inspect.signature(factory).parameters if p not in _SET_BY_LLC]
    )
    bad = sorted(set(options or {}) - set(allowed))
    if bad:
        raise ValueError(
            f"sampler_options: {bad} are not options of sampler={sampler!r} "
            f"(its options: {allowed})"
        )


def _check_resume(resume, cfg: _Config, name: str = "resume") -> None:
    want = (cfg.num_chains, cfg.num_draws // cfg.record_every)
    got = tuple(np.shape(resume.loss_trace)[-2:])
    if got != want:
        raise ValueError(
            f"{name}: the state holds {got[0]} chains × {got[1]} records, but this call has "
            f"{want[0]} × {want[1]} (num_chains × num_draws / record_every); resume with the "
            "first run's arguments (more draws need a new run)"
        )
    state_type = _STATES[cfg.sampler]
    if not isinstance(resume.sampler_state, state_type):
        raise ValueError(
            f"{name}: the state is from a {type(resume.sampler_state).__name__} run, but "
            f"sampler={cfg.sampler!r}"
        )
    # The same shapes can hide another run: samples in raw coordinates read as leaf-RMS ones
    # are off by the leaves' scales, and another burn-in records other steps.
    if not _is_traced(resume.layout):
        got = np.asarray(resume.layout).reshape(-1, len(_LAYOUT))
        for i, (field, describe) in enumerate(_LAYOUT):
            want = _layout(cfg)[i]
            if np.any(got[:, i] != want):
                raise ValueError(
                    f"{name}: the state was sampled with {field}={describe(got[0, i])}, but "
                    f"this call has {field}={describe(want)}; resume with the first run's "
                    "arguments"
                )


# What a state records of its run (LLCState.layout): name and how to print the code.
_LAYOUT = (
    ("coordinates", lambda c: repr(COORDINATES[int(c)])),
    ("localization", lambda c: "a value" if c else "None"),
    ("record_every", int),
    ("num_burnin", int),
    ("num_draws", int),
)


def _layout(cfg: _Config) -> tuple[int, ...]:
    return (
        COORDINATES.index(cfg.coordinates),
        int(cfg.localized),
        cfg.record_every,
        cfg.num_burnin,
        cfg.num_draws,
    )


def _make_sampler(cfg: _Config, hyper: _Hyper, key, anchor):
    kw = dict(
        key=key,
        nbeta=hyper.nbeta,
        localization=hyper.localization if cfg.localized else None,
        anchor=anchor if cfg.localized else None,
        **dict(cfg.sampler_options),
    )
    factory = _FACTORIES[cfg.sampler]
    return factory(hyper.step_size, hyper.temperature, **kw)


def _sq_dist(a, b) -> jax.Array:
    return sum(
        jnp.sum(jnp.square(x - y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _potential_fn(loss_fn, xy, anchor, cfg: _Config, hyper: _Hyper):
    """MALA's full-data potential ``nβ L_n(w) + γ/2 ‖w − w*‖²``."""

    def potential(p):
        u = hyper.nbeta * loss_fn(p, xy)
        if cfg.localized:
            u = u + 0.5 * hyper.localization * _sq_dist(p, anchor)
        return u

    return potential


COORDINATES = ("raw", "leaf_rms")


def _in_coordinates(loss_fn, anchor, cfg: _Config):
    """``loss_fn`` and the anchor ``w*`` in the sampling coordinates (``cfg.coordinates``).

    ``"leaf_rms"`` samples ``u = w / s`` with ``s`` the root-mean-square of each leaf of the
    anchor ``w*`` (1 for an all-zero leaf). SGLD there is SGLD in ``w`` with per-leaf step
    ``ε s²`` and localisation ``γ/s²``. Rescaling a leaf of ``w*`` by ``c`` rescales its ``s``
    by ``c`` and leaves ``u`` and the loss in ``u`` unchanged, so the chains, and λ̂, are
    invariant to layer-wise rescaling symmetries (e.g. ReLU layers ``(cW₁, cb₁, W₂/c)``).
    An all-zero leaf has no scale of its own: a zero ``b₁`` keeps ``s = 1`` while its layer
    scales by ``c``, so invariance holds only for ``w*`` whose rescaled leaves are non-zero
    (a freshly initialised network with zero biases is not such a point; the output bias,
    which the symmetry leaves alone, may be zero). No pytree-only rule can tell the two
    kinds of zero leaf apart.
    """
    if cfg.coordinates == "raw":
        return loss_fn, anchor

    def scale(w):
        rms = jnp.sqrt(jnp.mean(jnp.square(w)))
        return jnp.where(rms > 0, rms, jnp.ones_like(rms))

    scales = jax.tree.map(scale, anchor)

    def loss_u(u, xy):
        return loss_fn(jax.tree.map(jnp.multiply, u, scales), xy)

    return loss_u, jax.tree.map(jnp.divide, anchor, scales)


def _top_eigenvalue(loss_fn, params, xy, *, key, num_iterations: int) -> jax.Array:
    """Largest (algebraic) Hessian eigenvalue of ``L_n`` by power iteration on HVPs.

    Power iteration finds the largest magnitude; when that eigenvalue is negative (a
    saddle), a second pass on ``H − λ₁ I``, whose spectrum is then ≥ 0, finds the top."""
    flat, unravel = ravel_pytree(params)
    if num_iterations == 0:
        return jnp.full((), jnp.nan, flat.dtype)
    grad_flat = lambda v: ravel_pytree(jax.grad(loss_fn)(unravel(v), xy))[0]
    hvp = lambda v: jax.jvp(grad_flat, (flat,), (v,))[1]
    v0 = jr.normal(key, flat.shape, flat.dtype)

    def power(shift):
        def body(v, _):
            hv = hvp(v) - shift * v
            return hv / (jnp.linalg.norm(hv) + jnp.finfo(flat.dtype).tiny), None

        v, _ = jax.lax.scan(body, v0 / jnp.linalg.norm(v0), None, length=num_iterations)
        return jnp.vdot(v, hvp(v))

    lam1 = power(jnp.zeros((), flat.dtype))
    return jax.lax.cond(lam1 < 0, power, lambda _: lam1, lam1)


def _hessian_diagonal(loss_fn, params, xy, *, key, num_probes: int = 16):
    """Hutchinson estimate ``mean_k z_k ⊙ H z_k`` (Rademacher ``z``) of diag ∇²L_n."""
    flat, unravel = ravel_pytree(params)
    grad_flat = lambda v: ravel_pytree(jax.grad(loss_fn)(unravel(v), xy))[0]
    z = jr.rademacher(key, (num_probes, flat.shape[0]), flat.dtype)
    hz = jax.lax.map(lambda v: jax.jvp(grad_flat, (flat,), (v,))[1], z)
    return unravel(jnp.mean(z * hz, axis=0))


def _init(loss_fn, params, data, key, hyper: _Hyper, cfg: _Config) -> LLCState:
    loss_fn, params = _in_coordinates(loss_fn, params, cfg)
    xy = _as_xy(data)
    init_loss = loss_fn(params, xy)
    k_chains, k_power = jr.split(key)
    chain_keys = jr.split(k_chains, cfg.num_chains)
    sampler_keys = jax.vmap(lambda k: jr.fold_in(k, 0))(chain_keys)
    batch_keys = jax.vmap(lambda k: jr.fold_in(k, 1))(chain_keys)
    dtype = jnp.result_type(init_loss)
    stack = lambda tree: jax.tree.map(
        lambda x: jnp.broadcast_to(x, (cfg.num_chains, *jnp.shape(x))), tree
    )
    if cfg.sampler == "mala":
        sampler_state = stack(
            optim.mala_init(_potential_fn(loss_fn, xy, params, cfg, hyper), params)
        )
    else:
        sampler_state = jax.vmap(lambda k: _make_sampler(cfg, hyper, k, params).init(params))(
            sampler_keys
        )
    if cfg.sampler == "psgld":
        # ν tracks the squared drift. From ν = 0 the first steps at w*, where ĝ ≈ 0, would
        # be scaled by 1/eps (units, not a small step); start it at its value under the
        # local Gaussian instead: the drift is ≈ P (w − w*) with P = nβ H + γ and
        # w − w* ~ N(0, T / P), so ν ≈ T (nβ |diag H| + γ).
        diag = _hessian_diagonal(loss_fn, params, xy, key=jr.fold_in(k_power, 1))
        gamma = hyper.localization if cfg.localized else 0.0
        nu = jax.tree.map(lambda d: hyper.temperature * (hyper.nbeta * jnp.abs(d) + gamma), diag)
        nu = jax.tree.map(lambda n, ref: n.astype(ref.dtype), nu, params)
        sampler_state = sampler_state._replace(nu=stack(nu))
    num_records = cfg.num_draws // cfg.record_every
    nan_trace = jnp.full((cfg.num_chains, num_records), jnp.nan, dtype)
    zeros = jnp.zeros((cfg.num_chains,), dtype)
    return LLCState(
        params=stack(params),
        sampler_state=sampler_state,
        key=batch_keys,
        step=jnp.zeros((), jnp.int32),
        block_loss=zeros,
        block_distance=zeros,
        block_accept=zeros,
        loss_trace=nan_trace,
        distance_trace=nan_trace,
        accept_trace=nan_trace,
        init_loss=init_loss,
        lambda_max=_top_eigenvalue(
            loss_fn, params, xy, key=k_power, num_iterations=cfg.num_power_iterations
        ).astype(dtype),
        layout=jnp.asarray(_layout(cfg), jnp.int32),
    )


def _run(loss_fn, state: LLCState, anchor, data, hyper: _Hyper, cfg: _Config, num_steps: int):
    loss_fn, anchor = _in_coordinates(loss_fn, anchor, cfg)
    xy = _as_xy(data)
    n = _num_examples(data)
    full_batch = cfg.batch_size is None or cfg.batch_size >= n

    if cfg.sampler == "mala":
        potential = _potential_fn(loss_fn, xy, anchor, cfg, hyper)

        def chain_step(p, s, k):
            k, k_step = jr.split(k)
            # The cached potential gives L_n(w) at the current point without another pass.
            loss = s.potential
            if cfg.localized:
                loss = loss - 0.5 * hyper.localization * _sq_dist(p, anchor)
            loss = loss / hyper.nbeta
            p_new, s, info = optim.mala_step(
                potential,
                p,
                s,
                key=k_step,
                step_size=hyper.step_size,
                temperature=hyper.temperature,
            )
            return p_new, s, k, loss, _sq_dist(p, anchor), info.acceptance_prob

    else:
        update = _make_sampler(cfg, hyper, jr.key(0), anchor).update  # key lives in the state

        def chain_step(p, s, k):
            k, k_batch = jr.split(k)
            if full_batch:
                batch = xy
            else:
                idx = jr.randint(k_batch, (cfg.batch_size,), 0, n)
                batch = jax.tree.map(lambda a: a[idx], xy)
            loss, grads = jax.value_and_grad(loss_fn)(p, batch)
            updates, s = update(grads, s, p)
            nan = jnp.full((), jnp.nan, jnp.result_type(loss))
            return optax.apply_updates(p, updates), s, k, loss, _sq_dist(p, anchor), nan

    num_records = cfg.num_draws // cfg.record_every

    def body(st: LLCState, _):
        j = st.step - cfg.num_burnin  # index of this draw (negative during burn-in)
        recording = (j >= 0) & (j < cfg.num_draws)
        sampler_state = st.sampler_state
        if cfg.sampler == "psgld":
            # ν adapts during burn-in only (decay 1 holds it). A preconditioner that keeps
            # tracking the state (RMSprop's window is ~1/(1 − decay) steps, shorter than
            # the chain's mixing time) weights the law without the Γ correction; a held one
            # is exact SGLD with a diagonal metric.
            held = jnp.where(j >= 0, jnp.ones_like(sampler_state.decay), sampler_state.decay)
            sampler_state = sampler_state._replace(decay=held)
        p, s, k, loss, dist, acc = jax.vmap(chain_step)(st.params, sampler_state, st.key)
        dtype = st.block_loss.dtype
        bl = st.block_loss + jnp.where(recording, loss, 0).astype(dtype)
        bd = st.block_distance + jnp.where(recording, dist, 0).astype(dtype)
        ba = st.block_accept + jnp.where(recording, acc, 0).astype(dtype)
        close = recording & ((j + 1) % cfg.record_every == 0)
        col = jnp.clip((j + 1) // cfg.record_every - 1, 0, num_records - 1)

        def write(trace, block):
            old = jax.lax.dynamic_slice_in_dim(trace, col, 1, axis=1)[:, 0]
            new = jnp.where(close, block / cfg.record_every, old)
            return jax.lax.dynamic_update_slice_in_dim(trace, new[:, None], col, axis=1)

        zero = jnp.zeros_like(bl)
        st = st._replace(
            params=p,
            sampler_state=s,
            key=k,
            step=st.step + 1,
            loss_trace=write(st.loss_trace, bl),
            distance_trace=write(st.distance_trace, bd),
            accept_trace=write(st.accept_trace, ba),
            block_loss=jnp.where(close, zero, bl),
            block_distance=jnp.where(close, zero, bd),
            block_accept=jnp.where(close, zero, ba),
        )
        return st, None

    total = cfg.num_burnin + cfg.num_draws

    def guarded(st: LLCState, _):
        # Steps past the end are no-ops, so a resumed run whose step is traced (jit/vmap)
        # can run the full count and still end exactly at ``total``.
        new, _ = body(st, None)
        active = st.step < total
        return jax.tree.map(lambda a, b: jax.lax.select(active, a, b), new, st), None

    state, _ = jax.lax.scan(guarded, state, None, length=num_steps)
    return state


def _summary(state: LLCState, hyper: _Hyper, cfg: _Config) -> LLCResult:
    beta = hyper.nbeta / hyper.temperature
    trace = state.loss_trace
    per_chain = beta * (trace.mean(-1) - state.init_loss)
    c = cfg.num_chains
    std = per_chain.std(ddof=1) if c > 1 else jnp.full((), jnp.nan, per_chain.dtype)
    records = trace.shape[-1]
    if records >= 4:
        ess, rhat = effective_sample_size(trace), split_rhat(trace)
    else:
        ess = rhat = jnp.full((), jnp.nan, trace.dtype)
    gamma = hyper.localization if cfg.localized else 0.0
    stability = hyper.step_size * (hyper.nbeta * state.lambda_max + gamma)
    options = dict(cfg.sampler_options)
    if cfg.sampler == "sghmc":
        stability = stability / (2.0 - options.get("friction", _SAMPLER_DEFAULT["friction"]))
    elif cfg.sampler == "psgld":  # the largest preconditioner entry at the run's end
        eps = options.get("eps", _SAMPLER_DEFAULT["eps"])
        nus = jax.tree.leaves(state.sampler_state.nu)
        nu_min = jnp.min(jnp.stack([jnp.min(n, initial=jnp.inf) for n in nus]))
        stability = stability / (eps + jnp.sqrt(nu_min))
    return LLCResult(
        mean=per_chain.mean(),
        stderr=std / np.sqrt(c),
        std=std,
        per_chain=per_chain,
        loss_trace=trace,
        distance_trace=state.distance_trace,
        init_loss=state.init_loss,
        nbeta=jnp.asarray(hyper.nbeta),
        ess=ess,
        rhat=rhat,
        acceptance=jnp.nanmean(state.accept_trace) if cfg.sampler == "mala" else jnp.nan,
        lambda_max=state.lambda_max,
        stability=jnp.asarray(stability),
        warnings=(),
        state=state,
    )


_init_jit = _static.jit(_init, static_argnames=("loss_fn", "cfg"))
_run_jit = _static.jit(_run, static_argnames=("loss_fn", "cfg", "num_steps"))
_summary_jit = jax.jit(_summary, static_argnames=("cfg",))


def _configure(
    data,
    *,
    num_chains,
    num_draws,
    num_burnin,
    step_size,
    nbeta,
    localization,
    batch_size,
    sampler,
    temperature,
    record_every,
    num_power_iterations,
    sampler_options,
    coordinates="raw",
):
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates: expected one of {COORDINATES}, got {coordinates!r}")
    for name, value, low in (
        ("num_chains", num_chains, 1),
        ("num_draws", num_draws, 1),
        ("num_burnin", num_burnin, 0),
        ("record_every", record_every, 1),
        ("num_power_iterations", num_power_iterations, 0),
    ):
        train_lib._check_int(value, name, low=low)  # bools refused: True is not 1
    if num_draws % record_every:
        raise ValueError(f"record_every: must divide num_draws ({num_draws}), got {record_every}")
    n = _num_examples(data)
    train_lib._check_int(batch_size, "batch_size", optional=True)
    if nbeta is None:
        if n < 2:
            raise ValueError("nbeta: the default n / log n needs at least 2 examples")
        nbeta = n / math.log(n)
    cfg = _Config(
        num_chains=int(num_chains),
        num_burnin=int(num_burnin),
        num_draws=int(num_draws),
        record_every=int(record_every),
        batch_size=None if batch_size is None or batch_size >= n else int(batch_size),
        sampler=sampler,
        num_power_iterations=int(num_power_iterations),
        localized=localization is not None,
        sampler_options=tuple(sorted((sampler_options or {}).items())),
        coordinates=coordinates,
    )
    for name, value in (
        ("step_size", step_size),
        ("nbeta", nbeta),
        ("temperature", temperature),
        ("localization", localization),
    ):
        if value is not None and np.ndim(value) != 0:
            raise ValueError(
                f"{name}: expected a scalar, got shape {np.shape(value)}; to sweep values, "
                "jax.vmap llc over them (one compiled call)"
            )
    _check_sampler_options(sampler, sampler_options)
    train_lib._check_sign(step_size, "step_size", positive=True)
    train_lib._check_sign(nbeta, "nbeta", positive=True)
    train_lib._check_sign(temperature, "temperature", positive=True)  # β = nβ / T
    train_lib._check_sign(localization, "localization")
    dtype = jnp.result_type(float)
    hyper = _Hyper(
        step_size=jnp.asarray(step_size, dtype),
        nbeta=jnp.asarray(nbeta, dtype),
        localization=jnp.asarray(0.0 if localization is None else localization, dtype),
        temperature=jnp.asarray(temperature, dtype),
    )
    return cfg, hyper


_DEFAULTS = dict(
    num_chains=8,
    num_draws=2000,
    num_burnin=500,
    step_size=1e-5,
    nbeta=None,
    localization=1.0,
    batch_size=500,
    sampler="sgld",
    temperature=1.0,
    record_every=1,
    num_power_iterations=20,
    sampler_options=None,
    coordinates="raw",
)


def llc_init(loss_fn, params, data, *, key, **kwargs) -> LLCState:
    """The starting :class:`LLCState` of :func:`llc` (chains at ``params``); pure.

    Takes the keyword arguments of :func:`llc_samples`; :func:`llc_run` has an example.
    """
    cfg, hyper = _configure(data, **{**_DEFAULTS, **kwargs})
    return _init(loss_fn, params, data, train_lib.as_key(key), hyper, cfg)


def llc_run(loss_fn, state: LLCState, params, data, *, num_steps: int, **kwargs) -> LLCState:
    """Advances ``state`` by ``num_steps`` steps (burn-in first, then draws); pure.

    Chunks of any size compose exactly: ``llc_run(n1)`` then ``llc_run(n2)`` equals
    ``llc_run(n1 + n2)``. ``params`` is ``w*`` (the anchor); keyword arguments as in
    :func:`llc_samples` and identical to those given to :func:`llc_init`.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.linear_regression(key=jax.random.key(0), num_train=256, dim=3)
      >>> model = ll.models.mlp([3, 1], activation="identity", bias=False)
      >>> loss_fn, w = ll.losses.mse(model), model.init(jax.random.key(1))
      >>> kw = dict(num_chains=2, num_draws=20, num_burnin=10, step_size=1e-4, batch_size=64,
      ...           num_power_iterations=0)
      >>> s = ll.landscape.llc_init(loss_fn, w, data, key=jax.random.key(2), **kw)
      >>> s = ll.landscape.llc_run(loss_fn, s, w, data, num_steps=30, **kw)  # in any chunks
      >>> r = ll.landscape.llc_summary(s, data, **kw)
      >>> int(s.step), r.per_chain.shape
      (30, (2,))
    """
    cfg, hyper = _configure(data, **{**_DEFAULTS, **kwargs})
    _check_resume(state, cfg, "state")
    num_steps = train_lib._check_int(num_steps, "num_steps", low=0)  # 2.7 ran 2 steps
    return _run(loss_fn, state, params, data, hyper, cfg, num_steps)


def llc_summary(state: LLCState, data, **kwargs) -> LLCResult:
    """Turns a (finished) :class:`LLCState` into an :class:`LLCResult`; pure (example in
    :func:`llc_run`)."""
    cfg, hyper = _configure(data, **{**_DEFAULTS, **kwargs})
    _check_resume(state, cfg, "state")
    return _summary(state, hyper, cfg)


def llc_samples(
    loss_fn: Callable,
    params: Params,
    data,
    *,
    key: jax.Array,
    num_chains: int = 8,
    num_draws: int = 2000,
    num_burnin: int = 500,
    step_size: float | jax.Array = 1e-5,
    nbeta: float | jax.Array | None = None,
    localization: float | jax.Array | None = 1.0,
    batch_size: int | None = 500,
    sampler: str = "sgld",
    temperature: float | jax.Array = 1.0,
    record_every: int = 1,
    num_power_iterations: int = 20,
    sampler_options: dict | None = None,
    coordinates: str = "raw",
) -> LLCResult:
    """The pure core of :func:`llc`: arrays only, no host work; ``jit``/``vmap`` it freely.

    Same arguments and result as :func:`llc` (``warnings`` is always empty). ``step_size``,
    ``nbeta``, ``localization`` and ``temperature`` may be traced (per-member sweeps).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> data = ll.data.linear_regression(key=jax.random.key(0), num_train=256, dim=3)
      >>> model = ll.models.mlp([3, 1], activation="identity", bias=False)
      >>> loss_fn = ll.losses.mse(model)
      >>> w = model.init(jax.random.key(1))
      >>> pop = jax.tree.map(lambda p: jnp.stack([p, p]), w)   # two "seeds"
      >>> keys = jax.random.split(jax.random.key(2), 2)
      >>> f = lambda p, k: ll.landscape.llc_samples(loss_fn, p, data, key=k, num_chains=2,
      ...                                           num_draws=8, num_burnin=0, batch_size=64,
      ...                                           num_power_iterations=0)
      >>> jax.vmap(f)(pop, keys).per_chain.shape
      (2, 2)
    """
    cfg, hyper = _configure(
        data,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        step_size=step_size,
        nbeta=nbeta,
        localization=localization,
        batch_size=batch_size,
        sampler=sampler,
        temperature=temperature,
        record_every=record_every,
        num_power_iterations=num_power_iterations,
        sampler_options=sampler_options,
        coordinates=coordinates,
    )
    state = _init(loss_fn, params, data, train_lib.as_key(key), hyper, cfg)
    state = _run(loss_fn, state, params, data, hyper, cfg, cfg.num_burnin + cfg.num_draws)
    return _summary(state, hyper, cfg)


def _is_traced(*trees) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def _host_warnings(r: LLCResult, cfg: _Config) -> tuple[str, ...]:
    out = []
    trace = np.asarray(r.loss_trace)
    if not np.all(np.isfinite(trace)):
        bad = int(np.sum(~np.all(np.isfinite(trace), axis=-1)))
        out.append(
            f"{bad} of {cfg.num_chains} chains produced non-finite losses (diverged): "
            "lower step_size or raise localization"
        )
    stab = float(r.stability)
    if np.isfinite(stab):
        if stab >= 2:
            out.append(
                f"step_size is unstable for the local curvature: stability = {stab:.3g} ≥ 2 "
                f"(λ_max = {float(r.lambda_max):.3g}; see LLCResult.stability); lower step_size"
                + (" or raise sampler_options['eps']" if cfg.sampler == "psgld" else "")
            )
        elif stab >= 0.5:
            bias = f"≈ {100 * (1 / (1 - stab / 2) - 1):.0f}%"
            out.append(
                f"step_size is large for the local curvature: stability = {stab:.3g} (see "
                "LLCResult.stability); the discretisation bias along the sharpest direction is "
                + (
                    bias
                    if cfg.sampler in ("sgld", "mala")
                    else f"of the order of SGLD's at this stability, {bias}"
                )
            )
    rhat = float(r.rhat)
    if np.isfinite(rhat) and rhat > 1.1:
        out.append(f"chains disagree: split R-hat of the loss = {rhat:.3f} > 1.1; run longer")
    if np.isfinite(float(r.mean)) and float(r.mean) < 0:
        out.append(
            "negative estimate: the chains found lower loss than w*, which is then not a local "
            "minimum; train longer or raise localization"
        )
    ess = float(r.ess)
    if np.isfinite(ess) and ess < 100:
        out.append(f"low effective sample size ({ess:.0f}); run longer chains")
    if cfg.sampler == "mala" and np.isfinite(float(r.acceptance)) and float(r.acceptance) < 0.3:
        out.append(f"low MALA acceptance rate ({float(r.acceptance):.2f}); lower step_size")
    return tuple(out)


def llc(
    loss_fn: Callable,
    params: Params,
    data,
    *,
    key: jax.Array,
    num_chains: int = 8,
    num_draws: int = 2000,
    num_burnin: int = 500,
    step_size: float | jax.Array = 1e-5,
    nbeta: float | jax.Array | None = None,
    localization: float | jax.Array | None = 1.0,
    batch_size: int | None = 500,
    sampler: str = "sgld",
    temperature: float | jax.Array = 1.0,
    record_every: int = 1,
    num_power_iterations: int = 20,
    sampler_options: dict | None = None,
    coordinates: str = "raw",
    chunk_size: int | None = None,
    progress: bool = False,
    callback: Callable[[LLCState], None] | None = None,
    resume: LLCState | None = None,
) -> LLCResult:
    """Estimates the local learning coefficient λ̂ at ``params`` by localised Langevin chains.

    Every chain starts at ``w* = params`` and follows the :mod:`lljax.optim` rule::

        Δw = −ε [nβ ∇L_B(w) + γ (w − w*)] + √(2 ε T) ξ

    on minibatches ``B`` of ``batch_size`` examples drawn uniformly with replacement on
    device (``sampler="sgld"``; ``"psgld"``, ``"sghmc"`` use the same targets, ``"mala"``
    takes full-batch Metropolis-adjusted steps and reports its acceptance rate). pSGLD's
    running mean ν of the squared drift starts at ``T (nβ |diag H| + γ)``, its value under
    the local Gaussian (diag H from 16 Hutchinson probes; from ν = 0 its first steps at
    ``w*`` would be scaled by ``1/eps``), adapts during burn-in and is frozen for the draws:
    each chain then samples exactly as SGLD with a fixed diagonal metric, where a ν that
    kept tracking the chain would bias λ̂ (by 30% on a 4-parameter regression). After
    ``num_burnin`` steps, the minibatch loss at each of ``num_draws`` steps is recorded
    (averaged in blocks of ``record_every`` on device), and::

        λ̂ = (nβ / T) (mean recorded loss − L_n(w*))

    with ``L_n(w*)`` evaluated once on the full training data, shared by every chain.

    Args:
      loss_fn: ``loss_fn(params, (x, y)) -> scalar``, a *mean* over the batch.
      params: ``w*``, typically a trained minimum.
      data: a :class:`lljax.data.Dataset` (its training split) or an ``(x, y)`` tuple.
      key: PRNG key for the chains (noise and minibatches) and the power iteration.
      num_chains, num_draws, num_burnin: chain layout; all chains run in one program.
      step_size: ε of the rule above. devinterp's ``lr`` is ``2 ε``
        (:func:`lljax.optim.to_devinterp`).
      nbeta: nβ; default ``n / log n`` with ``n`` the dataset size (devinterp's default
        uses the batch size instead).
      localization: γ; ``None`` disables the pull toward ``w*``.
      batch_size: minibatch size; ``None`` or ``≥ n`` uses the full data every step.
      sampler: ``"sgld"``, ``"psgld"``, ``"sghmc"`` or ``"mala"``.
      temperature: T; the estimate uses the effective inverse temperature nβ/T.
      record_every: record block means every k steps (must divide ``num_draws``).
      num_power_iterations: HVP power iterations for λ_max at ``w*`` (0 disables the
        stability check).
      sampler_options: extra keyword arguments of the sampler (``decay``, ``eps`` for
        pSGLD; ``friction`` for SGHMC).
      coordinates: ``"raw"`` samples ``w`` itself; ``"leaf_rms"`` samples ``w / s`` with
        ``s`` the RMS of each leaf of ``w*`` (per-leaf step ``ε s²``, localisation ``γ/s²``;
        1 for an all-zero leaf, which then does not rescale: see the README),
        which makes λ̂ invariant to rescaling symmetries such as ReLU ``(cW₁, cb₁, W₂/c)``;
        a fixed step in raw coordinates sees curvatures scaled by ``c^±2`` and is not.
        ``distance_trace``, ``lambda_max`` and the chains' params are then in the sampling
        coordinates.
      chunk_size: run at most this many steps per compiled call, with ``progress`` and
        ``callback`` between chunks; results are identical to one call.
      progress: print progress to stderr between chunks.
      callback: ``callback(state)`` after each chunk (e.g. to checkpoint the state).
      resume: continue from a saved :class:`LLCState` (same arguments as the first run).

    Returns:
      An :class:`LLCResult`. Under ``jax.vmap`` (e.g. over a stack of checkpoints) it
      returns the same arrays batched and no host-side warnings.

    Raises:
      ValueError: for an unknown sampler, non-positive counts, ``record_every`` not
        dividing ``num_draws``, bad ``data``, or a non-finite loss at ``params``.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.linear_regression(key=jax.random.key(0), num_train=512, dim=4)
      >>> model = ll.models.mlp([4, 1], activation="identity", bias=False)
      >>> loss_fn = ll.losses.mse(model)
      >>> w = model.init(jax.random.key(1))
      >>> r = ll.landscape.llc(loss_fn, w, data, key=jax.random.key(2), num_chains=2,
      ...                      num_draws=20, num_burnin=10, step_size=1e-4, batch_size=64,
      ...                      num_power_iterations=0)
      >>> r.per_chain.shape, r.loss_trace.shape
      ((2,), (2, 20))
    """
    cfg, hyper = _configure(
        data,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        step_size=step_size,
        nbeta=nbeta,
        localization=localization,
        batch_size=batch_size,
        sampler=sampler,
        temperature=temperature,
        record_every=record_every,
        num_power_iterations=num_power_iterations,
        sampler_options=sampler_options,
        coordinates=coordinates,
    )
    total = cfg.num_burnin + cfg.num_draws
    chunk = total if chunk_size is None else train_lib._check_int(chunk_size, "chunk_size")
    traced = _is_traced(params, data, hyper, key, resume)
    if resume is not None:
        _check_resume(resume, cfg)
        state = resume
    else:
        state = _init_jit(loss_fn, params, data, train_lib.as_key(key), hyper, cfg)
    if not traced and resume is None and not np.isfinite(float(state.init_loss)):
        # Every chain would be NaN from its first step, and read as divergence.
        raise ValueError(
            f"params: the full-data loss at params (w*) is {float(state.init_loss)}; λ̂ needs "
            "a finite loss there (check params and data for NaN or inf)"
        )
    # A traced step (resuming under jit/vmap) is unknown here: run the whole count, and the
    # steps past the end leave the state unchanged (see _run).
    done = int(state.step) if not _is_traced(state.step) else 0
    start = time.perf_counter()
    while done < total:
        steps = min(chunk, total - done)
        state = _run_jit(loss_fn, state, params, data, hyper, cfg, steps)
        done += steps
        if callback is not None:
            callback(state)
        if progress and not traced:
            jax.block_until_ready(state.step)
            phase = "burn-in" if done <= cfg.num_burnin else "draws"
            print(
                f"llc: {done}/{total} steps ({phase}), {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
    result = _summary_jit(state, hyper, cfg)
    if traced:
        return result
    return result._replace(warnings=_host_warnings(result, cfg))


# ----------------------------------------------------------------------------------------
# Closed-form learning coefficients.


def _exact_int(value, name: str) -> int:
    """An integer (also integral NumPy values); 5.7 is refused rather than truncated."""
    try:
        return operator.index(value)
    except TypeError:
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        raise ValueError(f"{name}: expected integers, got {value!r}") from None


def rrr_learning_coefficient(input_dim: int, hidden: int, output_dim: int, rank: int) -> float:
    """Learning coefficient of reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005).

    ``A`` is ``hidden × input_dim`` (M), ``B`` is ``output_dim × hidden`` (N × H), and the
    true matrix has rank ``r ≤ min(M, H, N)``. With M, H, N, r as in the paper:

    - ``N + r ≤ M + H``, ``M + r ≤ N + H``, ``H + r ≤ M + N``:
      ``λ = [2(H + r)(M + N) − (M − N)² − (H + r)² + s] / 8`` with ``s = 0`` if
      ``M + H + N + r`` is even and ``s = 1`` if odd;
    - ``M + H < N + r``: ``λ = (HM − Hr + Nr) / 2``;
    - ``N + H < M + r``: ``λ = (HN − Hr + Mr) / 2``;
    - ``M + N < H + r``: ``λ = MN / 2``.

    Examples:
      >>> import lljax as ll
      >>> ll.landscape.rrr_learning_coefficient(5, 3, 5, 1)
      8.0
    """
    m, h, n, r = (
        _exact_int(v, name)
        for v, name in zip(
            (input_dim, hidden, output_dim, rank),
            ("input_dim", "hidden", "output_dim", "rank"),
            strict=True,
        )
    )
    if min(m, h, n) < 1:
        raise ValueError(f"dimensions: expected positive M, H, N, got {(m, h, n)}")
    if not 0 <= r <= min(m, h, n):
        raise ValueError(f"rank: expected 0 ≤ r ≤ min(M, H, N) = {min(m, h, n)}, got {r}")
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        odd = (m + h + n + r) % 2
        return (2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2 + odd) / 8
    if m + h < n + r:
        return (h * m - h * r + n * r) / 2
    if n + h < m + r:
        return (h * n - h * r + m * r) / 2
    return m * n / 2


def deep_linear_learning_coefficient(widths: Sequence[int], true_rank: int) -> float:
    """Learning coefficient of a deep linear network (Aoyagi 2024, Theorem 1).

    For ``f(x) = W_L ⋯ W_1 x`` with widths ``H_1 (input), …, H_{L+1} (output)`` and a true
    product of rank r, let ``M_j = H_j − r``. Take the ``ℓ + 1`` smallest ``M_j`` (a set S,
    ℓ ≥ 1) such that ``max S < min(rest)``, ``ΣS ≥ ℓ·max S`` and ``ΣS < ℓ·min(rest)``
    (conditions on an empty rest hold). With ``M = ⌈ΣS/ℓ⌉`` and ``a = ΣS − (M − 1)ℓ``::

        λ = (−r² + r(H_1 + H_{L+1}))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4 · (ΣS/ℓ)²
            + ½ Σ_{i<j ∈ S} M_i M_j

    With one hidden layer this reduces to :func:`rrr_learning_coefficient`.

    Args:
      widths: ``[input, hidden..., output]`` (at least one hidden layer).
      true_rank: rank r of the true end-to-end matrix (``≤ min(widths)``).

    Examples:
      >>> import lljax as ll
      >>> ll.landscape.deep_linear_learning_coefficient([2, 4, 4, 2], true_rank=2)  # = 2·2/2
      2.0
    """
    widths = [_exact_int(w, "widths") for w in widths]
    r = _exact_int(true_rank, "true_rank")
    if len(widths) < 3 or min(widths) < 1:
        raise ValueError(
            f"widths: expected [input, hidden..., output] of positive ints, got {widths}"
        )
    if not 0 <= r <= min(widths):
        raise ValueError(f"true_rank: expected 0 ≤ r ≤ min(widths) = {min(widths)}, got {r}")
    ms = sorted(w - r for w in widths)
    for size in range(2, len(ms) + 1):
        subset, rest = ms[:size], ms[size:]
        ell, total = size - 1, sum(subset)
        if rest and not max(subset) < min(rest):
            continue
        if not total >= ell * max(subset):
            continue
        if rest and not total < ell * min(rest):
            continue
        big_m = -(-total // ell)  # ceil
        a = total - (big_m - 1) * ell
        pairs = sum(subset[i] * subset[j] for i in range(size) for j in range(i + 1, size))
        return (
            (-(r**2) + r * (widths[0] + widths[-1])) / 2
            + a * (ell - a) / (4 * ell)
            - ell * (ell - 1) / 4 * (total / ell) ** 2
            + pairs / 2
        )
    raise AssertionError(f"no admissible subset for M = {ms}")  # Aoyagi's theorem excludes this


def deep_linear_teacher(
    widths: Sequence[int], rank: int, *, key: jax.Array, num_examples: int = 200
):
    """A realisable deep linear problem at a generic true parameter of a given rank.

    The student is ``lljax.models.mlp(widths, activation="identity", bias=False)``; the true
    parameter ``w*`` has random layers (``N(0, 1/fan_in)``) with the first projected onto a
    random rank-``rank`` subspace, so the end-to-end map has rank ``rank``; targets are
    ``f(x; w*)`` without noise on ``x ~ N(0, I)``. Then ``L_n(w*) = 0`` and ``w*`` is a point
    where :func:`deep_linear_learning_coefficient` gives the exact λ (the reference used by
    the tests and the README table).

    Args:
      widths: layer widths including input and output.
      rank: rank of the true map, ``1 <= rank <= min(widths)``.
      key: PRNG key.
      num_examples: number of inputs.

    Returns:
      ``(loss_fn, params, (x, y))``: the MSE loss of the student, ``w*`` and the data.

    Examples:
      >>> import jax, lljax as ll
      >>> loss_fn, w, xy = ll.landscape.deep_linear_teacher([3, 4, 2], 1, key=jax.random.key(0))
      >>> float(loss_fn(w, xy)), ll.landscape.deep_linear_learning_coefficient([3, 4, 2], 1)
      (0.0, 3.0)
    """
    from lljax import losses, models  # models imports optax users; keep this module light

    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths: expected at least two positive widths, got {widths}")
    if not 1 <= int(rank) <= min(widths):
        raise ValueError(f"rank: expected 1 <= rank <= min(widths) = {min(widths)}, got {rank}")
    k = jr.split(key, len(widths) + 2)
    params = {}
    for i in range(len(widths) - 1):
        kern = jr.normal(k[i], (widths[i], widths[i + 1])) / math.sqrt(widths[i])
        if i == 0:
            u = jr.normal(k[-1], (widths[1], rank))
            kern = kern @ (u @ _linalg.pinv(u))
        params[f"Dense_{i}"] = {"kernel": kern}
    model = models.mlp(widths, activation="identity", bias=False)
    x = jr.normal(k[-2], (num_examples, widths[0]))
    return losses.mse(model), params, (x, model.apply(params, x))
