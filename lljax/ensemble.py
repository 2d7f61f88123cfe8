"""Populations of networks: a leading member axis, trained, evaluated and measured at once.

A population is a stacked pytree whose leading axis indexes members. :func:`train` is
``jax.vmap`` of the single-run core :func:`lljax.train.run` inside the same chunked driver
as :func:`lljax.train.fit`: one compiled program runs every member's ``lax.scan`` over steps.

Keys. Member ``i`` of ``key=k`` has key ``fold_in(k, i)``, split into an init key and a
data-order key; everything member ``i`` computes depends on those two keys only, so the
first members of a large population equal a smaller population with the same keys.
``init_keys``/``data_keys`` vary the two independently; ``same_data_order=True`` gives every
member the data order of member 0 (a controlled comparison of initialisations).
An optimizer that carries its own PRNG key (a sampler such as
``lljax.optim.sgld(..., key=k)``, or ``optax.noisy_sgd``) would hand every member that same
key; instead member ``i``'s copy of each key in the optimizer state is
``fold_in(key, bits(data_key_i))``, so the noise follows the data-order key: members with
different data keys draw independent noise, and members that share a data key
(``same_data_order=True``, or equal ``data_keys``) share the noise too, on purpose (they
differ by their initialisation only). When a hyperparameter is itself a key (the factory
``optimizer=lambda key: sgld(..., key=key)`` with ``hyperparams={"key": keys}``), each
member already has its own and the keys are used as given.

Per-member hyperparameters. Pass ``hyperparams={"lr": jnp.array([...]), ...}`` (arrays of
length ``num_members``; scalars are broadcast) with either

* an optimizer *factory*, ``optimizer=lambda lr, wd: optax.adamw(lr, weight_decay=wd)``,
  called inside the vmapped program with each member's (traced) values, or
* an ``optax.inject_hyperparams`` transformation, whose state then holds each member's
  values (e.g. ``optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)`` with
  ``hyperparams={"learning_rate": lrs}``).

Either way the values are traced arrays, not compile-time constants: a sweep is one
compiled program, and a second sweep over other values reuses it. Keys can be
hyperparameters too (e.g. a per-member SGLD key: ``hyperparams={"key": keys}``).

Memory. :func:`memory_estimate` bounds the bytes one member needs (train state twice, as
the scan carries a copy, plus every intermediate of one step, an upper bound) and compares
it with the free device memory (the ``LLJAX_DEVICE_MEMORY`` environment variable in bytes if
set, else ``device.memory_stats()``, else, on CPU, half the physical RAM). ``train`` then
vmaps over chunks of members that fit, with results unchanged; :func:`map` and
:func:`summary` chunk by their ``chunk_size``.

Sharding. ``train(..., shard=True)`` (or ``mesh=`` a ``jax.sharding.Mesh`` with a
``"member"`` axis) places the member axis across devices with ``NamedSharding``; members
never communicate, so each device runs its slice of the population. Populations that do
not divide evenly are padded with copies of the last member, which are dropped at the end;
JAX splits arrays only in equal parts, so such a population comes back replicated on every
device (a member count the devices divide keeps it sharded). Checkpoints hold the real
members only, so a run resumes on another number of devices. On several
hosts, call ``jax.distributed.initialize()`` first on every process (same script, same
arguments); ``jax.devices()`` then lists every host's devices and the mesh spans them. The
history and :func:`summary` tables come back whole on every process; parameters stay global
arrays sharded over the hosts (``multihost_utils.process_allgather`` gathers one). Process 0
writes the checkpoints, to a ``checkpoint_dir`` every process must see.

Examples:
  >>> import jax, jax.numpy as jnp, optax, lljax as ll
  >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
  >>> model = ll.models.mlp([2, 8, 2])
  >>> loss_fn = ll.losses.cross_entropy(model)
  >>> pop = ll.ensemble.train(model, loss_fn, lambda lr: optax.sgd(lr), data,
  ...                         key=jax.random.key(1), num_members=3, steps=20, batch_size=16,
  ...                         hyperparams={"lr": jnp.array([0.01, 0.1, 1.0])}, progress=False)
  >>> pop.params["Dense_0"]["kernel"].shape, pop.history["loss"].shape
  ((3, 2, 8), (3, 20))
  >>> table = ll.ensemble.summary(pop, loss_fn, data)
  >>> table["test_loss"].shape
  (3,)
"""

from __future__ import annotations

import builtins
import csv
import dataclasses
import functools
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lljax import _static
from lljax import data as data_lib
from lljax import train as train_lib

Params = Any
MEMBER_AXIS = "member"


class Population(NamedTuple):
    """A trained population (leading axis = member).

    Attributes:
      params: stacked params ``(members, ...)``.
      opt_state: stacked optimizer states.
      history: dict of numpy arrays as in :class:`lljax.train.FitResult`, with a leading
        member axis on the per-member ones (``loss``: ``(members, windows)``,
        ``test_loss``: ``(members, evaluations)``); ``step``/``eval_step`` are shared.
        ``diverged_step`` (``(members,)``, -1 if never) when ``on_nonfinite="flag"``.
      keys: the member keys ``(members,)`` (``None`` when only init/data keys were given).
      init_keys: keys the params were initialised from (``None`` for given params).
      data_keys: data-order keys.
      hyperparams: per-member hyperparameters, dict of ``(members,)`` arrays.
      state: the stacked :class:`lljax.train.TrainState`.
    """

    params: Params
    opt_state: Any
    history: dict
    keys: jax.Array | None
    init_keys: jax.Array | None
    data_keys: jax.Array
    hyperparams: dict
    state: train_lib.TrainState

    @property
    def num_members(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    def member(self, i: int) -> Params:
        """Params of member ``i``."""
        return jax.tree.map(lambda x: x[i], self.params)


# --------------------------------------------------------------------------------------
# Keys and initialisation
# --------------------------------------------------------------------------------------


def member_keys(key: jax.Array, num_members: int) -> jax.Array:
    """Keys ``(num_members,)`` with member ``i`` = ``fold_in(key, i)`` (prefix-stable).

    Examples:
      >>> import jax, lljax as ll
      >>> keys = ll.ensemble.member_keys(jax.random.key(0), 4)
      >>> k2 = jax.random.fold_in(jax.random.key(0), 2)
      >>> keys.shape, bool((jax.random.key_data(keys[2]) == jax.random.key_data(k2)).all())
      ((4,), True)
    """
    return _member_keys_jit(train_lib.as_key(key), int(num_members))


@functools.partial(jax.jit, static_argnums=1)
def _member_keys_jit(key, num_members):
    return jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(num_members, dtype=jnp.uint32))


