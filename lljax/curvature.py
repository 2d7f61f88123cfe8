"""Curvature as matrix-free linear operators over flat parameter vectors.

An :class:`Operator` is a ``matvec`` closure over vectors of length ``size`` (the params
pytree raveled once), with its dtype, a way to and from pytrees (``ravel``/``unravel``) and
``dense()`` for small models and tests. Spectra algorithms (:mod:`lljax.spectrum`) take any
operator.

Builders:

- :func:`hessian`: forward-over-reverse Hessian-vector products (``jvp`` of ``grad``).
- :func:`ggn`: generalised Gauss–Newton ``Jᵀ H_out J`` through the model and the loss's
  output-space Hessian (closed forms for softmax cross-entropy and squared error).
- :func:`fisher`: Monte-Carlo Fisher with targets sampled from the model's predictive
  distribution; :func:`empirical_fisher`: ``Gᵀ G / n`` from per-example gradients.
- :func:`restrict` / :func:`blocks`: any operator on a subset of the params pytree
  (per-layer spectra).

**One batch or a whole dataset.** ``batch`` is an ``(x, y)`` pair (or a
:class:`~lljax.data.Dataset`, whose training split is used). Without ``batch_size`` the
operator is that of the loss on this one batch. With ``batch_size=b`` the arrays are a whole
dataset: the operator is that of the mean loss over all examples, accumulated over batches of
``b`` inside one ``lax.scan`` (memory bounded by the batch), as a sum of per-example
contributions divided by the number of examples. A ragged final batch is padded with weight-0
copies of real examples, so every example counts once and the result equals the full-batch
operator. With ``mesh=`` the batches are split over the mesh's devices and the numerators and
denominators summed across them (``shard_map`` + ``psum``). Dataset operators treat examples
as independent (per-example losses from ``loss_fn.model``/``loss_fn.per_example``, or
``loss_fn`` on one example at a time): for BatchNorm models pass population statistics
(``stats=``).

**Model state is explicit.** Extra keyword arguments (``stats=`` for BatchNorm population
statistics, a dropout key under the model's own argument name) are passed unchanged to
``loss_fn`` (Hessian on one batch) or to ``model.apply`` (everything else).

**Precision is explicit.** Every ``matvec`` runs under
``jax.default_matmul_precision(precision)``: ``"highest"`` (full float32) by default;
``"tensorfloat32"``, ``"bfloat16"``, ``"default"`` are faster, opt-in, and recorded in
:attr:`Operator.precision`. Float64 params give float64 operators (``jax_enable_x64``).

Every builder is a pure function of arrays: it works under ``jax.jit`` and under ``jax.vmap``
over a stacked population of params. Build the operator inside the jitted function, with
params and batch as its arguments (``jax.jit(lambda p, b, v: hessian(loss_fn, p, b) @ v)``):
jitting ``op.matvec`` of an operator built outside bakes params and data into the program as
constants, which XLA may then spend minutes constant-folding (ResNet-18 at batch 512: six).

Examples:
  >>> import jax, jax.numpy as jnp, lljax as ll
  >>> model = ll.models.mlp([3, 4, 2])
  >>> loss_fn = ll.losses.cross_entropy(model)
  >>> params = model.init(jax.random.key(0))
  >>> batch = (jnp.ones((5, 3)), jnp.array([0, 1, 0, 1, 1]))
  >>> H = ll.curvature.hessian(loss_fn, params, batch)
  >>> H.size, H.dense().shape, H.precision
  (26, (26, 26), 'highest')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lljax import losses as losses_lib
from lljax import train as train_lib

PRECISIONS = ("highest", "float32", "high", "tensorfloat32", "default", "bfloat16")


class Operator(NamedTuple):
    """A symmetric linear operator ``v -> A v`` on flat vectors.

    Attributes:
      matvec: ``matvec(v) -> A v`` for ``v`` of shape ``(size,)``.
      size: the dimension.
      dtype: dtype of vectors it acts on.
      unravel: flat vector -> params-shaped pytree (identity for plain matrices).
      name: what the operator is (``"hessian"``, ``"ggn"``, ...), recorded in results.
      precision: matmul precision used inside ``matvec`` (``"highest"`` by default).
      ravel: params-shaped pytree -> flat vector, the inverse of ``unravel``.
    """

    matvec: Callable[[jax.Array], jax.Array]
    size: int
    dtype: Any
    unravel: Callable[[jax.Array], Any] = lambda v: v
    name: str = "operator"
    precision: str = "highest"
    ravel: Callable[[Any], jax.Array] = lambda tree: tree

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
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        raise ValueError(f"a: expected a floating-point matrix, got dtype {a.dtype}")
    if not isinstance(a, jax.core.Tracer) and a.size:
        # Lanczos on a non-symmetric matrix returns confident nonsense; rounding (a dense()
        # of float32 products) stays far below sqrt(eps) of the largest entry.
        asym = float(jnp.max(jnp.abs(a - a.T)))
        if asym > float(jnp.finfo(a.dtype).eps) ** 0.5 * float(jnp.max(jnp.abs(a))):
            raise ValueError(f"a: expected a symmetric matrix, max |a − aᵀ| = {asym:.3g}")
    return Operator(lambda v: a @ v, int(a.shape[0]), a.dtype, name=name)


# --------------------------------------------------------------------------------------
# Public builders


def hessian(
    loss_fn: Callable,
    params: Any,
    batch: Any,
    *,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    precision: str = "highest",
    **loss_kwargs,
) -> Operator:
    """The Hessian of ``loss_fn`` at ``params`` as a matrix-free operator.

    Each ``matvec`` is one forward-over-reverse product (``jvp`` of ``grad``), about the
    cost of two gradients.

    Args:
      loss_fn: ``loss_fn(params, batch, **loss_kwargs) -> scalar`` (a mean over the batch).
      params: the point, a pytree (raveled once; the operator acts on flat vectors).
      batch: what ``loss_fn`` takes; an ``(x, y)`` pair or a Dataset for dataset operators.
      batch_size: if given, ``batch`` is a whole dataset, accumulated in batches of this size
        (see the module docstring). Uses ``loss_fn.model``/``loss_fn.per_example`` when
        present, else ``loss_fn`` one example at a time.
      mesh: a ``jax.sharding.Mesh``; batches are split over all of its devices.
      precision: matmul precision inside ``matvec``, one of :data:`PRECISIONS`.
      **loss_kwargs: passed to ``loss_fn`` (e.g. ``stats=`` for BatchNorm).

    Returns:
      An :class:`Operator` named ``"hessian"`` of the params' size and dtype.

    Raises:
      ValueError: for an unknown ``precision`` or a bad ``batch``/``batch_size``/``mesh``.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> loss_fn = lambda p, batch: jnp.sum(p["w"] ** 3)
      >>> H = ll.curvature.hessian(loss_fn, {"w": jnp.array([1.0, 2.0])}, None)
      >>> H.dense().tolist()
      [[6.0, 0.0], [0.0, 12.0]]
    """
    _check_precision(precision)
    if batch_size is None and mesh is None:
        batch = _train_split(batch)

        def grad_fn(p):
            return jax.grad(loss_fn)(p, batch, **loss_kwargs)

        def matvec_tree(p, t):
            return jax.jvp(grad_fn, (p,), (t,))[1]

        return _single_operator(matvec_tree, params, 1, "hessian", precision)

    losses_fn = _example_losses_fn(loss_fn, None, None, loss_kwargs)

    def kernel(p, t, x, y, w, index):
        weighted = lambda q: jnp.sum(w * losses_fn(q, x, y))
        return jax.jvp(jax.grad(weighted), (p,), (t,))[1]

    return _dataset_operator(kernel, params, batch, batch_size, mesh, "hessian", precision)


def ggn(
    loss_fn: Callable | None,
    params: Any,
    batch: Any,
    *,
    model: Any = None,
    per_example: Callable | None = None,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    precision: str = "highest",
    **loss_kwargs,
) -> Operator:
    """The generalised Gauss–Newton matrix ``(1/n) Σᵢ Jᵢᵀ Hᵢ Jᵢ``.

    ``Jᵢ`` is the Jacobian of the model's outputs on example ``i`` with respect to the
    params and ``Hᵢ`` the Hessian of its per-example loss with respect to those outputs:
    ``diag(p) − p pᵀ`` for softmax cross-entropy, the identity for squared error, autodiff of
    ``per_example`` otherwise. Each ``matvec`` is one ``jvp`` and one transposed ``jvp``
    (a single forward pass). Positive semidefinite for convex per-example losses; equal to the
    Hessian where the residuals vanish.

    Args:
      loss_fn: a loss with ``.model`` and ``.per_example`` attributes (as made by
        :mod:`lljax.losses`), or ``None`` when ``model`` and ``per_example`` are given.
      params: the point, a pytree.
      batch: an ``(x, y)`` pair (or a Dataset).
      model: a :class:`~lljax.models.Model` (or an ``apply(params, x, **kw)`` function),
        overriding ``loss_fn.model``.
      per_example: ``per_example(outputs, targets) -> (batch, ...)`` losses, overriding
        ``loss_fn.per_example``; trailing axes (e.g. sequence positions) are averaged.
      batch_size, mesh, precision: as in :func:`hessian`.
      **loss_kwargs: passed to ``model.apply`` (e.g. ``stats=``).

    Returns:
      An :class:`Operator` named ``"ggn"``.

    Raises:
      ValueError: if no model or per-example loss can be found, or for bad arguments.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([3, 2], init="lecun")
      >>> params = model.init(jax.random.key(0))
      >>> batch = (jnp.eye(3), jnp.zeros((3, 2)))
      >>> G = ll.curvature.ggn(ll.losses.mse(model), params, batch)
      >>> bool(jnp.linalg.eigvalsh(G.dense()).min() > -1e-6)
      True

    References:
      Schraudolph, "Fast curvature matrix-vector products for second-order gradient
      descent", Neural Computation 2002; Martens, arXiv:1412.1193.
    """
    _check_precision(precision)
    apply_fn, per_example = _resolve_model(loss_fn, model, per_example, "ggn")

    def kernel(p, t, x, y, w, index):
        out, jvp_fn = jax.linearize(lambda q: apply_fn(q, x, **loss_kwargs), p)
        hu = _output_hvp(per_example, out, y, jvp_fn(t)) * _expand(w, out)
        return jax.linear_transpose(jvp_fn, p)(hu)[0]

    return _dataset_operator(kernel, params, batch, batch_size, mesh, "ggn", precision)


def fisher(
    loss_fn: Callable | None,
    params: Any,
    batch: Any,
    *,
    key: jax.Array,
    num_samples: int = 1,
    sample_fn: Callable | None = None,
    model: Any = None,
    per_example: Callable | None = None,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    precision: str = "highest",
    **loss_kwargs,
) -> Operator:
    """Monte-Carlo Fisher ``(1/n) Σᵢ (1/m) Σₜ (1/S) Σₛ gᵢₜₛ gᵢₜₛᵀ`` with model-sampled targets.

    ``gᵢₜₛ`` is the gradient of loss element ``t`` of example ``i`` (one of the ``m``
    positions a per-example loss of shape ``(n, *positions)`` has, e.g. the tokens of
    ``(n, T, C)`` sequence logits; ``m = 1`` for a ``(n,)`` loss such as squared error) at a
    target ``ỹᵢₛ`` drawn from the model's predictive distribution: categorical
    ``softmax(f(xᵢ))`` for cross-entropy, ``N(f(xᵢ), I)`` for squared error (``½‖f − y‖²`` is
    that Gaussian's negative log-likelihood), or ``sample_fn``. This per-position Fisher's
    expectation over the samples is the GGN of the position-averaged loss (exactly, for these
    two losses); the outer product of the position-averaged gradient would be low by ``m``.
    The samples are drawn once from ``key`` (folded with the batch index), so the operator is
    a fixed symmetric matrix; the true labels are not used.

    Args:
      loss_fn, params, batch, model, per_example: as in :func:`ggn`.
      key: PRNG key for the sampled targets.
      num_samples: targets ``S`` per example (model passes per ``matvec`` do not grow with it).
      sample_fn: ``sample_fn(key, outputs) -> targets`` for other per-example losses.
      batch_size, mesh, precision: as in :func:`hessian`.
      **loss_kwargs: passed to ``model.apply``. (``key`` here is the sampling key.)

    Returns:
      An :class:`Operator` named ``"fisher"``; positive semidefinite with rank at most
      ``n·S·m``.

    Raises:
      ValueError: if targets cannot be sampled for ``per_example`` and no ``sample_fn`` is
        given, or for bad arguments.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([3, 2])
      >>> params = model.init(jax.random.key(0))
      >>> batch = (jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
      >>> F = ll.curvature.fisher(ll.losses.cross_entropy(model), params, batch,
      ...                         key=jax.random.key(1), num_samples=2)
      >>> F.matvec(jnp.ones(F.size)).shape
      (8,)

    References:
      Martens, "New insights and perspectives on the natural gradient method",
      arXiv:1412.1193; Kunstner et al., arXiv:1905.12558.
    """
    _check_precision(precision)
    apply_fn, per_example = _resolve_model(loss_fn, model, per_example, "fisher")
    sample_fn = _sampler(per_example, sample_fn)
    num_samples = train_lib._check_int(num_samples, "num_samples")
    key = train_lib.as_key(key)

    def kernel(p, t, x, y, w, index):
        out, jvp_fn = jax.linearize(lambda q: apply_fn(q, x, **loss_kwargs), p)
        ju = jvp_fn(t)
        fixed = jax.lax.stop_gradient(out)
        keys = jr.split(jr.fold_in(key, index), num_samples)
        targets = jax.vmap(lambda k: sample_fn(k, fixed))(keys)

        def one_sample(yt):
            # Σ_t g_t (g_tᵀ ju) over loss elements t (the positions of a sequence loss) as
            # one jvp and one vjp of the loss in output space, whatever the layout of the loss
            # axes. Divided by the m elements its expectation is (1/m) Σ_t H_t, the GGN; the
            # outer product of the position-averaged gradient would give (1/m²) Σ_t H_t.
            values, lin = jax.linearize(lambda o: per_example(o, yt), fixed)
            _check_example_losses(values)
            m = math.prod(values.shape[1:])
            dots = lin(ju) * (_expand(w, values) / m)
            return jax.linear_transpose(lin, fixed)(dots)[0]

        cot = jnp.mean(jax.vmap(one_sample)(targets), axis=0)
        return jax.linear_transpose(jvp_fn, p)(cot)[0]

    return _dataset_operator(kernel, params, batch, batch_size, mesh, "fisher", precision)


def empirical_fisher(
    loss_fn: Callable,
    params: Any,
    batch: Any,
    *,
    model: Any = None,
    per_example: Callable | None = None,
    batch_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    precision: str = "highest",
    **loss_kwargs,
) -> Operator:
    """The empirical Fisher ``Gᵀ G / n`` from the per-example gradients ``G`` (n × size).

    ``G v`` is one ``jvp`` of the vector of per-example losses and ``Gᵀ u`` its transpose,
    so ``G`` is never formed and memory stays bounded by the batch.

    Args:
      loss_fn: a loss; its ``.model``/``.per_example`` (or ``model=``/``per_example=``) give
        the per-example losses, otherwise ``loss_fn`` is applied to one example at a time.
      params, batch, model, per_example: as in :func:`ggn`.
      batch_size, mesh, precision: as in :func:`hessian`.
      **loss_kwargs: passed to ``model.apply`` (or to ``loss_fn``).

    Returns:
      An :class:`Operator` named ``"empirical_fisher"``.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([3, 2])
      >>> params = model.init(jax.random.key(0))
      >>> batch = (jnp.ones((4, 3)), jnp.array([0, 1, 0, 1]))
      >>> F = ll.curvature.empirical_fisher(ll.losses.cross_entropy(model), params, batch)
      >>> F.name, F.size
      ('empirical_fisher', 8)

    References:
      Kunstner et al., "Limitations of the empirical Fisher approximation",
      arXiv:1905.12558.
    """
    _check_precision(precision)
    losses_fn = _example_losses_fn(loss_fn, model, per_example, loss_kwargs)

    def kernel(p, t, x, y, w, index):
        _, jvp_fn = jax.linearize(lambda q: losses_fn(q, x, y), p)
        return jax.linear_transpose(jvp_fn, p)(w * jvp_fn(t))[0]

    return _dataset_operator(kernel, params, batch, batch_size, mesh, "empirical_fisher", precision)


def restrict(op: Operator, params: Any, select: str | Sequence[str] | Callable) -> Operator:
    """The diagonal block of ``op`` on a subset of the params: ``Pᵀ A P``.

    ``dense()`` of the result is the corresponding sub-block of ``op.dense()`` (rows and
    columns in raveled order). Each ``matvec`` costs one ``op.matvec``.

    Args:
      op: an operator over the raveled ``params`` (from :func:`hessian`, :func:`ggn`, ...).
      params: the params pytree ``op`` was built at (only its structure and shapes are used).
      select: which leaves: a key-path name or a list of them (``"Dense_0"``,
        ``["Dense_0", "Dense_1/bias"]``; components joined by ``/``, matching leaves whose
        path starts with them), or a predicate ``select(path) -> bool`` on the tuple of key
        names (``("Dense_0", "kernel")``).

    Returns:
      An :class:`Operator` named ``"{op.name}[...]"``; its ``unravel`` gives a full
      params-shaped pytree with zeros outside the block, its ``ravel`` picks the block.

    Raises:
      ValueError: if ``op`` does not match ``params``, a name matches no leaf, or nothing is
        selected.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(1)}
      >>> a = jnp.arange(9.0).reshape(3, 3)
      >>> op = ll.curvature.from_matrix(a + a.T)
      >>> ll.curvature.restrict(op, params, "b").dense().tolist()
      [[16.0]]
    """
    paths, sizes = _leaf_paths_and_sizes(params)
    total = sum(sizes)
    if op.size != total:
        raise ValueError(f"op: has size {op.size} but params ravel to {total} entries")
    selected, label = _selection(paths, select)
    offsets = np.cumsum([0, *sizes])
    idx = np.concatenate(
        [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes)) if selected[i]]
        + [np.zeros(0, np.int64)]
    )
    if idx.size == 0:
        raise ValueError(f"select: {label} selects no parameters")
    start, stop = int(idx[0]), int(idx[-1]) + 1
    if stop - start == idx.size:  # one contiguous run (e.g. a whole layer): slices, no gather
        embed = lambda u: jnp.zeros(total, u.dtype).at[start:stop].set(u)
        pick = lambda v: v[start:stop]
    else:
        embed = lambda u: jnp.zeros(total, u.dtype).at[idx].set(u)
        pick = lambda v: v[idx]
    return Operator(
        matvec=lambda u: pick(op.matvec(embed(_flat_vector(u, idx.size)))),
        size=int(idx.size),
        dtype=op.dtype,
        unravel=lambda u: op.unravel(embed(u)),
        name=f"{op.name}[{label}]",
        precision=op.precision,
        ravel=lambda tree: pick(op.ravel(tree)),
    )


def blocks(op: Operator, params: Any) -> dict[str, Operator]:
    """``{name: restrict(op, params, name)}`` for each top-level key of ``params`` that holds
    parameters (entries with no elements, e.g. a parameter-free layer, are skipped).

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> params = {"a": jnp.ones(2), "b": jnp.ones(1)}
      >>> ops = ll.curvature.blocks(ll.curvature.from_matrix(jnp.eye(3)), params)
      >>> {k: v.size for k, v in ops.items()}
      {'a': 2, 'b': 1}
    """
    paths, sizes = _leaf_paths_and_sizes(params)
    if not any(path for path in paths):
        raise ValueError("params: expected a pytree with named top-level entries (a dict)")
    sized = zip(paths, sizes, strict=True)
    names = list(dict.fromkeys(path[0] for path, size in sized if path and size))
    if not names:
        raise ValueError("params: no top-level entry holds any parameters")
    return {name: restrict(op, params, name) for name in names}


# --------------------------------------------------------------------------------------
# Output-space pieces


def _example_losses(per_example: Callable, outputs: jax.Array, targets: Any) -> jax.Array:
    """Per-example losses ``(batch,)``, averaging any trailing axes (as the mean loss does)."""
    values = _check_example_losses(per_example(outputs, targets))
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def _check_example_losses(values: jax.Array) -> jax.Array:
    if jnp.ndim(values) < 1:
        raise ValueError(
            f"per_example: expected per-example losses with a leading batch axis, got shape "
            f"{jnp.shape(values)}"
        )
    return values


def _output_hvp(per_example: Callable, outputs: jax.Array, targets: Any, u: jax.Array):
    """``H u`` for ``H`` the Hessian of ``Σᵢ ℓᵢ`` with respect to the outputs."""
    if per_example is losses_lib.softmax_cross_entropy:
        p = jax.nn.softmax(outputs, axis=-1)
        hu = p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)
        if not jnp.issubdtype(targets.dtype, jnp.integer):  # soft labels scale the Hessian
            hu = hu * jnp.sum(targets, axis=-1, keepdims=True)
        return hu / math.prod(outputs.shape[1:-1])  # trailing positions are averaged
    if per_example is losses_lib.squared_error:
        return u
    total = lambda o: jnp.sum(_example_losses(per_example, o, targets))
    return jax.jvp(jax.grad(total), (outputs,), (u,))[1]


def _sampler(per_example: Callable, sample_fn: Callable | None) -> Callable:
    if sample_fn is not None:
        return sample_fn
    if per_example is losses_lib.softmax_cross_entropy:
        return lambda key, out: jr.categorical(key, out, axis=-1)
    if per_example is losses_lib.squared_error:
        return lambda key, out: out + jr.normal(key, out.shape, out.dtype)
    raise ValueError(
        f"sample_fn: cannot sample targets for per_example={_name(per_example)}; pass "
        "sample_fn=(key, outputs) -> targets drawn from the model's predictive distribution"
    )


def _expand(a: jax.Array, like: jax.Array) -> jax.Array:
    """``a`` with trailing unit axes so it broadcasts against ``like`` (rank promotion off)."""
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


# --------------------------------------------------------------------------------------
# Resolving the loss


def _name(f: Any) -> str:
    return getattr(f, "__name__", type(f).__name__)


def _resolve_model(loss_fn, model, per_example, who: str) -> tuple[Callable, Callable]:
    model = model if model is not None else getattr(loss_fn, "model", None)
    per_example = per_example if per_example is not None else getattr(loss_fn, "per_example", None)
    if model is None or per_example is None:
        raise ValueError(
            f"loss_fn: {who} needs the model and its per-example loss; loss_fn "
            f"{_name(loss_fn)} has no .model/.per_example attributes (losses from lljax.losses "
            "have them), so pass model= and per_example= explicitly"
        )
    apply_fn = getattr(model, "apply", model)
    if not callable(apply_fn) or not callable(per_example):
        raise ValueError(
            f"model/per_example: expected a Model (or apply function) and a callable "
            f"per_example(outputs, targets), got {type(model).__name__} and "
            f"{type(per_example).__name__}"
        )
    return apply_fn, per_example


def _example_losses_fn(loss_fn, model, per_example, loss_kwargs):
    """``losses(params, x, y) -> (batch,)`` from the model, or ``loss_fn`` per example."""
    has_model = model is not None or getattr(loss_fn, "model", None) is not None
    has_per_example = per_example is not None or getattr(loss_fn, "per_example", None) is not None
    if has_model and has_per_example:
        apply_fn, per_example = _resolve_model(loss_fn, model, per_example, "per-example losses")
        return lambda p, x, y: _example_losses(per_example, apply_fn(p, x, **loss_kwargs), y)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: expected a callable loss_fn(params, batch), got {loss_fn!r}")

    def one(p, xi, yi):  # a batch of one example; assumes no coupling between examples
        one_batch = jax.tree.map(lambda a: a[None], (xi, yi))
        return loss_fn(p, one_batch, **loss_kwargs)

    return lambda p, x, y: jax.vmap(one, in_axes=(None, 0, 0))(p, x, y)


# --------------------------------------------------------------------------------------
# Assembling operators


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")


def _train_split(batch: Any) -> Any:
    if hasattr(batch, "x_train") and hasattr(batch, "y_train"):
        return batch.x_train, batch.y_train
    return batch


def _xy(batch: Any) -> tuple[Any, Any, int]:
    batch = _train_split(batch)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"batch: expected an (x, y) pair or a Dataset, got {type(batch).__name__}")
    x, y = batch
    sizes = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in jax.tree.leaves((x, y))}
    if len(sizes) != 1 or -1 in sizes or 0 in sizes:
        raise ValueError(
            f"batch: x and y need one shared, non-empty leading example axis, got leading "
            f"sizes {sorted(sizes)}"
        )
    return x, y, sizes.pop()


def _flat_vector(v, size: int):
    """``v`` itself, after checking it is a flat vector of the operator's size."""
    if jnp.shape(v) != (size,):
        raise ValueError(
            f"v: expected a flat vector of shape ({size},), got shape {jnp.shape(v)} "
            "(op.ravel turns a params-shaped pytree into one)"
        )
    return v


def _ravel_params(params):
    """``ravel_pytree(params)``, refusing leaves that cannot carry a tangent."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            raise ValueError(
                f"params: leaf {jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}; "
                "curvature needs floating-point parameters (pass integer state, such as a "
                "step counter, through the loss function's closure or the batch)"
            )
    return ravel_pytree(params)


def _single_operator(matvec_tree, params, scale, name: str, precision: str) -> Operator:
    """Operator from ``matvec_tree(params, tangent_tree) -> tree``, divided by ``scale``."""
    flat, unravel = _ravel_params(params)
    ravel = lambda tree: ravel_pytree(tree)[0]

    def matvec(v):
        v = _flat_vector(v, flat.size)
        with jax.default_matmul_precision(precision):
            return ravel(matvec_tree(params, unravel(v.astype(flat.dtype)))) / scale

    return Operator(matvec, int(flat.size), flat.dtype, unravel, name, precision, ravel)


def _dataset_operator(kernel, params, batch, batch_size, mesh, name: str, precision: str):
    """Operator ``v -> Σᵢ wᵢ Cᵢ v / Σᵢ wᵢ`` over one batch or over a whole dataset.

    ``kernel(params, t, x, y, w, index)`` returns ``Σᵢ wᵢ Cᵢ t`` (a params-shaped tree) for
    one batch with example weights ``w``; ``index`` is the global batch index (for keys).
    """
    x, y, n = _xy(batch)
    flat, unravel = _ravel_params(params)
    dtype = flat.dtype
    if batch_size is None and mesh is None:
        w = jnp.ones((n,), dtype)
        return _single_operator(lambda p, t: kernel(p, t, x, y, w, 0), params, n, name, precision)

    if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
        raise ValueError(f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh is not None:
        # jax.make_mesh gives Explicit axes, whose sharding is part of each array's type: the
        # operator's output vectors would then carry it into Lanczos bases built unsharded.
        # The data split is all this mesh is for, so its axes are made Auto.
        auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
        mesh = jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)
    shards = 1 if mesh is None else int(mesh.size)
    if batch_size is None:
        batch_size = -(-n // shards)
    batch_size = train_lib._check_int(batch_size, "batch_size")  # True is not 1
    # Pad to a whole number of batches per device with weight-0 copies of real examples (finite
    # values, so 0 · contribution is exactly 0), so ragged data still weighs every example once.
    num_batches = -(-n // batch_size)
    num_batches = shards * -(-num_batches // shards)
    idx = np.arange(num_batches * batch_size) % n
    split = lambda a: jnp.take(a, idx, axis=0).reshape(num_batches, batch_size, *a.shape[1:])
    xs, ys = jax.tree.map(split, (x, y))
    ws = jnp.asarray((np.arange(idx.size) < n).reshape(num_batches, batch_size), dtype)

    def accumulate(p, t, xs, ys, ws, first):
        def body(acc, inputs):
            j, xb, yb, wb = inputs
            return jax.tree.map(jnp.add, acc, kernel(p, t, xb, yb, wb, first + j)), None

        steps = jnp.arange(ws.shape[0])
        acc, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, t), (steps, xs, ys, ws))
        return acc, jnp.sum(ws)

    if mesh is None:
        sum_fn = lambda p, t: accumulate(p, t, xs, ys, ws, 0)
    else:
        axes = tuple(mesh.axis_names)
        sharded = NamedSharding(mesh, P(axes))
        xs, ys, ws = train_lib._put((xs, ys, ws), sharded)

        def local(p, t, xs, ys, ws):
            first = jax.lax.axis_index(axes) * ws.shape[0]
            return jax.lax.psum(accumulate(p, t, xs, ys, ws, first), axes)

        spec = P(axes)
        # check_vma off: the scan carry starts replicated (zeros) and becomes per-device.
        sharded_fn = jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P(), spec, spec, spec), out_specs=P(),
            check_vma=False,
        )  # fmt: skip
        sum_fn = lambda p, t: sharded_fn(p, t, xs, ys, ws)

    ravel = lambda tree: ravel_pytree(tree)[0]

    def matvec(v):
        v = _flat_vector(v, flat.size)
        with jax.default_matmul_precision(precision):
            numerator, denominator = sum_fn(params, unravel(v.astype(dtype)))
            return ravel(numerator) / denominator

    return Operator(matvec, int(flat.size), dtype, unravel, name, precision, ravel)


# --------------------------------------------------------------------------------------
# Parameter selection


def _leaf_paths_and_sizes(params: Any) -> tuple[list[tuple[str, ...]], list[int]]:
    """Key paths and sizes of the leaves in the order ``ravel_pytree`` concatenates them."""
    with_path, _ = jax.tree_util.tree_flatten_with_path(params)
    paths = [tuple(train_lib._key_name(k) for k in path) for path, _ in with_path]
    sizes = [math.prod(jnp.shape(leaf)) for _, leaf in with_path]
    return paths, sizes


def _selection(paths, select) -> tuple[list[bool], str]:
    if callable(select):
        return [bool(select(path)) for path in paths], _name(select)
    names = [select] if isinstance(select, str) else list(select)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError(
            f"select: expected a name, a list of names or a predicate on key paths, got {select!r}"
        )
    top = sorted({path[0] for path in paths if path})
    # "a/b" is a path, unless it is itself a top-level name (Haiku's "mlp/~/linear_0").
    prefixes = [(s,) if s in top else tuple(s.split("/")) for s in names]
    for prefix, s in zip(prefixes, names, strict=True):
        if not any(path[: len(prefix)] == prefix for path in paths):
            raise ValueError(f"select: {s!r} matches no parameter; top-level names are {top}")
    chosen = [any(path[: len(p)] == p for p in prefixes) for path in paths]
    return chosen, ",".join(names)
