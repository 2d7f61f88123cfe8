"""Training: one compiled ``lax.scan`` over steps, driven from the host in chunks.

The core is pure. :func:`init_state` builds a :class:`TrainState` and :func:`run` advances
it by ``num_steps`` optimizer steps inside one ``lax.scan``, drawing every minibatch inside
compiled code from the state's key (index gathering, no host round-trips), and recording
the minibatch loss on device. :func:`run` is what :mod:`lljax.ensemble` vmaps over members,
so a single run and a population run are the same program.

:func:`fit` is the host driver around it: it compiles a chunk of steps once (params, state
and data are arguments, never closed-over constants), calls it repeatedly, evaluates
between chunks, prints a progress line, stops with :class:`NonFiniteLossError` on the first
non-finite loss, and checkpoints to a folder (``.npz`` + JSON manifest, written atomically)
from which it resumes automatically; a run interrupted and resumed with the same settings
ends bit-identical to an uninterrupted one (params, optimizer state and history). Resuming a
finished run with a larger ``steps`` continues it with the same params as a longer run from
scratch, but its history keeps what the shorter run recorded: a loss window of ``log_every`` steps
cut short at the old end, and the evaluation at the old final step.

Minibatches (``sampling``):
  ``"epoch"`` (default) shuffled epochs without replacement, the last incomplete batch of
  each epoch dropped; ``"uniform"`` an independent uniformly drawn batch each step (without
  replacement within the batch, :func:`lljax.data.sample_batch`); ``"replacement"`` i.i.d.
  indices with replacement (cheapest). The batch at step ``t`` depends only on
  ``(key, t)``, so chunking and resuming never change the data order.

Examples:
  >>> import jax, optax, lljax as ll
  >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
  >>> model = ll.models.mlp([2, 8, 2])
  >>> loss_fn = ll.losses.cross_entropy(model)
  >>> params = model.init(jax.random.key(1))
  >>> r = ll.train.fit(loss_fn, params, optax.sgd(0.1), data, steps=20, batch_size=16,
  ...                  key=jax.random.key(2), progress=False)
  >>> r.history["loss"].shape, int(r.state.step)
  ((20,), 20)
  >>> bool(r.history["test_loss"][-1] < r.history["loss"][0])
  True
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from lljax import _static
from lljax import data as data_lib
from lljax import losses as losses_lib

Params = Any
SAMPLINGS = ("epoch", "uniform", "replacement")
DEFAULT_CHUNK_SIZE = 1000
_CHECKPOINT_FORMAT = 1


class TrainState(NamedTuple):
    """Everything a training run carries from step to step.

    Attributes:
      params: the parameters (a pytree).
      opt_state: the optimizer state.
      step: number of optimizer steps taken, an int32 scalar.
      key: the data-order key (a typed PRNG key); the batch at step ``t`` is drawn from
        ``(key, t)`` alone.
      hyperparams: a dict of scalars passed to an optimizer factory (see :func:`run`);
        empty for a plain optax optimizer.
    """

    params: Params
    opt_state: Any
    step: jax.Array
    key: jax.Array
    hyperparams: dict = {}


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: final params.
      opt_state: final optimizer state.
      history: dict of numpy arrays. ``step``/``loss``: minibatch training loss averaged
        over windows of ``log_every`` steps (``step`` is the first step of each window;
        the loss at step ``t`` is that of the params before update ``t``);
        ``eval_step`` and ``train_loss``, ``test_loss``, ``train_accuracy``,
        ``test_accuracy`` (accuracy only for data with classes; keys of a custom
        ``eval_fn`` otherwise) at evaluation points, computed on whole splits;
        ``wall_time``: seconds spent in this call.
      state: the final :class:`TrainState` (params, opt_state, step, key).
    """

    params: Params
    opt_state: Any
    history: dict
    state: TrainState


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss (or parameters); ``step`` is the first bad step.

    ``members`` lists the offending population members (``None`` for a single run).
    """

    def __init__(self, message: str, *, step: int, members: list[int] | None = None):
        super().__init__(message)
        self.step = step
        self.members = members


# --------------------------------------------------------------------------------------
# Pure core
# --------------------------------------------------------------------------------------


def make_optimizer(optimizer, hyperparams: Mapping[str, Any] | None = None):
    """The optax transformation for one member: ``optimizer`` itself or ``optimizer(**hp)``.

    ``optimizer`` is either an ``optax.GradientTransformation`` (used as is; per-member
    values then live in an ``optax.inject_hyperparams`` state, see :func:`init_state`) or
    a factory ``hp -> GradientTransformation`` called with the (possibly traced) scalars in
    ``hyperparams``, e.g. ``lambda lr, wd: optax.adamw(lr, weight_decay=wd)``.

    Examples:
      >>> import optax, lljax as ll
      >>> sgd = optax.sgd(0.1)
      >>> ll.train.make_optimizer(sgd) is sgd
      True
      >>> opt = ll.train.make_optimizer(lambda lr, wd: optax.adamw(lr, weight_decay=wd),
      ...                               {"lr": 1e-3, "wd": 0.1})
      >>> isinstance(opt, optax.GradientTransformation)
      True
    """
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if callable(optimizer):
        hp = dict(hyperparams or {})
        try:
            inspect.signature(optimizer).bind(**hp)
        except TypeError as e:
            raise ValueError(
                f"hyperparams: {sorted(hp)} do not fit the optimizer factory's arguments: {e}"
            ) from None
        except ValueError:  # no signature to check (some builtins); let the call decide
            pass
        return optimizer(**hp)
    raise ValueError(
        "optimizer: expected an optax.GradientTransformation or a factory returning one, "
        f"got {type(optimizer).__name__}"
    )


def init_state(
    params: Params, optimizer, *, key: jax.Array, hyperparams: Mapping[str, Any] | None = None
) -> TrainState:
    """A fresh :class:`TrainState` at step 0; pure, jit- and vmap-compatible.

    Args:
      params: initial params.
      optimizer: an optax transformation or a factory (see :func:`make_optimizer`).
      key: data-order key (typed or raw ``uint32[2]``).
      hyperparams: scalars for the factory. With a plain transformation made by
        ``optax.inject_hyperparams``, the values are written into its state instead
        (top-level ``opt_state.hyperparams``), so they can differ between members.

    Raises:
      ValueError: a hyperparameter that is not a number, that the factory does not take,
        that the injected state does not have, or that it recomputes from a schedule every
        step (a value written there would be ignored).

    Examples:
      >>> import jax, optax, lljax as ll
      >>> params = ll.models.mlp([4, 8, 3]).init(jax.random.key(0))
      >>> s = ll.train.init_state(params, optax.adam(1e-3), key=jax.random.key(1))
      >>> int(s.step), s.hyperparams
      (0, {})
      >>> opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
      >>> s = ll.train.init_state(params, opt, key=jax.random.key(1),
      ...                         hyperparams={"learning_rate": 0.5})
      >>> float(s.opt_state.hyperparams["learning_rate"])
      0.5
    """
    hyperparams = {k: _hyperparam(k, v) for k, v in dict(hyperparams or {}).items()}
    opt = make_optimizer(optimizer, hyperparams)
    opt_state = opt.init(params)
    if hyperparams and isinstance(optimizer, optax.GradientTransformation):
        injected = getattr(opt_state, "hyperparams", None)
        missing = [k for k in hyperparams if injected is None or k not in injected]
        if missing:
            raise ValueError(
                f"hyperparams: {missing} are not injected hyperparameters of the optimizer "
                "(lljax sets those of an outermost optax.inject_hyperparams, not of one inside "
                "optax.chain); wrap the whole optimizer or pass a factory "
                "(e.g. lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr)))"
            )
        scheduled = [k for k in hyperparams if k in getattr(opt_state, "hyperparams_states", {})]
        if scheduled:
            raise ValueError(
                f"hyperparams: {scheduled} are schedules of the injected optimizer, which "
                "recomputes them every step, so per-member values would be ignored; pass a "
                "factory instead (e.g. lambda lr: optax.sgd(optax.cosine_decay_schedule(lr, "
                "1000)))"
            )
        new = dict(injected)
        for k, v in hyperparams.items():
            dtype = jnp.asarray(injected[k]).dtype
            if jnp.issubdtype(v.dtype, jnp.inexact) and not jnp.issubdtype(dtype, jnp.inexact):
                # inject_hyperparams(optax.sgd)(learning_rate=1) stores an int; casting 0.05
                # to it would train with a learning rate of 0.
                dtype = jnp.result_type(float)
            new[k] = jnp.asarray(v, dtype)
        opt_state = opt_state._replace(hyperparams=new)
    return TrainState(params, opt_state, jnp.zeros((), jnp.int32), as_key(key), hyperparams)


def _hyperparam(name: str, value) -> jax.Array:
    """``value`` as an array of numbers (or PRNG keys), or a ValueError naming it."""
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return value
    try:
        arr = value if isinstance(value, jax.Array) else np.asarray(value)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype.kind not in "biufc":  # bool, integers, floats, complex
        raise ValueError(f"hyperparams[{name!r}]: expected numbers, got {value!r}")
    return jnp.asarray(arr)


def _mix(x: jax.Array, k: jax.Array) -> jax.Array:
    """A keyed 32-bit mixing function (murmur3's finaliser on ``x ^ k``)."""
    x = (x ^ k) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def permute(key: jax.Array, i: jax.Array, n: int) -> jax.Array:
    """Position ``i`` of a pseudo-random permutation of ``range(n)`` keyed by ``key``.

    A 6-round Feistel network on the smallest even-bit domain ``2^(2h) ≥ n`` is a bijection
    of that domain; applying it again until the value falls below ``n`` (cycle walking) gives
    a bijection of ``range(n)``. The cost is O(len(i)) per call, with no sort of all ``n``
    indices: an epoch's batch at step ``t`` is computed alone, so a compiled training step
    does not pay for a full shuffle (an ``n log n`` sort, slow on CPU) every step.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> p = permute(jax.random.key(0), jnp.arange(10), 10)
      >>> sorted(p.tolist()) == list(range(10))
      True
    """
    half = max(1, (max(int(n) - 1, 1).bit_length() + 1) // 2)
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jr.bits(key, (6,), jnp.uint32)

    def encrypt(x):
        left, right = x >> half, x & mask
        for r in range(6):
            left, right = right, left ^ (_mix(right, round_keys[r]) & mask)
        return (left << half) | right

    def walk(x):
        return jax.lax.while_loop(
            lambda y: jnp.any(y >= n), lambda y: jnp.where(y >= n, encrypt(y), y), x
        )

    return walk(encrypt(jnp.asarray(i).astype(jnp.uint32))).astype(jnp.int32)


def batch_indices(
    key: jax.Array, step: jax.Array, num_examples: int, batch_size: int, sampling: str = "epoch"
) -> jax.Array:
    """Indices ``(batch_size,)`` of the training examples used at ``step``; a pure function.

    See the module docstring for the ``sampling`` modes. A full batch is always
    ``arange(num_examples)`` (plain gradient descent).

    Raises:
      ValueError: if ``batch_size`` is not in ``1..num_examples`` (any size ≥ 1 with
        ``sampling="replacement"``).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> key = jax.random.key(0)
      >>> epoch = [ll.train.batch_indices(key, t, 10, 5) for t in range(2)]  # one epoch
      >>> sorted(jnp.concatenate(epoch).tolist())
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
      >>> ll.train.batch_indices(key, 7, 4, 4).tolist()  # a full batch: gradient descent
      [0, 1, 2, 3]
    """
    _check_int(num_examples, "num_examples")
    _check_int(batch_size, "batch_size")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")
    if batch_size > num_examples and sampling != "replacement":
        raise ValueError(
            f"batch_size: expected at most num_examples={num_examples} for "
            f"sampling={sampling!r} (without replacement), got {batch_size}"
        )
    if batch_size == num_examples:
        return jnp.arange(num_examples)
    if sampling == "epoch":
        per_epoch = num_examples // batch_size
        epoch, pos = step // per_epoch, step % per_epoch
        slots = pos * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
        return permute(jr.fold_in(key, epoch), slots, num_examples)
    k = jr.fold_in(key, step)
    if sampling == "uniform":
        return jr.choice(k, num_examples, (batch_size,), replace=False)
    return jr.randint(k, (batch_size,), 0, num_examples)  # sampling == "replacement"


def _window_mean(x: jax.Array, k: int) -> jax.Array:
    """Means of consecutive windows of ``k`` entries (the last window may be shorter)."""
    n = x.shape[0]
    if k == 1:
        return x
    num = -(-n // k)
    pad = num * k - n
    sums = jnp.concatenate([x, jnp.zeros((pad,), x.dtype)]).reshape(num, k).sum(1)
    counts = np.full((num,), k, np.float32)
    counts[-1] = k - pad
    return sums / jnp.asarray(counts, x.dtype)


def run(
    loss_fn: Callable,
    optimizer,
    data: data_lib.Dataset,
    state: TrainState,
    *,
    num_steps: int,
    batch_size: int,
    log_every: int = 1,
    sampling: str = "epoch",
) -> tuple[TrainState, dict]:
    """Advances ``state`` by ``num_steps`` optimizer steps in one ``lax.scan``; pure.

    Each step gathers a minibatch by index (:func:`batch_indices`) from ``data``'s train
    split, takes ``jax.value_and_grad(loss_fn)`` and applies the optimizer update. Jit it
    with ``loss_fn``, ``optimizer``, ``num_steps``, ``batch_size``, ``log_every`` and
    ``sampling`` static; vmap it over a stacked ``state`` for a population.

    Args:
      loss_fn: ``loss_fn(params, (x, y)) -> scalar``.
      optimizer: an optax transformation, or a factory called with ``state.hyperparams``.
      data: a :class:`~lljax.data.Dataset`.
      state: the :class:`TrainState` to continue from.
      num_steps: number of steps (static).
      batch_size: examples per step (static).
      log_every: the recorded loss is averaged over windows of this many steps.
      sampling: ``"epoch"``, ``"uniform"`` or ``"replacement"``.

    Returns:
      ``(state, out)``: the advanced state and a dict with ``loss``
      (``(ceil(num_steps / log_every),)`` window means), ``nonfinite_step`` (the first
      step whose loss was not finite, or -1) and ``params_finite`` (whether the final
      params are all finite).

    Examples:
      >>> import jax, optax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=32, num_test=8)
      >>> model = ll.models.mlp([2, 4, 2])
      >>> opt = optax.sgd(0.1)
      >>> s = ll.train.init_state(model.init(jax.random.key(1)), opt, key=jax.random.key(2))
      >>> s, out = ll.train.run(ll.losses.cross_entropy(model), opt, data, s,
      ...                       num_steps=10, batch_size=8)
      >>> int(s.step), out["loss"].shape, int(out["nonfinite_step"])
      (10, (10,), -1)
    """
    opt = make_optimizer(optimizer, state.hyperparams)
    x_train, y_train = data.x_train, data.y_train
    n = x_train.shape[0]
    grad_fn = jax.value_and_grad(loss_fn)

    def step_fn(carry, _):
        params, opt_state, step = carry
        idx = batch_indices(state.key, step, n, batch_size, sampling)
        batch = (jnp.take(x_train, idx, axis=0), jnp.take(y_train, idx, axis=0))
        loss, grads = grad_fn(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, step + 1), loss

    carry = (state.params, state.opt_state, state.step)
    (params, opt_state, step), losses = jax.lax.scan(step_fn, carry, None, length=num_steps)
    bad = ~jnp.isfinite(losses)
    nonfinite_step = jnp.where(jnp.any(bad), state.step + jnp.argmax(bad), -1)
    leaves = jax.tree.leaves(params)
    params_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in leaves]))
    out = {
        "loss": _window_mean(losses, log_every),
        "nonfinite_step": nonfinite_step.astype(jnp.int32),
        "params_finite": params_finite,
    }
    return state._replace(params=params, opt_state=opt_state, step=step), out