@functools.cache
def _key_spec() -> jax.ShapeDtypeStruct:
    """A key's shape and dtype, for ``eval_shape`` without making a key on the device."""
    return jax.eval_shape(lambda: jr.key(0))


def _split_member_keys_impl(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    pairs = jax.vmap(jr.split)(keys)
    return pairs[:, 0], pairs[:, 1]


_split_member_keys = jax.jit(_split_member_keys_impl)


@functools.partial(jax.jit, static_argnums=1)
def _member_keys_and_halves(key, num_members):
    keys = _member_keys_jit(key, num_members)
    return (keys, *_split_member_keys_impl(keys))


def _as_keys(keys, name: str, num_members: int | None = None) -> jax.Array:
    keys = train_lib.as_key(keys, name)
    if keys.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of keys (members,), got shape {keys.shape}")
    if num_members is not None and keys.shape[0] != num_members:
        raise ValueError(f"{name}: expected {num_members} keys, got {keys.shape[0]}")
    return keys


def init(
    model,
    *,
    key: jax.Array | None = None,
    num_members: int | None = None,
    keys: jax.Array | None = None,
) -> Params:
    """Stacked params ``(members, ...)``: ``vmap(model.init)`` over the members' init keys.

    The init key of member ``i`` is the first half of ``split(fold_in(key, i))``, as in
    :func:`train`, so ``init`` gives exactly the initial params of ``train`` with the same key.

    Examples:
      >>> import jax, lljax as ll
      >>> p = ll.ensemble.init(ll.models.mlp([4, 8, 3]), key=jax.random.key(0), num_members=5)
      >>> p["Dense_1"]["kernel"].shape
      (5, 8, 3)
    """
    keys = _resolve_member_keys(key, keys, num_members)
    init_keys, _ = _split_member_keys(keys)
    return _init_params_jit(model, init_keys)


def _resolve_member_keys(key, keys, num_members):
    if keys is not None:
        if key is not None:
            raise ValueError("key: pass either key= (with num_members=) or keys=, not both")
        return _as_keys(keys, "keys", num_members)
    if key is None:
        raise ValueError("key: pass key= with num_members=, or keys= (one key per member)")
    num_members = train_lib._check_int(num_members, "num_members")
    return member_keys(key, num_members)


@functools.partial(jax.jit, static_argnums=2)
def _tree_index(tree, idx, sharding=None):
    """Members ``idx`` of ``tree``; ``sharding`` keeps the result split over the member
    axis (a plain gather of a sharded array comes back replicated on every device)."""
    out = jax.tree.map(lambda x: x[idx], tree)
    return out if sharding is None else jax.lax.with_sharding_constraint(out, sharding)


_init_params_jit = _static.jit(lambda model, keys: jax.vmap(model.init)(keys), static_argnums=0)


def _init_states(model, optimizer, params, init_keys, data_keys, hyperparams):
    # A sampler built once (``sgld(..., key=k)``, ``optax.noisy_sgd``) holds one PRNG key,
    # which a vmapped init copies to every member: the members would draw the same noise.
    # Unless the keys come in per member (a key among the hyperparameters of a factory),
    # each member's key leaves are folded with its data-order key (module docstring, Keys).
    # Only here, at the start: a resumed run loads the folded keys from its checkpoint.
    own_keys = any(_is_key_struct(v) for v in jax.tree.leaves(hyperparams))

    def one(p, ik, dk, hp):
        p = model.init(ik) if p is None else p
        state = train_lib.init_state(p, optimizer, key=dk, hyperparams=hp)
        if own_keys:
            return state
        salt = jr.bits(dk)
        opt_state = jax.tree.map(
            lambda x: jr.fold_in(x, salt) if _is_key_struct(x) else x, state.opt_state
        )
        return state._replace(opt_state=opt_state)

    if params is None:
        return jax.vmap(lambda ik, dk, hp: one(None, ik, dk, hp))(init_keys, data_keys, hyperparams)
    return jax.vmap(lambda p, dk, hp: one(p, None, dk, hp))(params, data_keys, hyperparams)


_init_states_jit = _static.jit(_init_states, static_argnums=(0, 1))


# --------------------------------------------------------------------------------------
# Sharding and chunked vmap
# --------------------------------------------------------------------------------------


def member_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``Mesh`` over ``devices`` (default: all, across hosts) with axis ``"member"``."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (MEMBER_AXIS,))


def shard(population, mesh: Mesh | None = None):
    """Places a stacked pytree with its leading (member) axis split across ``mesh``.

    The number of members must be a multiple of the mesh size (:func:`train` pads for you).
    """
    return _place(population, mesh or member_mesh())


def _place(tree, mesh: Mesh):
    return train_lib._put(tree, NamedSharding(mesh, P(MEMBER_AXIS)))


def _num_members(tree) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("population: the pytree has no arrays")
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"population: every leaf needs the same leading (member) axis, got sizes {sizes}"
        )
    return sizes.pop()


def _vmapped(fn, population, *args):
    return jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(population, *args)


_vmapped_jit = _static.jit(_vmapped, static_argnums=0)


