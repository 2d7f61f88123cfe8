"""Models as pairs of pure functions.

A :class:`Model` is ``Model(init, apply)``: ``params = model.init(key)`` returns a pytree and
``out = model.apply(params, x)`` is a pure function of it. Layers are written with
``flax.linen``; the pair hides the module so ``jax.vmap(model.init)(keys)`` is a population.

Normalisation is pure. ``LayerNorm`` has no state. ``BatchNorm`` normalises with the
statistics of the batch it is given (``apply(params, x)``); population statistics are
computed explicitly (``stats = model.stats(params, x_all)``) and passed back
(``apply(params, x, stats=stats)``). There is no hidden running average: Hessian spectra
differ between the two modes, so the mode is always an argument.

Examples:
  >>> import jax, lljax as ll
  >>> model = ll.models.mlp([40, 64, 10], activation="relu", init="he")
  >>> params = model.init(jax.random.key(0))
  >>> model.apply(params, jax.numpy.ones((3, 40))).shape
  (3, 10)
  >>> keys = jax.random.split(jax.random.key(1), 4)
  >>> jax.vmap(model.init)(keys)["Dense_0"]["kernel"].shape
  (4, 40, 64)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lljax import init as init_lib

Params = Any


class Model(NamedTuple):
    """A model as a pair of pure functions.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, x, *, stats=None) -> outputs``; ``stats`` are BatchNorm
        population statistics from :attr:`stats` (ignored by models without BatchNorm).
      stats: ``stats(params, x) -> stats`` computes BatchNorm statistics over ``x``
        (an empty dict for models without BatchNorm).
      input_shape: shape of one example (without the batch axis).
      name: a short description, recorded in results.
      module: the underlying ``flax.linen`` module (``None`` for hand-written models);
        used by tools that read intermediate activations.
    """

    init: Callable[..., Params]
    apply: Callable[..., jax.Array]
    stats: Callable[..., Any] = lambda params, x: {}
    input_shape: tuple[int, ...] = ()
    name: str = "model"
    module: Any = None


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "tanh": jnp.tanh,
    "erf": jax.scipy.special.erf,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "swish": jax.nn.swish,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
    "linear": lambda x: x,
}


def activation(name: str | Callable) -> Callable[[jax.Array], jax.Array]:
    """Returns the activation function called ``name`` (callables pass through)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class BatchNorm(nn.Module):
    """Pure batch normalisation over all axes but the last.

    With ``stats`` in the ``"stats"`` collection (passed by :func:`wrap`), normalises by
    them; otherwise by the statistics of the batch it is given, which it also sows into
    ``"batch_stats"`` so :attr:`Model.stats` can read them.
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        axes = tuple(range(x.ndim - 1))
        if self.has_variable("stats", "mean"):
            mean = self.get_variable("stats", "mean")
            var = self.get_variable("stats", "var")
        else:
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            self.sow("batch_stats", "mean", mean, reduce_fn=lambda a, b: b)
            self.sow("batch_stats", "var", var, reduce_fn=lambda a, b: b)
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],), x.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],), x.dtype)
        return y


def norm_layer(norm: str | None) -> Callable[[], nn.Module] | None:
    """``None``, ``"layer"`` or ``"batch"`` -> a module factory (or None)."""
    if norm is None or norm == "none":
        return None
    if norm == "layer":
        return lambda: nn.LayerNorm(epsilon=1e-5)
    if norm == "batch":
        return BatchNorm
    raise ValueError(f"norm: expected None, 'layer' or 'batch', got {norm!r}")


def wrap(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    dtype=jnp.float32,
    name: str = "model",
) -> Model:
    """Turns a flax.linen module into a :class:`Model`.

    ``init`` traces the module on a dummy batch of two examples of ``input_shape`` (two, so
    BatchNorm statistics are defined) in ``dtype``; ``params`` is the ``"params"``
    collection alone.
    """
    input_shape = tuple(int(s) for s in input_shape)

    def init_fn(key):
        x = jnp.zeros((2, *input_shape), dtype)
        variables = module.init(key, x)
        return jax.tree.map(lambda p: p.astype(dtype), variables["params"])

    def apply_fn(params, x, *, stats=None):
        variables = {"params": params}
        if stats:
            variables["stats"] = stats
        out, _ = module.apply(variables, x, mutable=["batch_stats"])
        return out

    def stats_fn(params, x):
        _, state = module.apply({"params": params}, x, mutable=["batch_stats"])
        return jax.tree.map(lambda v: v, state.get("batch_stats", {}))

    return Model(init_fn, apply_fn, stats_fn, input_shape, name, module)


class MLP(nn.Module):
    widths: Sequence[int]
    activation: str | Callable = "relu"
    scheme: init_lib.InitScheme = init_lib.he()
    norm: str | None = None
    bias: bool = True

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        make_norm = norm_layer(self.norm)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths[1:]):
            x = nn.Dense(
                width,
                use_bias=self.bias,
                kernel_init=self.scheme.kernel,
                bias_init=self.scheme.bias,
                param_dtype=x.dtype,
            )(x)
            if i < len(self.widths) - 2:
                if make_norm is not None:
                    x = make_norm()(x)
                x = act(x)
        return x


def mlp(
    widths: Sequence[int],
    *,
    activation: str | Callable = "relu",
    init: str | init_lib.InitScheme = "he",
    norm: str | None = None,
    bias: bool = True,
    dtype=jnp.float32,
) -> Model:
    """A multilayer perceptron ``widths[0] -> ... -> widths[-1]``.

    Args:
      widths: layer widths including input and output, e.g. ``[40, 256, 256, 10]``.
      activation: a name from :data:`ACTIVATIONS` or a callable.
      init: a scheme name from :mod:`lljax.init` or an :class:`~lljax.init.InitScheme`.
      norm: ``None``, ``"layer"`` or ``"batch"`` (pure; see module docstring), placed
        before each hidden activation.
      bias: whether Dense layers have biases.
      dtype: parameter and input dtype (float32 or float64).

    Returns:
      A :class:`Model` whose params are ``{"Dense_i": {"kernel", "bias"}, ...}``.
    """
    if len(widths) < 2:
        raise ValueError(f"widths: need at least input and output widths, got {widths!r}")
    scheme = init_lib.get(init)
    module = MLP(tuple(widths), activation, scheme, norm, bias)
    return wrap(module, (widths[0],), dtype=dtype, name=f"mlp{list(widths)}")