@dataclasses.dataclass(frozen=True)
class metrics_fn:
    """Default evaluation: ``metrics_fn(loss_fn)(params, (x, y)) -> {"loss", "accuracy"}``.

    One forward pass gives both when ``loss_fn`` comes from :mod:`lljax.losses` (it carries
    ``.model`` and ``.per_example``); otherwise only ``loss`` is reported. A frozen
    dataclass so equal configurations hit the same compiled evaluation.
    """

    loss_fn: Callable
    accuracy: bool = True

    def __call__(self, params, batch):
        x, y = batch
        model = getattr(self.loss_fn, "model", None)
        per_example = getattr(self.loss_fn, "per_example", None)
        if model is None or per_example is None:
            return {"loss": self.loss_fn(params, batch)}
        out = model.apply(params, x)
        metrics = {"loss": jnp.mean(per_example(out, y))}
        if self.accuracy:
            metrics["accuracy"] = losses_lib.accuracy_from_logits(out, y).astype(out.dtype)
        return metrics


def evaluate(
    eval_fn: Callable,
    params: Params,
    data: data_lib.Dataset,
    *,
    split: str = "test",
    batch_size: int | None = None,
) -> dict:
    """Metrics of ``eval_fn`` averaged over a whole split; pure, jit/vmap-compatible.

    Args:
      eval_fn: ``eval_fn(params, (x, y)) -> dict`` of batch means (e.g. :class:`metrics_fn`).
      params: params.
      data: the dataset.
      split: ``"train"`` or ``"test"``.
      batch_size: evaluate in batches of this size (bounded memory); ``None`` for one pass.
        The result is the example-weighted mean, equal to the one-pass value up to
        float rounding.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
      >>> model = ll.models.mlp([2, 8, 2])
      >>> eval_fn = ll.train.metrics_fn(ll.losses.cross_entropy(model))
      >>> params = model.init(jax.random.key(1))
      >>> ev = ll.train.evaluate(eval_fn, params, data, split="test")
      >>> sorted(ev), ev["loss"].shape
      (['accuracy', 'loss'], ())
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    _check_int(batch_size, "batch_size", optional=True)
    x, y = data.train if split == "train" else data.test
    n = x.shape[0]
    if batch_size is None or batch_size >= n:
        return eval_fn(params, (x, y))
    num_full = n // batch_size
    m = num_full * batch_size
    xs = x[:m].reshape(num_full, batch_size, *x.shape[1:])
    ys = y[:m].reshape(num_full, batch_size, *y.shape[1:])
    full = jax.lax.map(lambda b: eval_fn(params, b), (xs, ys))
    total = jax.tree.map(lambda v: jnp.sum(v, 0) * batch_size, full)
    if m < n:
        rest = eval_fn(params, (x[m:], y[m:]))
        total = jax.tree.map(lambda t, r: t + r * (n - m), total, rest)
    return jax.tree.map(lambda t: t / n, total)


@dataclasses.dataclass(frozen=True)
class _EvalSplits:
    """``fn(params, data) -> {"<split>_<metric>": value}`` over whole splits.

    Hashable (a frozen dataclass of hashable fields), so equal configurations share one
    compiled program in :func:`fit` and, vmapped, in :mod:`lljax.ensemble`.
    """

    eval_fn: Callable
    splits: tuple[str, ...]
    batch_size: int | None

    def __call__(self, params, data):
        out = {}
        for split in self.splits:
            ev = evaluate(self.eval_fn, params, data, split=split, batch_size=self.batch_size)
            out.update({f"{split}_{k}": v for k, v in ev.items()})
        return out


_RUN_STATIC = ("loss_fn", "optimizer", "num_steps", "batch_size", "log_every", "sampling")
_run_jit = _static.jit(run, static_argnames=_RUN_STATIC)
_run_jit.__doc__ = None  # the wrapper copied run's docstring; its example runs once, for run
_eval_splits_jit = _static.jit(lambda fn, params, data: fn(params, data), static_argnums=0)


# --------------------------------------------------------------------------------------
# Validation helpers (shared with lljax.ensemble)
# --------------------------------------------------------------------------------------


def as_key(key, name: str = "key") -> jax.Array:
    """A typed PRNG key from a typed key or a raw ``uint32`` key array."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if hasattr(key, "dtype") and jnp.asarray(key).dtype == jnp.uint32 and jnp.ndim(key) >= 1:
        # Raw key data: (2,) for the default threefry (jax.random.PRNGKey(seed)).
        return jr.wrap_key_data(jnp.asarray(key))
    raise ValueError(f"{name}: expected a PRNG key (jax.random.key(seed)), got {key!r}")


