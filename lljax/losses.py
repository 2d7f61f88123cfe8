"""Losses as functions of params: ``loss_fn(params, (x, y)) -> scalar``.

Examples:
  >>> import jax, jax.numpy as jnp, lljax as ll
  >>> model = ll.models.mlp([4, 8, 3])
  >>> loss_fn = ll.losses.cross_entropy(model)
  >>> params = model.init(jax.random.key(0))
  >>> x, y = jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1])
  >>> bool(loss_fn(params, (x, y)) > 0)
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Batch = tuple[jax.Array, jax.Array]
LossFn = Callable[[Any, Batch], jax.Array]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy ``-log softmax(logits)[label]``, stable in float32 and float64.

    Computed from ``log_softmax`` (max-shifted), so logits of any magnitude give finite
    losses; the result has the dtype of ``logits``.

    Args:
      logits: ``(..., classes)``.
      labels: integer class indices ``(...)`` in ``[0, classes)``, or probabilities /
        one-hot ``(..., classes)`` (non-negative; rows need not sum to one).

    Returns:
      Losses of shape ``logits.shape[:-1]``. Under ``jit``/``vmap``, where labels cannot be
      checked, an out-of-range integer label gives a NaN loss (never another class's loss).

    Raises:
      ValueError: if the label shape matches neither form, or (for concrete labels) an
        integer label is outside ``[0, classes)`` or a probability is negative or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> softmax_cross_entropy(jnp.array([[0.0, 1e4]]), jnp.array([1]))
      Array([0.], dtype=float32)
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    logp = jax.nn.log_softmax(logits, axis=-1)
    num_classes = logits.shape[-1]
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape[:-1]:
            raise ValueError(
                f"labels: integer labels must have shape {logits.shape[:-1]} (logits without "
                f"the class axis), got {labels.shape}"
            )
        _check_class_indices(labels, num_classes)
        # take_along_axis wraps negative indices (-1 would pick the last class) and fills
        # others with NaN; make every out-of-range label NaN, so traced bad labels are loud.
        index = labels.astype(jnp.int32)
        valid = (index >= 0) & (index < num_classes)
        picked = jnp.take_along_axis(logp, jnp.where(valid, index, 0)[..., None], axis=-1)
        return -jnp.where(valid, picked[..., 0], jnp.nan)
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels: probability labels must have the logits' shape {logits.shape}, "
            f"got {labels.shape}"
        )
    values = _concrete(labels)
    if values is not None and not (np.all(np.isfinite(values)) and np.all(values >= 0)):
        raise ValueError(
            "labels: probability labels must be finite and non-negative, got values in "
            f"[{np.min(values)}, {np.max(values)}]"
        )
    labels = labels.astype(logp.dtype)  # the loss keeps the logits' dtype
    # Zero-probability classes contribute 0 even where log p = -inf (0 * -inf would be NaN).
    return -jnp.sum(jnp.where(labels == 0, 0.0, labels * logp), axis=-1)


def _concrete(x: jax.Array) -> np.ndarray | None:
    """``x`` as NumPy when its values are known (not traced under jit/vmap/grad), else None."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _check_class_indices(labels: jax.Array, num_classes: int) -> None:
    values = _concrete(labels)
    if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"labels: integer labels must be class indices in [0, {num_classes}), got values "
            f"in [{values.min()}, {values.max()}]"
        )


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example ½‖f(x) − y‖² summed over output dimensions.

    Args:
      outputs: ``(batch, ...)``.
      targets: the same shape, or ``(batch,)`` when ``outputs`` is ``(batch, 1)``.

    Returns:
      Losses of shape ``(batch,)``.

    Raises:
      ValueError: if the shapes do not match or ``outputs`` has no batch axis.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> out, y = jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> ll.losses.squared_error(out, y).tolist()
      [2.0, 0.5]
    """
    outputs, targets = jnp.asarray(outputs), jnp.asarray(targets)
    if outputs.ndim == 0:
        raise ValueError("outputs: expected a batch axis, got a scalar")
    if outputs.shape != targets.shape:
        if outputs.shape[-1:] == (1,) and outputs.shape[:-1] == targets.shape:
            targets = targets[..., None]
        else:
            raise ValueError(
                f"targets: expected shape {outputs.shape} (the outputs'), got {targets.shape}"
            )
    # Sum over the non-batch axes by index: a reshape to (batch, -1) fails on an empty batch.
    return 0.5 * jnp.sum(jnp.square(outputs - targets), axis=tuple(range(1, outputs.ndim)))


def accuracy_from_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of examples whose argmax logit is the label (integer or one-hot labels).

    NaN when some example's logits hold a NaN or +inf: a diverged network has no accuracy.

    Raises:
      ValueError: if the label shape is wrong or (for concrete labels) an integer label is
        outside ``[0, classes)``.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
      >>> float(ll.losses.accuracy_from_logits(logits, jnp.array([0, 1, 1, 1])))
      0.75
      >>> float(ll.losses.accuracy_from_logits(logits, jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2)))
      1.0
      >>> float(ll.losses.accuracy_from_logits(logits.at[0, 0].set(jnp.nan), jnp.zeros(4, int)))
      nan
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels: one-hot/probability labels must have the logits' shape "
                f"{logits.shape}, got {labels.shape}"
            )
        labels = jnp.argmax(labels, -1)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels: expected shape {logits.shape[:-1]}, got {labels.shape}")
    _check_class_indices(labels, logits.shape[-1])
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.result_type(float))
    # argmax of NaN logits is class 0, which would give a diverged network the accuracy of
    # always answering 0; -inf logits (masked classes) are fine.
    broken = jnp.any(jnp.isnan(logits) | (logits == jnp.inf), -1)
    return jnp.mean(jnp.where(broken, jnp.nan, correct))


def _bind(model, per_example: Callable) -> LossFn:
    def loss_fn(params, batch, **apply_kwargs):
        x, y = batch
        return jnp.mean(per_example(model.apply(params, x, **apply_kwargs), y))

    loss_fn.per_example = per_example  # type: ignore[attr-defined]
    loss_fn.model = model  # type: ignore[attr-defined]
    return loss_fn


def cross_entropy(model) -> LossFn:
    """Mean softmax cross-entropy of ``model`` over a batch; integer or one-hot labels.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([4, 8, 3])
      >>> loss_fn = ll.losses.cross_entropy(model)
      >>> zeros = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))  # uniform logits
      >>> round(float(loss_fn(zeros, (jnp.ones((5, 4)), jnp.array([0, 1, 2, 0, 1])))), 4)  # log 3
      1.0986
    """
    return _bind(model, softmax_cross_entropy)


def mse(model) -> LossFn:
    """Mean over the batch of ½‖f(x) − y‖² (summed over outputs).

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([3, 1], activation="identity", bias=False)
      >>> loss_fn = ll.losses.mse(model)
      >>> zeros = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))
      >>> float(loss_fn(zeros, (jnp.ones((4, 3)), jnp.full((4, 1), 2.0))))  # ½ · 2²
      2.0
    """
    return _bind(model, squared_error)


def accuracy(model) -> Callable[[Any, Batch], jax.Array]:
    """``acc_fn(params, (x, y))``: fraction of examples whose argmax matches the label.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([4, 8, 3])
      >>> acc_fn = ll.losses.accuracy(model)
      >>> zeros = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0)))  # argmax is 0
      >>> float(acc_fn(zeros, (jnp.ones((4, 4)), jnp.array([0, 0, 1, 2]))))
      0.5
    """

    def acc_fn(params, batch, **apply_kwargs):
        x, y = batch
        return accuracy_from_logits(model.apply(params, x, **apply_kwargs), y)

    return acc_fn