def _chunked(apply: Callable, tree, chunk_size: int | None, mesh: Mesh | None = None):
    """``apply(sub_tree)`` over member chunks of a fixed size (the last padded by repeats);
    with a ``mesh`` (whose size divides ``chunk_size``) each chunk, and the result, stay
    split over its member axis."""
    m = _num_members(tree)
    if chunk_size is None or chunk_size >= m:
        return apply(tree)
    sharding = NamedSharding(mesh, P(MEMBER_AXIS)) if mesh is not None else None
    outs = []
    for lo in range(0, m, chunk_size):
        idx = np.minimum(np.arange(lo, lo + chunk_size), m - 1)
        out = apply(_tree_index(tree, idx, sharding))
        valid = min(chunk_size, m - lo)
        outs.append(out if valid == chunk_size else _tree_index(out, np.arange(valid)))
    out = jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)
    return out if mesh is None or m % mesh.shape[MEMBER_AXIS] else _place(out, mesh)


def map(fn: Callable, population, *args, chunk_size: int | None = None):  # noqa: A001
    """Applies ``fn(member, *args)`` to every member: ``vmap`` in chunks of members.

    ``population`` is any pytree with a leading member axis (params, or ``(params, keys)``);
    ``args`` are passed unchanged to every call (pass data here rather than closing over
    it, so it is an argument of the compiled program, not a constant). One program is
    compiled per ``(fn, chunk_size)``, reused across chunks and calls (``fn`` is compared by
    value: a fresh lambda with the same code and captured values reuses it).

    Args:
      fn: a per-member function, jit-compatible.
      population: stacked pytree ``(members, ...)``.
      *args: shared arguments.
      chunk_size: members per vmapped call (``None``: all at once). The results do not
        depend on it.

    Returns:
      ``fn``'s outputs stacked along a leading member axis.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> pop = ll.ensemble.init(ll.models.mlp([4, 8, 3]), key=jax.random.key(0), num_members=5)
      >>> def sq_norm(p):
      ...     return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
      >>> a = ll.ensemble.map(sq_norm, pop)
      >>> b = ll.ensemble.map(sq_norm, pop, chunk_size=2)
      >>> a.shape, bool(jnp.allclose(a, b))
      ((5,), True)
    """
    if chunk_size is not None:
        chunk_size = train_lib._check_int(chunk_size, "chunk_size")
    return _chunked(lambda sub: _vmapped_jit(fn, sub, *args), population, chunk_size)


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------


class MemoryEstimate(NamedTuple):
    """Bytes one member needs and how many fit.

    Attributes:
      bytes_state: params + optimizer state of one member.
      bytes_step: upper bound on the intermediates of one training step (every value in
        the traced step, no reuse assumed).
      bytes_per_member: ``2 * bytes_state + bytes_step``.
      bytes_available: free memory per device (see the module docstring for CPU).
      max_members: members that fit per device at once.
      source: where ``bytes_available`` came from.
    """

    bytes_state: int
    bytes_step: int
    bytes_per_member: int
    bytes_available: int
    max_members: int
    source: str


def available_memory(device: jax.Device | None = None) -> tuple[int, str]:
    """Free bytes on ``device`` and where the figure came from.

    ``LLJAX_DEVICE_MEMORY`` (bytes) if set, an override for every backend; otherwise
    ``device.memory_stats()`` (``bytes_limit - bytes_in_use``) where the backend reports it
    (GPU, TPU), else half the physical memory of the host (CPU).
    """
    device = device or jax.devices()[0]
    env = os.environ.get("LLJAX_DEVICE_MEMORY")
    if env:
        return int(float(env)), "LLJAX_DEVICE_MEMORY"
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # pragma: no cover - backends without the call
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)), "memory_stats"
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        phys = 8 * 2**30
    return int(phys // 2), "half of host RAM"


def _tree_bytes(tree) -> int:
    return int(
        sum(
            math.prod(x.shape) * np.dtype(x.dtype).itemsize
            for x in jax.tree.leaves(tree)
            if not _is_key_struct(x)
        )
    )


def _is_key_struct(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _jaxpr_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if aval is not None and hasattr(aval, "shape") and not _is_key_struct(aval):
                total += math.prod(aval.shape) * np.dtype(aval.dtype).itemsize
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _jaxpr_bytes(inner)
    return total


def _dtype(x):
    return x.dtype if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else np.dtype(x.dtype)


@functools.lru_cache(maxsize=64)
def _estimate_bytes(loss_fn, optimizer, params_spec, hp_spec, x, y, xe, ye):
    """Traces (never compiles) one step and one evaluation; cached per configuration so
    repeated ``train`` calls do not retrace."""

    def structs(spec):
        treedef, leaves = spec
        return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])

    loss_fn, optimizer = _static.unwrap(loss_fn), _static.unwrap(optimizer)
    params, hyperparams = structs(params_spec), structs(hp_spec)
    state = jax.eval_shape(
        lambda p, hp: train_lib.init_state(p, optimizer, key=jr.key(0), hyperparams=hp),
        params,
        hyperparams,
    )
    batch = (jax.ShapeDtypeStruct(*x), jax.ShapeDtypeStruct(*y))
    step = jax.make_jaxpr(jax.value_and_grad(loss_fn))(state.params, batch).jaxpr
    ev = jax.make_jaxpr(loss_fn)(
        state.params, (jax.ShapeDtypeStruct(*xe), jax.ShapeDtypeStruct(*ye))
    ).jaxpr
    b_state = _tree_bytes(state.params) + _tree_bytes(state.opt_state)
    return b_state, max(_jaxpr_bytes(step), _jaxpr_bytes(ev))