def _check_int(value, name: str, *, low: int = 1, optional: bool = False):
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        kind = "None or an integer" if optional else "an integer"
        raise ValueError(f"{name}: expected {kind} >= {low}, got {value!r}")
    return int(value)


def _check_sign(value, name: str, *, positive: bool = False):
    """A ValueError for a concrete value (number or array) that is non-finite or below 0
    (``positive``: not above 0); traced values pass through, so the transformation can
    still be built inside jit/vmap with swept hyperparameters."""
    if value is None or isinstance(value, (bool, jax.core.Tracer)):
        return value
    if isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        v = np.asarray(value)
        if v.dtype.kind in "iuf" and (
            not np.all(np.isfinite(v)) or np.any(v <= 0 if positive else v < 0)
        ):
            kind = "positive" if positive else "non-negative"
            raise ValueError(f"{name}: expected finite {kind} values, got {value}")
    return value


def _check_common(
    data,
    batch_size,
    steps,
    log_every,
    sampling,
    eval_every,
    checkpoint_every,
    chunk_size,
    eval_batch_size=None,
):
    if not isinstance(data, data_lib.Dataset):
        raise ValueError(f"data: expected an lljax.data.Dataset, got {type(data).__name__}")
    steps = _check_int(steps, "steps")
    batch_size = _check_int(batch_size, "batch_size")
    if batch_size > data.num_train:
        raise ValueError(f"batch_size: {batch_size} exceeds the {data.num_train} training examples")
    log_every = _check_int(log_every, "log_every")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {sampling!r}")
    eval_every = _check_int(eval_every, "eval_every", optional=True)
    checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", optional=True)
    chunk_size = _check_int(chunk_size, "chunk_size", optional=True)
    _check_int(eval_batch_size, "eval_batch_size", optional=True)
    for name, v in (
        ("eval_every", eval_every),
        ("checkpoint_every", checkpoint_every),
        ("chunk_size", chunk_size),
    ):
        if v is not None and v % log_every:
            raise ValueError(f"{name}: {v} must be a multiple of log_every={log_every}")
    if chunk_size is None:  # the default, rounded up so no chunk ends inside a log window
        chunk_size = -(-DEFAULT_CHUNK_SIZE // log_every) * log_every
    return steps, batch_size, log_every, eval_every, checkpoint_every, chunk_size


def _check_finite_params(params, name: str = "params"):
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{name}: the pytree has no arrays")
    for leaf in leaves:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex)):
            raise ValueError(
                f"{name}: expected a pytree of arrays, got a leaf of type {type(leaf).__name__}"
            )
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: contains non-finite values (NaN or inf)")


