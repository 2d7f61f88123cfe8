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

Batch = tuple[jax.Array, jax.Array]
LossFn = Callable[[Any, Batch], jax.Array]


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy, stable in float32 and float64.

    Args:
      logits: ``(..., classes)``.
      labels: integer class indices ``(...)`` or probabilities ``(..., classes)``.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.sum(labels * logp, axis=-1)


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Per-example ½‖f(x) − y‖² summed over output dimensions."""
    if outputs.shape != targets.shape and outputs.shape[:-1] == targets.shape:
        targets = targets[..., None]
    return 0.5 * jnp.sum(jnp.square(outputs - targets).reshape(outputs.shape[0], -1), axis=-1)


def accuracy_from_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        labels = jnp.argmax(labels, -1)
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def _bind(model, per_example: Callable) -> LossFn:
    def loss_fn(params, batch, **apply_kwargs):
        x, y = batch
        return jnp.mean(per_example(model.apply(params, x, **apply_kwargs), y))

    loss_fn.per_example = per_example  # type: ignore[attr-defined]
    loss_fn.model = model  # type: ignore[attr-defined]
    return loss_fn


def cross_entropy(model) -> LossFn:
    """Mean softmax cross-entropy of ``model`` over a batch; integer or one-hot labels."""
    return _bind(model, softmax_cross_entropy)


def mse(model) -> LossFn:
    """Mean over the batch of ½‖f(x) − y‖² (summed over outputs)."""
    return _bind(model, squared_error)


def accuracy(model) -> Callable[[Any, Batch], jax.Array]:
    """``acc_fn(params, (x, y))``: fraction of examples whose argmax matches the label."""

    def acc_fn(params, batch, **apply_kwargs):
        x, y = batch
        return accuracy_from_logits(model.apply(params, x, **apply_kwargs), y)

    return acc_fn