def memory_estimate(
    loss_fn: Callable,
    params: Params,
    optimizer,
    data: data_lib.Dataset,
    *,
    batch_size: int,
    hyperparams: Mapping[str, Any] | None = None,
    eval_batch_size: int | None = None,
    device: jax.Device | None = None,
) -> MemoryEstimate:
    """Bytes per member of a training run and how many members fit on one device.

    Args:
      loss_fn, optimizer, data, batch_size: as for :func:`train`.
      params: params of ONE member (or shape structs).
      hyperparams: one member's hyperparameters (for a factory optimizer).
      eval_batch_size: evaluation batch (``None``: each split whole, as :func:`train`
        evaluates the train and test splits), also bounded.
      device: the device (default: the first).

    Examples:
      >>> import jax, optax, lljax as ll
      >>> model = ll.models.mlp([4, 8, 3])
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_classes=3, dim=4)
      >>> est = ll.ensemble.memory_estimate(ll.losses.cross_entropy(model),
      ...     model.init(jax.random.key(1)), optax.adam(1e-3), data, batch_size=32)
      >>> est.bytes_state, est.max_members > 1000
      (808, True)
    """

    def spec(tree):
        leaves, treedef = jax.tree.flatten(tree)
        return treedef, tuple((tuple(np.shape(x)), _dtype(x)) for x in leaves)

    # Evaluation runs on both splits, each whole unless eval_batch_size bounds it.
    n_eval = max(data.num_train, data.num_test)
    n_eval = n_eval if eval_batch_size is None else min(eval_batch_size, n_eval)
    b_state, b_step = _estimate_bytes(
        _static.Static(loss_fn),
        _static.Static(optimizer),
        spec(params),
        spec(dict(hyperparams or {})),
        ((batch_size, *data.x_train.shape[1:]), _dtype(data.x_train)),
        ((batch_size, *data.y_train.shape[1:]), _dtype(data.y_train)),
        ((n_eval, *data.x_test.shape[1:]), _dtype(data.x_test)),
        ((n_eval, *data.y_test.shape[1:]), _dtype(data.y_test)),
    )
    per = 2 * b_state + b_step
    avail, source = available_memory(device)
    return MemoryEstimate(
        b_state, b_step, per, avail, max(0, int(0.8 * avail) // max(per, 1)), source
    )


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _run_population(loss_fn, optimizer, data, state, *, num_steps, batch_size, log_every, sampling):
    def one(s):
        return train_lib.run(
            loss_fn,
            optimizer,
            data,
            s,
            num_steps=num_steps,
            batch_size=batch_size,
            log_every=log_every,
            sampling=sampling,
        )

    return jax.vmap(one)(state)


_run_population_jit = _static.jit(_run_population, static_argnames=train_lib._RUN_STATIC)


def _hyperparams(hyperparams, m: int) -> dict:
    out = {}
    for name, v in dict(hyperparams or {}).items():
        arr = train_lib._hyperparam(name, v)
        if arr.ndim == 0:
            arr = jnp.broadcast_to(arr, (m,))
        if arr.shape[0] != m:
            raise ValueError(
                f"hyperparams[{name!r}]: expected a scalar or a leading axis of num_members={m}, "
                f"got shape {arr.shape}"
            )
        out[name] = arr
    return out


def _pad(tree, m_padded: int):
    m = _num_members(tree)
    if m == m_padded:
        return tree
    return _tree_index(tree, np.minimum(np.arange(m_padded), m - 1))


_SHARED_HISTORY = ("step", "eval_step")  # history entries without a member axis


def _unpad(state, history: dict, m: int):
    """Drops the members past ``m`` (the padding that lets the devices divide the axis)."""
    if _num_members(state.step) == m:
        return state, history
    history = {
        k: v if k in _SHARED_HISTORY or not np.ndim(v) else v[:m] for k, v in history.items()
    }
    return _tree_index(state, np.arange(m)), history


def _pad_rows(name: str, v, m_padded: int):
    """A loaded history entry padded, as the state is, with copies of the last member."""
    if name in _SHARED_HISTORY or not np.ndim(v) or len(v) == m_padded:
        return v
    return v[np.minimum(np.arange(m_padded), len(v) - 1)]


def train(
    model,
    loss_fn: Callable,
    optimizer,
    data: data_lib.Dataset,
    *,
    key: jax.Array | None = None,
    keys: jax.Array | None = None,
    num_members: int | None = None,
    steps: int,
    batch_size: int,
    init_keys: jax.Array | None = None,
    data_keys: jax.Array | None = None,
    same_data_order: bool = False,
    params: Params | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    log_every: int = 1,
    eval_every: int | None = None,
    eval_fn: Callable | None = None,
    eval_splits: tuple[str, ...] = ("train", "test"),
    eval_batch_size: int | None = None,
    chunk_size: int | None = None,
    member_chunk_size: int | None = None,
    shard: bool = False,
    mesh: Mesh | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    sampling: str = "epoch",
    on_nonfinite: str = "raise",
) -> Population:
    """Trains a population in one compiled program: ``vmap`` of :func:`lljax.train.run`.

    Args:
      model: a :class:`~lljax.models.Model` (its ``init`` makes each member's params);
        may be ``None`` when ``params`` is given.
      loss_fn: ``loss_fn(params, (x, y)) -> scalar`` for one member.
      optimizer: an optax transformation, or a factory of the ``hyperparams`` (module
        docstring). Part of the compiled program's identity, compared by value: a new
        ``optax.sgd(0.1)`` in a later call reuses the program, ``optax.sgd(0.2)`` compiles
        again (values that change between calls belong in ``hyperparams``).
      data: a :class:`~lljax.data.Dataset`, shared by all members.
      key: population key; member ``i`` uses ``fold_in(key, i)``. Needs ``num_members``.
      keys: explicit member keys ``(members,)`` instead of ``key``.
      num_members: population size (with ``key``).
      steps, batch_size, log_every, eval_every, eval_fn, eval_splits, eval_batch_size,
        chunk_size, checkpoint_dir, checkpoint_every, progress, sampling: as for
        :func:`lljax.train.fit`.
      init_keys: override the init keys ``(members,)``.
      data_keys: override the data-order keys ``(members,)``.
      same_data_order: all members use member 0's data order.
      params: initial stacked params ``(members, ...)`` instead of ``model.init``.
      hyperparams: dict of ``(members,)`` arrays (or scalars) for the optimizer.
      member_chunk_size: members per vmapped call; default: all that fit in memory
        (:func:`memory_estimate`).
      shard: split members across all devices (``mesh`` for a given mesh).
      mesh: a ``Mesh`` with a ``"member"`` axis.
      on_nonfinite: ``"raise"`` (:class:`lljax.train.NonFiniteLossError` naming steps and
        members) or ``"flag"`` (record ``history["diverged_step"]`` and go on; useful in
        learning-rate sweeps where divergence is a result).

    Returns:
      A :class:`Population`.

    Raises:
      ValueError: bad arguments, naming the argument.
      MemoryError: not even the population's parameters and optimizer states fit.

    Examples:
      >>> import jax, optax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
      >>> model = ll.models.mlp([2, 8, 2])
      >>> pop = ll.ensemble.train(model, ll.losses.cross_entropy(model), optax.sgd(0.1), data,
      ...                         key=jax.random.key(1), num_members=3, steps=10, batch_size=16,
      ...                         progress=False)
      >>> pop.num_members, pop.history["loss"].shape, pop.history["test_accuracy"].shape
      (3, (3, 10), (3, 1))
    """
    steps, batch_size, log_every, eval_every, checkpoint_every, chunk_size = (
        train_lib._check_common(
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
    )
    if on_nonfinite not in ("raise", "flag"):
        raise ValueError(f"on_nonfinite: expected 'raise' or 'flag', got {on_nonfinite!r}")
    if not (isinstance(optimizer, optax.GradientTransformation) or callable(optimizer)):
        raise ValueError("optimizer: expected an optax.GradientTransformation or a factory")
    for s in eval_splits:
        if s not in ("train", "test"):
            raise ValueError(f"eval_splits: expected 'train'/'test', got {s!r}")
    t0 = time.perf_counter()

    # Keys: member keys -> (init, data) keys, each overridable.
    if (
        keys is None
        and key is None
        and data_keys is not None
        and (init_keys is not None or params is not None)
    ):
        mkeys = ik = dk = None
        m = _as_keys(data_keys, "data_keys").shape[0]
    elif keys is None and key is not None:  # the common case: one dispatch for all keys
        m = train_lib._check_int(num_members, "num_members")
        mkeys, ik, dk = _member_keys_and_halves(train_lib.as_key(key), m)
    else:
        mkeys = _resolve_member_keys(key, keys, num_members)
        m = mkeys.shape[0]
        ik, dk = _split_member_keys(mkeys)
    if num_members is not None and num_members != m:
        raise ValueError(f"num_members: {num_members} but {m} keys were given")
    if init_keys is not None:
        ik = _as_keys(init_keys, "init_keys", m)
    if data_keys is not None:
        dk = _as_keys(data_keys, "data_keys", m)
    if same_data_order:
        dk = _tree_index(dk, np.zeros(m, np.int32))
    if params is not None:
        if init_keys is not None:
            raise ValueError("init_keys: unused when params= is given; pass one or the other")
        if _num_members(params) != m:
            raise ValueError(f"params: leading axis {_num_members(params)} != {m} members")
        train_lib._check_finite_params(params)
        ik = None
    elif model is None:
        raise ValueError("model: needed to initialise params (or pass params=)")
    hp = _hyperparams(hyperparams, m)

    # Devices and memory.
    if mesh is None and shard:
        mesh = member_mesh()
    if mesh is not None and MEMBER_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh: needs an axis named {MEMBER_AXIS!r}, has {mesh.axis_names}")
    num_dev = mesh.shape[MEMBER_AXIS] if mesh is not None else 1
    m_pad = -(-m // num_dev) * num_dev
    one_params = (
        jax.tree.map(lambda x: x[0], params)
        if params is not None
        else jax.eval_shape(model.init, _key_spec())
    )
    one_hp = {k: v[0] for k, v in hp.items()}
    if member_chunk_size is None:
        est = memory_estimate(
            loss_fn,
            one_params,
            optimizer,
            data,
            batch_size=batch_size,
            hyperparams=one_hp,
            eval_batch_size=eval_batch_size,
        )
        per_dev = m_pad // num_dev
        if per_dev * 2 * est.bytes_state > 0.8 * est.bytes_available:
            raise MemoryError(
                f"num_members: {m} members need {per_dev * 2 * est.bytes_state / 2**30:.2f} GiB "
                f"of parameters and optimizer state per device, more than the "
                f"{est.bytes_available / 2**30:.2f} GiB available ({est.source}); at most "
                f"{int(0.8 * est.bytes_available / (2 * est.bytes_state))} fit per device"
            )
        free = 0.8 * est.bytes_available - per_dev * 2 * est.bytes_state
        fit_per_dev = max(1, int(free // max(est.bytes_step, 1)))
        member_chunk_size = None if fit_per_dev >= per_dev else fit_per_dev * num_dev
    else:
        member_chunk_size = train_lib._check_int(member_chunk_size, "member_chunk_size")
        if member_chunk_size % num_dev:
            raise ValueError(
                f"member_chunk_size: {member_chunk_size} must be a multiple of the "
                f"{num_dev} devices"
            )
        if member_chunk_size >= m_pad:
            member_chunk_size = None

    # Initial state (padded so the member axis divides the devices).
    dk_pad, hp_pad = _pad(dk, m_pad), _pad(hp, m_pad) if hp else {}
    if params is not None:
        state = _init_states_jit(None, optimizer, _pad(params, m_pad), None, dk_pad, hp_pad)
    else:
        state = _init_states_jit(model, optimizer, None, _pad(ik, m_pad), dk_pad, hp_pad)
    if mesh is not None:
        state = _place(state, mesh)
        data = train_lib._put(data, NamedSharding(mesh, P()))

    history: dict = {}
    start = 0  # known without waiting for the device, unless a checkpoint is loaded
    if checkpoint_dir is not None:
        meta = {
            "kind": "ensemble",
            "num_members": m,
            "batch_size": batch_size,
            "sampling": sampling,
            "log_every": log_every,
            "keys": train_lib.fingerprint((ik, dk)),
            "hyperparams": train_lib.fingerprint(hp),
            "init": train_lib.fingerprint(params) if params is not None else "model.init",
            **train_lib._resume_meta(data, eval_splits, eval_every),
        }
        # Checkpoints hold the m real members (not the padding for this device count).
        template = _unpad(state, {}, m)[0]
        loaded = train_lib.load_checkpoint(checkpoint_dir, template, meta=meta)
        if loaded is not None:
            state, history, _ = loaded
            state = state._replace(
                opt_state=train_lib.with_given_hyperparameters(state.opt_state, template.opt_state)
            )
            state = _pad(state, m_pad)
            if mesh is not None:
                state = _place(state, mesh)
            history = {k: _pad_rows(k, v, m_pad) for k, v in history.items() if k != "wall_time"}
            start = int(np.max(train_lib._to_host(state.step)))
    if start > steps:
        raise ValueError(f"steps: {steps} is less than the {start} steps already checkpointed")

    eval_member = train_lib._EvalSplits(
        eval_fn or train_lib.metrics_fn(loss_fn, accuracy=data.num_classes > 0),
        tuple(eval_splits),
        eval_batch_size,
    )

    def evaluate_fn(p):
        out = _chunked(lambda sub: _vmapped_jit(eval_member, sub, data), p, member_chunk_size, mesh)
        return train_lib._tree_to_host(out)

    def run_chunk(s, n):
        def apply(sub):
            return _run_population_jit(
                loss_fn,
                optimizer,
                data,
                sub,
                num_steps=n,
                batch_size=batch_size,
                log_every=log_every,
                sampling=sampling,
            )

        return _chunked(apply, s, member_chunk_size, mesh)

    def checkpoint(s, h):
        train_lib.save_checkpoint(checkpoint_dir, *_unpad(s, h, m), meta=meta)

    eval_points = {steps} | (set(range(0, steps + 1, eval_every)) if eval_every else set())
    ckpt_points = {steps} | (
        set(range(0, steps + 1, checkpoint_every))
        if checkpoint_every
        else set(train_lib.segment_ends(start, steps, chunk_size, eval_every))
    )
    state, history = train_lib._drive(
        state=state,
        history=history,
        steps=steps,
        ends=train_lib.segment_ends(start, steps, chunk_size, eval_every, checkpoint_every),
        run_chunk=run_chunk,
        evaluate_fn=evaluate_fn if eval_splits else None,
        eval_points=eval_points,
        checkpoint=checkpoint if checkpoint_dir is not None else None,
        checkpoint_points=ckpt_points,
        log_every=log_every,
        on_nonfinite=on_nonfinite,
        progress=train_lib._Progress(steps, start, progress, label=f"ensemble[{m}]"),
        start=start,
        num_members=m,
    )

    state, history = _unpad(state, history, m)
    history["wall_time"] = np.asarray(time.perf_counter() - t0)
    return Population(
        state.params, state.opt_state, history, mkeys, ik, state.key, state.hyperparams, state
    )


# --------------------------------------------------------------------------------------
# Analysis: per-member table and rank correlations
# --------------------------------------------------------------------------------------


def weight_norm(params, data=None) -> jax.Array:
    """Euclidean norm of all parameters of one member.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> float(ll.ensemble.weight_norm({"w": jnp.array([[3.0]]), "b": jnp.array([4.0])}))
      5.0
    """
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(params)))


MEASURES: dict[str, Callable] = {"weight_norm": weight_norm}


def register_measure(name: str, fn: Callable) -> Callable:
    """Registers ``fn(params, data) -> scalar`` (one member) for :func:`summary` by name.

    Other modules register their measures here (e.g. a top Hessian eigenvalue); the
    function must be jit- and vmap-compatible.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> def l1_norm(params, data):
      ...     return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(params))
      >>> _ = ll.ensemble.register_measure("l1_norm", l1_norm)
      >>> "l1_norm" in ll.ensemble.MEASURES  # now usable as summary(..., measures=["l1_norm"])
      True
      >>> del ll.ensemble.MEASURES["l1_norm"]  # the registry is a plain dict
    """
    if not callable(fn):
        raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
    if name == "weight_norm" and fn is not weight_norm:
        raise ValueError("name: 'weight_norm' is a built-in column of summary; pick another")
    MEASURES[name] = fn
    return fn


class RankCorrelation(NamedTuple):
    """A rank correlation with a percentile-bootstrap confidence interval.

    Attributes:
      value: the estimate on the whole sample.
      low, high: the ``confidence`` percentile-bootstrap interval (NaN without a key).
      stderr: bootstrap standard deviation (NaN without a key).
      method: ``"kendall"`` (τ-b) or ``"spearman"`` (ρ, average ranks for ties).
      n: number of pairs.
      confidence: the interval's level.
    """

    value: float
    low: float
    high: float
    stderr: float
    method: str
    n: int
    confidence: float


# Both statistics take optional multiplicities ``w`` (a bootstrap resample as counts per
# member): the result equals the statistic of the list with member i repeated w_i times.


def _kendall_tau_b(a, b, xp=jnp, w=None):
    w = xp.ones(a.shape[0], a.dtype) if w is None else w
    ww = w[:, None] * w[None, :]
    n = xp.sum(w)
    da = xp.sign(a[:, None] - a[None, :])
    db = xp.sign(b[:, None] - b[None, :])
    n0 = n * (n - 1) / 2
    num = xp.sum(ww * da * db) / 2
    ties_a = (xp.sum(ww * (da == 0)) - n) / 2
    ties_b = (xp.sum(ww * (db == 0)) - n) / 2
    return num / xp.sqrt((n0 - ties_a) * (n0 - ties_b))


def _average_ranks(a, xp=jnp, w=None):
    w = xp.ones(a.shape[0], a.dtype) if w is None else w
    less = xp.sum(w[None, :] * (a[None, :] < a[:, None]), axis=1)
    equal = xp.sum(w[None, :] * (a[None, :] == a[:, None]), axis=1)
    return less + (equal + 1) / 2


def _spearman_rho(a, b, xp=jnp, w=None):
    w = xp.ones(a.shape[0], a.dtype) if w is None else w
    ra, rb = _average_ranks(a, xp, w), _average_ranks(b, xp, w)
    n = xp.sum(w)
    ra, rb = ra - xp.sum(w * ra) / n, rb - xp.sum(w * rb) / n
    return xp.sum(w * ra * rb) / xp.sqrt(xp.sum(w * ra * ra) * xp.sum(w * rb * rb))


_CORRELATIONS = {"kendall": _kendall_tau_b, "spearman": _spearman_rho}


def _bootstrap(stat_name, a, b, counts):
    stat = _CORRELATIONS[stat_name]
    return jax.lax.map(lambda w: stat(a, b, jnp, w), counts, batch_size=32)


_bootstrap_jit = jax.jit(_bootstrap, static_argnums=0)


def rank_correlation(
    a,
    b,
    *,
    method: str = "kendall",
    key: jax.Array | None = None,
    num_bootstrap: int = 1000,
    confidence: float = 0.95,
    groups=None,
) -> RankCorrelation:
    """Kendall τ-b or Spearman ρ between two per-member measures, with a bootstrap CI.

    The point estimate is computed in float64 NumPy (it equals ``scipy.stats.kendalltau``
    / ``spearmanr``); the percentile bootstrap resamples members with replacement
    (``num_bootstrap`` resamples drawn from ``key``; resamples without variation are
    skipped). NaN entries (e.g. diverged members) are dropped pairwise.

    Members that share randomness (runs spawned from one parent, or sharing an init) are
    not independent samples, and resampling them one by one gives too narrow an interval;
    give their common label in ``groups`` and whole groups are resampled instead (the
    cluster bootstrap).

    Args:
      a, b: arrays ``(members,)`` (or any one shape up to axes of length 1, paired element
        by element).
      method: ``"kendall"`` or ``"spearman"``.
      key: bootstrap key; ``None`` skips the interval.
      num_bootstrap: number of resamples.
      confidence: interval level in (0, 1).
      groups: optional labels ``(members,)``; members with equal labels are resampled
        together. At least two groups are needed for an interval.

    Examples:
      >>> import jax, lljax as ll
      >>> r = ll.ensemble.rank_correlation([1., 2, 3, 4, 5], [1., 3, 2, 4, 5],
      ...                                  key=jax.random.key(0), num_bootstrap=200)
      >>> round(r.value, 4), r.low <= r.value <= r.high
      (0.8, True)

    References:
      Kendall (1945), "The treatment of ties in ranking problems" (τ-b);
      Efron & Tibshirani (1993), "An Introduction to the Bootstrap" (percentile interval);
      Davison & Hinkley (1997), "Bootstrap Methods and their Application", §3.8 (clusters).
    """
    if method not in _CORRELATIONS:
        raise ValueError(f"method: expected 'kendall' or 'spearman', got {method!r}")
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.squeeze(a64).shape != np.squeeze(b64).shape:  # (2, 3) against (6,) pairs nothing
        raise ValueError(f"b: shape {b64.shape} differs from a's {a64.shape}")
    a64, b64 = a64.ravel(), b64.ravel()
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    if groups is not None and np.size(groups) != a64.size:
        raise ValueError(
            f"groups: expected one label per member ({a64.size}), got {np.size(groups)}"
        )
    ok = np.isfinite(a64) & np.isfinite(b64)
    a64, b64 = a64[ok], b64[ok]
    num_bootstrap = train_lib._check_int(num_bootstrap, "num_bootstrap", low=0)
    n = int(a64.shape[0])
    if n < 2:
        raise ValueError(f"a: need at least 2 finite pairs, got {n}")
    # member -> group index; without groups every member is its own group
    _, member_group = np.unique(
        np.arange(n) if groups is None else np.asarray(groups).ravel()[ok], return_inverse=True
    )
    num_groups = int(member_group.max()) + 1
    if groups is not None and num_groups < 2 and key is not None and num_bootstrap > 0:
        raise ValueError("groups: need at least 2 groups to resample, got 1")
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(_CORRELATIONS[method](a64, b64, xp=np))
    low = high = stderr = float("nan")
    if key is not None and num_bootstrap > 0:
        num_bootstrap = int(num_bootstrap)
        picks = jr.randint(train_lib.as_key(key), (num_bootstrap, num_groups), 0, num_groups)
        drawn = jnp.zeros((num_bootstrap, num_groups), jnp.float32)
        drawn = drawn.at[jnp.arange(num_bootstrap)[:, None], picks].add(1.0)
        counts = drawn[:, member_group]  # a member appears as often as its group is drawn
        # Both statistics depend on order and ties alone: dense ranks carry them exactly in
        # float32, where the values themselves could round into false ties.
        ra, rb = (np.unique(v, return_inverse=True)[1].astype(np.float32) for v in (a64, b64))
        boot = np.asarray(_bootstrap_jit(method, jnp.asarray(ra), jnp.asarray(rb), counts))
        boot = boot[np.isfinite(boot)]
        if boot.size:
            q = 100 * np.array([(1 - confidence) / 2, (1 + confidence) / 2])
            low, high = (float(v) for v in np.percentile(boot, q))
            stderr = float(np.std(boot, ddof=1)) if boot.size > 1 else float("nan")
    return RankCorrelation(value, low, high, stderr, method, n, float(confidence))


@dataclasses.dataclass
class Summary:
    """A per-member table: ``columns`` maps a name to a ``(members,)`` numpy array."""

    columns: dict

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def rows(self, *, finite: bool = True) -> list[dict]:
        """Per-member records of Python scalars; non-finite floats become ``None`` unless
        ``finite=False``."""
        return [{k: _py(v[i], finite) for k, v in self.columns.items()} for i in range(len(self))]

    def to_json(self, path: str | None = None) -> str:
        """The table as a JSON list of per-member records (written to ``path`` if given);
        JSON has no NaN or infinity, so non-finite values are ``null``."""
        text = json.dumps(self.rows(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path: str | None = None) -> str:
        """The table as CSV with a header row (written to ``path`` if given); non-finite
        values as ``nan``, ``inf``, ``-inf``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.names)
        for row in self.rows(finite=False):
            w.writerow([row[k] for k in self.names])
        if path is not None:
            with open(path, "w") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def rank_correlation(self, a: str, b: str, **kwargs) -> RankCorrelation:
        """:func:`rank_correlation` between two columns."""
        return rank_correlation(self.columns[a], self.columns[b], **kwargs)

    def __str__(self) -> str:
        names = self.names
        cells = [[_fmt(self.columns[k][i]) for k in names] for i in range(len(self))]
        widths = [builtins.max(len(k), *(len(r[j]) for r in cells)) for j, k in enumerate(names)]
        line = "  ".join(k.rjust(w) for k, w in zip(names, widths, strict=True))
        body = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
        return "\n".join([line, *body])


def _py(v, finite: bool = True):
    a = np.asarray(v)
    # The shortest decimal that round-trips in the column's precision: a float32 0.1 is
    # written 0.1, not 0.10000000149011612.
    v = float(str(a[()])) if a.dtype.kind == "f" else a.item()
    return None if finite and isinstance(v, float) and not math.isfinite(v) else v


def _fmt(v) -> str:
    v = np.asarray(v).item()
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class _Measures:
    fns: tuple[tuple[str, Callable], ...]

    def __call__(self, params, data):
        return {name: jnp.asarray(fn(params, data)) for name, fn in self.fns}


def summary(
    population: Population | Params,
    loss_fn: Callable,
    data: data_lib.Dataset,
    *,
    measures: Sequence[str] | Mapping[str, Callable] | None = None,
    eval_fn: Callable | None = None,
    chunk_size: int | None = None,
    eval_batch_size: int | None = None,
) -> Summary:
    """A per-member table of the final params: losses, accuracies, gap, norm, measures.

    Columns: ``member``; any scalar per-member hyperparameters; ``train_loss``,
    ``test_loss`` (and ``train_accuracy``, ``test_accuracy`` for data with classes) on
    the whole splits; ``gap`` (test − train loss); ``weight_norm``; each measure; and
    ``diverged_step`` when the run flagged divergence.

    Args:
      population: a :class:`Population` or stacked params.
      loss_fn: the per-member loss (from :mod:`lljax.losses` for accuracies).
      data: the dataset.
      measures: names in :data:`MEASURES` or a dict name -> ``fn(params, data)``.
      eval_fn: custom metrics (see :func:`lljax.train.fit`).
      chunk_size: members per vmapped call (see :func:`map`).
      eval_batch_size: evaluation batch size.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=64, num_test=32)
      >>> model = ll.models.mlp([2, 8, 2])
      >>> params = ll.ensemble.init(model, key=jax.random.key(1), num_members=3)  # or a Population
      >>> table = ll.ensemble.summary(params, ll.losses.cross_entropy(model), data)
      >>> table.names, table["test_loss"].shape
      (['member', 'train_loss', 'test_loss', 'train_accuracy', 'test_accuracy', 'gap',
        'weight_norm'], (3,))
    """
    params = population.params if isinstance(population, Population) else population
    m = _num_members(params)
    eval_member = train_lib._EvalSplits(
        eval_fn or train_lib.metrics_fn(loss_fn, accuracy=data.num_classes > 0),
        ("train", "test"),
        eval_batch_size,
    )
    fns = [("weight_norm", weight_norm)]
    if isinstance(measures, Mapping):
        fns += list(measures.items())
    else:
        for name in measures or ():
            if name not in MEASURES:
                raise ValueError(f"measures: unknown {name!r}; registered: {sorted(MEASURES)}")
            fns.append((name, MEASURES[name]))
    names = [n for n, _ in fns]
    for name in names[1:]:  # dict(fns) below would let a repeat replace the first silently
        if names.count(name) > 1:
            raise ValueError(f"measures: {name!r} is already a column of the summary")
    cols: dict = {"member": np.arange(m)}

    def add(source, values):
        # One column per name: a measure or hyperparameter never silently replaces another.
        for k, v in values.items():
            if k in cols:
                raise ValueError(f"{source}: {k!r} is already a column of the summary")
            cols[k] = train_lib._to_host(v)
            if np.shape(cols[k]) != (m,):
                raise ValueError(
                    f"{source}: {k!r} must give one number per member (shape ({m},) for the "
                    f"population), got shape {np.shape(cols[k])}"
                )

    if isinstance(population, Population):
        add(
            "hyperparams",
            {
                k: v
                for k, v in population.hyperparams.items()
                if not jnp.issubdtype(v.dtype, jax.dtypes.prng_key) and v.ndim == 1
            },
        )
    ev = map(eval_member, params, data, chunk_size=chunk_size)
    order = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
    add("eval_fn", {k: ev.pop(k) for k in order if k in ev})
    if "train_loss" in cols and "test_loss" in cols:
        add("eval_fn", {"gap": cols["test_loss"] - cols["train_loss"]})
    add("eval_fn", ev)
    add("measures", map(_Measures(tuple(dict(fns).items())), params, data, chunk_size=chunk_size))
    if isinstance(population, Population) and "diverged_step" in population.history:
        add("history", {"diverged_step": population.history["diverged_step"]})
    return Summary(cols)


__all__ = [
    "Population",
    "init",
    "train",
    "map",
    "member_keys",
    "member_mesh",
    "shard",
    "memory_estimate",
    "available_memory",
    "MemoryEstimate",
    "summary",
    "Summary",
    "rank_correlation",
    "RankCorrelation",
    "register_measure",
    "MEASURES",
    "weight_norm",
]