def segment_ends(start: int, steps: int, *periods: int | None) -> list[int]:
    """Ends of the compiled chunks from ``start`` to ``steps``.

    Boundaries are the absolute multiples of every period (chunk size, evaluation and
    checkpoint intervals) plus ``steps``, so a resumed run is cut exactly like an
    uninterrupted one.

    Examples:
      >>> import lljax as ll
      >>> ll.train.segment_ends(0, 25, 10)  # chunks of 10 steps
      [10, 20, 25]
      >>> ll.train.segment_ends(12, 25, 10, 4)  # resumed at step 12, evaluating every 4
      [16, 20, 24, 25]
    """
    ends = {steps}
    for p in periods:
        if p:
            ends.update(range((start // p + 1) * p, steps, p))
    return sorted(e for e in ends if start < e <= steps)


# --------------------------------------------------------------------------------------
# Checkpoints: .npz of leaves + a JSON manifest, both written atomically
# --------------------------------------------------------------------------------------


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_host(x) -> np.ndarray:
    """A numpy copy of ``x``; gathers across hosts for a multi-process global array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _tree_to_host(tree):
    """:func:`_to_host` of every leaf, the copies started together (one wait, not one per
    leaf: on an accelerator each separate copy is a round trip)."""
    leaves = jax.tree.leaves(tree)
    if all(not isinstance(x, jax.Array) or x.is_fully_addressable for x in leaves):
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return jax.tree.map(_to_host, tree)


def _put(tree, sharding):
    """``jax.device_put(tree, sharding)``, also onto a mesh that spans several processes.

    ``device_put`` only reaches this process's devices; a multi-process sharding is filled
    from each process's host copy instead, so every process must hold the same values (the
    same script with the same keys and data does).
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.core.Tracer):  # under jit: a sharding constraint
            return jax.device_put(x, sharding)
        if _is_key(x):
            return jr.wrap_key_data(one(jr.key_data(x)), impl=jr.key_impl(x))
        a = _to_host(x)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(one, tree)


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _leaf_paths(tree) -> list[str]:
    """Each leaf's key path, e.g. ``"opt_state/0/mu/w"``.

    Checkpoints and fingerprints compare these rather than ``str(treedef)``, whose wording
    is JAX's and may change between versions (a JAX upgrade must not strand a run)."""
    with_path, _ = jax.tree_util.tree_flatten_with_path(tree)
    return ["/".join(_key_name(k) for k in path) for path, _ in with_path]


def fingerprint(tree) -> str:
    """A short SHA-1 of a pytree's leaf paths and values (keys by their data).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> fp = ll.train.fingerprint({"w": jnp.ones(3), "key": jax.random.key(0)})
      >>> len(fp), fp == ll.train.fingerprint({"w": jnp.ones(3), "key": jax.random.key(0)})
      (16, True)
      >>> fp == ll.train.fingerprint({"w": jnp.zeros(3), "key": jax.random.key(0)})
      False
    """
    h = hashlib.sha1()
    h.update(json.dumps(_leaf_paths(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        a = _to_host(jr.key_data(leaf) if _is_key(leaf) else leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


MANIFEST = "checkpoint.json"


def save_checkpoint(
    directory: str,
    state,
    history: Mapping[str, np.ndarray],
    *,
    meta: Mapping | None = None,
    keep: int = 2,
) -> str:
    """Writes ``state`` (any pytree; typed keys allowed) and ``history`` to ``directory``.

    The leaves go to ``ckpt_<step>.npz``, then ``checkpoint.json`` (format, step, file,
    tree structure, ``meta``) is replaced atomically, so a crash at any point leaves the
    previous checkpoint readable. Only the newest ``keep`` files are kept. With several
    processes (``jax.distributed``), sharded leaves are gathered, process 0 writes and the
    others wait for it, so ``directory`` must be a folder every process sees.

    Returns:
      the path of the ``.npz`` written.

    Examples:
      >>> import jax, tempfile, numpy as np, optax, lljax as ll
      >>> params = ll.models.mlp([4, 8, 3]).init(jax.random.key(0))
      >>> s = ll.train.init_state(params, optax.adam(1e-3), key=jax.random.key(1))
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = ll.train.save_checkpoint(d, s, {"loss": np.zeros(3)}, meta={"lr": 1e-3})
      ...     s2, history, meta = ll.train.load_checkpoint(d, s, meta={"lr": 1e-3})
      >>> path.endswith("ckpt_000000000.npz"), history["loss"].shape, meta
      (True, (3,), {'lr': 0.001})
    """
    os.makedirs(directory, exist_ok=True)
    leaves, treedef = jax.tree.flatten(state)
    step = int(np.max(_to_host(state.step))) if hasattr(state, "step") else 0
    arrays, kinds = {}, []
    for i, leaf in enumerate(leaves):
        kinds.append("key" if _is_key(leaf) else "array")
        arrays[f"leaf_{i}"] = _to_host(jr.key_data(leaf) if _is_key(leaf) else leaf)
    for name, v in history.items():
        arrays[f"history/{name}"] = np.asarray(v)
    fname = f"ckpt_{step:09d}.npz"
    if jax.process_index() == 0:
        _atomic_write(os.path.join(directory, fname), lambda f: np.savez(f, **arrays))
        manifest = {
            "format": _CHECKPOINT_FORMAT,
            "step": step,
            "file": fname,
            "treedef": str(treedef),  # for people; loading compares "paths"
            "paths": _leaf_paths(state),
            "leaves": [
                [k, list(a.shape), str(a.dtype)]
                for k, a in zip(
                    kinds, (arrays[f"leaf_{i}"] for i in range(len(leaves))), strict=True
                )
            ],
            "meta": dict(meta or {}),
        }
        _atomic_write(
            os.path.join(directory, MANIFEST),
            lambda f: f.write(json.dumps(manifest, indent=1).encode()),
        )
        old = sorted(f for f in os.listdir(directory) if f.startswith("ckpt_") and f != fname)
        for f in old[: max(0, len(old) - (keep - 1))]:
            os.remove(os.path.join(directory, f))
    if jax.process_count() > 1:
        # The other processes wait for process 0's write, so a later load finds it.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"lljax.save_checkpoint {step}")
    return os.path.join(directory, fname)


def _check_structure(manifest: Mapping, treedef, paths: list[str]) -> None:
    saved = manifest.get("paths")
    if saved is None:  # written before manifests recorded leaf paths
        if str(treedef) != manifest["treedef"] or len(paths) != len(manifest["leaves"]):
            raise ValueError(
                f"checkpoint_dir: the saved state's structure differs from this run's "
                f"({manifest['treedef'][:200]} vs {str(treedef)[:200]})"
            )
        return
    if saved == paths:
        return
    if len(saved) != len(paths):
        what = f"{len(saved)} leaves saved, {len(paths)} in this run"
    else:
        i = next(i for i, (a, b) in enumerate(zip(saved, paths, strict=True)) if a != b)
        what = f"leaf {i} is {saved[i]!r} in the checkpoint but {paths[i]!r} here"
    only_saved = sorted(set(saved) - set(paths))[:3]
    only_here = sorted(set(paths) - set(saved))[:3]
    raise ValueError(
        f"checkpoint_dir: the saved state's structure differs from this run's ({what}; "
        f"only in the checkpoint: {only_saved}, only here: {only_here}); "
        "a different optimizer or model? use a fresh folder"
    )


def load_checkpoint(directory: str, template, *, meta: Mapping | None = None):
    """Reads the latest checkpoint in ``directory`` into the structure of ``template``.

    Args:
      directory: a folder written by :func:`save_checkpoint`.
      template: a pytree with the structure, shapes and dtypes of the saved state (e.g. a
        freshly initialised state); typed keys are rebuilt with the template's key impl.
      meta: settings that must equal the saved ones (a different batch size, key or
        initial params would silently change the run).

    Returns:
      ``(state, history, saved_meta)``, or ``None`` when there is no checkpoint.

    Raises:
      ValueError: the checkpoint does not match ``template`` or ``meta``.

    Examples:
      >>> import jax, tempfile, optax, lljax as ll
      >>> params = ll.models.mlp([4, 8, 3]).init(jax.random.key(0))
      >>> s = ll.train.init_state(params, optax.sgd(0.1), key=jax.random.key(1))
      >>> with tempfile.TemporaryDirectory() as d:
      ...     empty = ll.train.load_checkpoint(d, s)  # nothing saved yet
      ...     _ = ll.train.save_checkpoint(d, s, {})
      ...     s2, _, _ = ll.train.load_checkpoint(d, s)
      >>> empty is None, ll.train.fingerprint(s2) == ll.train.fingerprint(s)
      (True, True)
    """
    path = os.path.join(directory, MANIFEST)
    manifest = None
    if os.path.exists(path):
        with open(path) as f:
            manifest = json.load(f)
    if jax.process_count() > 1:
        # Process 0 alone writes checkpoints: a folder some process cannot see would resume the
        # processes at different steps, and their shared programs would then deadlock.
        from jax.experimental import multihost_utils

        mine = np.int64(-1 if manifest is None else manifest.get("step", 0))
        steps = np.asarray(multihost_utils.process_allgather(mine)).ravel()
        if np.any(steps != steps[0]):
            raise ValueError(
                f"checkpoint_dir: the processes see different checkpoints in {directory!r} "
                f"(latest step per process, -1 for none: {steps.tolist()}); use a folder "
                "every process shares"
            )
    if manifest is None:
        return None
    if manifest.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint_dir: unknown checkpoint format {manifest.get('format')}")
    saved_meta = manifest.get("meta", {})
    for k, v in dict(meta or {}).items():
        if k in saved_meta and saved_meta[k] != v:
            raise ValueError(
                f"checkpoint_dir: {directory!r} holds a run with {k}={saved_meta[k]!r}, "
                f"but this call has {k}={v!r}; use a fresh folder or the same settings"
            )
    leaves, treedef = jax.tree.flatten(template)
    _check_structure(manifest, treedef, _leaf_paths(template))
    out = []
    with np.load(os.path.join(directory, manifest["file"])) as z:
        for i, leaf in enumerate(leaves):
            a = z[f"leaf_{i}"]
            if _is_key(leaf):
                ref = jr.key_data(leaf)
                new = jr.wrap_key_data(jnp.asarray(a), impl=jr.key_impl(leaf))
            else:
                ref = leaf
                new = jnp.asarray(a)
            if tuple(a.shape) != tuple(ref.shape) or a.dtype != np.dtype(ref.dtype):
                raise ValueError(
                    f"checkpoint_dir: leaf {i} has shape {a.shape} {a.dtype}, expected "
                    f"{tuple(ref.shape)} {ref.dtype}"
                )
            sharding = getattr(leaf, "sharding", None)
            out.append(_put(new, sharding) if sharding is not None else new)
        history = {k[len("history/") :]: z[k] for k in z.files if k.startswith("history/")}
    return jax.tree.unflatten(treedef, out), history, saved_meta


# --------------------------------------------------------------------------------------
# Host driver shared by fit and lljax.ensemble.train
# --------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal)."""

    def __init__(self, total: int, start: int, enabled: bool, label: str = "train"):
        self.total, self.enabled, self.label = total, enabled, label
        self.t0 = time.perf_counter()
        self.start = start
        self.tty = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.last_print = 0.0

    def update(self, step: int, metrics: Mapping[str, float], final: bool = False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not (self.tty or final or now - self.last_print > 5.0):
            return
        self.last_print = now
        frac = step / self.total
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = f"{self.label} [{bar}] {step}/{self.total} {text} {now - self.t0:.1f}s"
        end = "\n" if (final or not self.tty) else ""
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


def _state_hyperparameters(node) -> tuple[str, ...]:
    """Fields of an optimizer-state node that hold hyperparameters: ``optax.inject_hyperparams``'
    ``hyperparams`` and the ``hyperparameters`` an lljax sampler state names."""
    fields = getattr(node, "_fields", None)
    if fields is None:
        return ()
    if "hyperparams" in fields:
        return ("hyperparams",)
    return tuple(getattr(type(node), "hyperparameters", ()))


def with_given_hyperparameters(loaded, fresh):
    """The loaded optimizer state, with the hyperparameters the given optimizer keeps in its
    state taken from ``fresh`` (its ``init``): a resumed run uses the optimizer it is given
    (e.g. a lower learning rate after a divergence), whether it keeps the learning rate in a
    closure (``optax.sgd``) or in its state (``optax.inject_hyperparams``, lljax's samplers);
    moments, keys and anchors continue from the checkpoint."""
    is_node = lambda x: bool(_state_hyperparameters(x))

    def take(old, new):
        names = _state_hyperparameters(old)
        return old._replace(**{n: getattr(new, n) for n in names}) if names else old

    return jax.tree.map(take, loaded, fresh, is_leaf=is_node)


def _resume_meta(data, eval_splits, eval_every) -> dict:
    """Settings a resumed run must share with the checkpoint, besides keys and batching:
    the training data, and what is evaluated when (the history's columns must line up)."""
    return {
        "data": fingerprint((data.x_train, data.y_train)),
        "eval_splits": list(eval_splits),
        "eval_every": eval_every,
    }


_NOT_EVAL = ("step", "loss", "eval_step", "diverged_step", "wall_time")


def _append_eval(history: dict, step: int, ev: Mapping[str, np.ndarray]) -> None:
    if "eval_step" in history:
        before = sorted(k for k in history if k not in _NOT_EVAL)
        if before != sorted(ev):
            raise ValueError(
                f"eval_fn: this run evaluates {sorted(ev)}, but the checkpoint's history has "
                f"{before}; resume with the same evaluation or use a fresh checkpoint_dir"
            )
    _append(history, {"eval_step": np.array([step])})
    _append(history, {k: v[..., None] for k, v in ev.items()})


def _append(history: dict, new: Mapping[str, np.ndarray]) -> None:
    for k, v in new.items():
        v = np.asarray(v)
        history[k] = np.concatenate([history[k], v], axis=-1) if k in history else v


def _drive(
    *,
    state,
    history: dict,
    steps: int,
    ends: list[int],
    run_chunk: Callable,
    evaluate_fn: Callable | None,
    eval_points: set[int],
    checkpoint: Callable | None,
    checkpoint_points: set[int],
    log_every: int,
    on_nonfinite: str,
    progress: _Progress,
    start: int,
    num_members: int | None = None,
):
    """Runs the chunks; shared by :func:`fit` and :func:`lljax.ensemble.train`.

    ``run_chunk(state, n) -> (state, out)`` with ``out`` from :func:`run` (leading member
    axis for populations); ``evaluate_fn(params) -> dict`` of host arrays; ``start`` the
    step ``state`` is at; ``num_members`` the real members (the rest pad the device mesh).
    """
    done = history.get("eval_step")
    if evaluate_fn is not None and start in eval_points and (done is None or done[-1] != start):
        _append_eval(history, start, evaluate_fn(state.params))
    cur = start
    for end in ends:
        n = end - cur
        state, out = run_chunk(state, n)
        out = _tree_to_host(out)
        bad_step, bad_members, member_steps = _first_nonfinite(out, end)
        if bad_members is not None and num_members is not None:
            bad_members = [i for i in bad_members if i < num_members]  # not the padding
        if bad_step is not None and (on_nonfinite == "raise" or bad_members is None):
            where = f" in members {bad_members}" if bad_members is not None else ""
            what = "parameters" if bad_step == end else "training loss"
            raise NonFiniteLossError(
                f"non-finite {what} at step {bad_step}{where} (lower the learning rate, check "
                "the data, or resume from the last checkpoint)",
                step=bad_step,
                members=bad_members,
            )
        if on_nonfinite == "flag" and np.ndim(member_steps):
            # -1 until a member diverges; one whose last update broke its params counts at
            # `end`.
            diverged = history.get("diverged_step")
            if diverged is not None:
                member_steps = np.where(diverged >= 0, diverged, member_steps)
            history["diverged_step"] = member_steps
        num_w = out["loss"].shape[-1]
        _append(history, {"step": cur + log_every * np.arange(num_w), "loss": out["loss"]})
        cur = end
        metrics = {"loss": float(np.nanmean(out["loss"][..., -1]))}
        if evaluate_fn is not None and end in eval_points:
            ev = evaluate_fn(state.params)
            _append_eval(history, end, ev)
            metrics.update({k: float(np.nanmean(v)) for k, v in ev.items() if "test" in k})
        if checkpoint is not None and end in checkpoint_points:
            checkpoint(state, history)
        progress.update(end, metrics, final=end == steps)
    return state, history


def _first_nonfinite(out, end: int):
    """``(step, members, steps)``: the first non-finite loss/params in a chunk (``None`` if
    none), the members concerned and each member's first such step (-1 if none)."""
    ns = np.asarray(out["nonfinite_step"])
    bad_params = ~np.asarray(out["params_finite"]) & (ns < 0)
    steps = np.where(ns >= 0, ns, np.where(bad_params, end, -1))
    if not np.any(steps >= 0):
        return None, None, steps
    first = int(np.min(steps[steps >= 0]))
    members = [int(i) for i in np.flatnonzero(steps >= 0)] if steps.ndim else None
    return first, members, steps


def fit(
    loss_fn: Callable,
    params: Params,
    optimizer: optax.GradientTransformation,
    data: data_lib.Dataset,
    *,
    steps: int,
    batch_size: int,
    key: jax.Array,
    eval_every: int | None = None,
    log_every: int = 1,
    chunk_size: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    eval_fn: Callable | None = None,
    eval_splits: tuple[str, ...] = ("train", "test"),
    eval_batch_size: int | None = None,
    sampling: str = "epoch",
) -> FitResult:
    """Trains ``params`` for ``steps`` optimizer steps; the single-run driver around :func:`run`.

    Args:
      loss_fn: ``loss_fn(params, (x, y)) -> scalar`` (e.g. :func:`lljax.losses.cross_entropy`).
      params: initial params (must be finite).
      optimizer: any optax transformation. It and ``loss_fn`` are compared by value, so
        a new ``optax.sgd(0.1)`` in a later call reuses the compiled program.
      data: a :class:`~lljax.data.Dataset`.
      steps: total number of optimizer steps (counting those of a resumed checkpoint).
      batch_size: examples per step (at most the number of training examples).
      key: data-order key.
      eval_every: evaluate on the whole splits every this many steps (and at steps 0 and
        ``steps``); ``None`` evaluates once at the end.
      log_every: record the minibatch loss averaged over windows of this many steps.
      chunk_size: steps per compiled call (default 1000, rounded up to a multiple of
        ``log_every``); chunk boundaries are absolute multiples, so resumed runs are cut
        like uninterrupted ones.
      checkpoint_dir: save to this folder and resume from it automatically. A resumed run
        must have the same data, key, initial params, batching and evaluation (checked); the
        optimizer may change (e.g. a lower learning rate after a divergence; hyperparameters
        kept in the optimizer's state, as by ``optax.inject_hyperparams`` and lljax's
        samplers, come from the optimizer given, moments and keys from the checkpoint:
        :func:`with_given_hyperparameters`); the model and loss are not checked beyond the
        parameters' structure.
      checkpoint_every: save every this many steps (default: after every chunk) and at
        the end.
      progress: print a progress line to stderr between chunks.
      eval_fn: ``eval_fn(params, (x, y)) -> dict`` of batch means; default
        :class:`metrics_fn` (loss, and accuracy when the data has classes).
      eval_splits: splits to evaluate, any of ``"train"``, ``"test"``.
      eval_batch_size: evaluate in batches of this size to bound memory.
      sampling: minibatch order (see the module docstring).

    Returns:
      A :class:`FitResult`.

    Raises:
      ValueError: bad arguments (naming the argument) or a checkpoint of another run.
      NonFiniteLossError: a non-finite loss; ``.step`` is the first bad step.

    Examples:
      >>> import jax, optax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
      >>> model = ll.models.mlp([2, 8, 2])
      >>> r = ll.train.fit(ll.losses.cross_entropy(model), model.init(jax.random.key(1)),
      ...                  optax.sgd(0.1), data, steps=20, batch_size=16, key=jax.random.key(2),
      ...                  eval_every=10, progress=False)
      >>> r.history["loss"].shape, r.history["eval_step"].tolist(), r.history["test_accuracy"].shape
      ((20,), [0, 10, 20], (3,))
    """
    steps, batch_size, log_every, eval_every, checkpoint_every, chunk_size = _check_common(
        data,
        batch_size,
        steps,
        log_every,
        sampling,
        eval_every,
        checkpoint_every,
        chunk_size,
        eval_batch_size,
    )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    for s in eval_splits:
        if s not in ("train", "test"):
            raise ValueError(f"eval_splits: expected 'train'/'test', got {s!r}")
    _check_finite_params(params)
    key = as_key(key)
    t0 = time.perf_counter()

    state = init_state(params, optimizer, key=key)
    history: dict = {}
    start = 0  # known without waiting for the device, unless a checkpoint is loaded
    if checkpoint_dir is not None:
        meta = {
            "kind": "fit",
            "batch_size": batch_size,
            "sampling": sampling,
            "log_every": log_every,
            "key": fingerprint(key),
            "init": fingerprint(params),
            **_resume_meta(data, eval_splits, eval_every),
        }
        loaded = load_checkpoint(checkpoint_dir, state, meta=meta)
        if loaded is not None:
            fresh, (state, history, _) = state, loaded
            state = state._replace(
                opt_state=with_given_hyperparameters(state.opt_state, fresh.opt_state)
            )
            history = dict(history)
            history.pop("wall_time", None)
            start = int(state.step)
    if start > steps:
        raise ValueError(f"steps: {steps} is less than the {start} steps already checkpointed")

    eval_splits_fn = _EvalSplits(
        eval_fn or metrics_fn(loss_fn, accuracy=data.num_classes > 0),
        tuple(eval_splits),
        eval_batch_size,
    )

    def evaluate_fn(p):
        return _tree_to_host(_eval_splits_jit(eval_splits_fn, p, data))

    def run_chunk(s, n):
        return _run_jit(
            loss_fn,
            optimizer,
            data,
            s,
            num_steps=n,
            batch_size=batch_size,
            log_every=log_every,
            sampling=sampling,
        )

    def checkpoint(s, h):
        save_checkpoint(checkpoint_dir, s, h, meta=meta)

    eval_points = {steps} | (set(range(0, steps + 1, eval_every)) if eval_every else set())
    ckpt_points = {steps} | (
        set(range(0, steps + 1, checkpoint_every))
        if checkpoint_every
        else set(segment_ends(start, steps, chunk_size, eval_every))
    )
    state, history = _drive(
        state=state,
        history=history,
        steps=steps,
        ends=segment_ends(start, steps, chunk_size, eval_every, checkpoint_every),
        run_chunk=run_chunk,
        evaluate_fn=evaluate_fn if eval_splits else None,
        eval_points=eval_points,
        checkpoint=checkpoint if checkpoint_dir is not None else None,
        checkpoint_points=ckpt_points,
        log_every=log_every,
        on_nonfinite="raise",
        progress=_Progress(steps, start, progress),
        start=start,
    )
    history["wall_time"] = np.asarray(time.perf_counter() - t0)
    return FitResult(state.params, state.opt_state, history, state)


__all__ = [
    "TrainState",
    "FitResult",
    "NonFiniteLossError",
    "init_state",
    "run",
    "fit",
    "evaluate",
    "metrics_fn",
    "batch_indices",
    "make_optimizer",
    "save_checkpoint",
    "load_checkpoint",
    "segment_ends",
    "fingerprint",
    "as_key",
    "with_given_hyperparameters",
]
