"""Models as pairs of pure functions.

A :class:`Model` is ``Model(init, apply)``: ``params = model.init(key)`` returns a pytree and
``out = model.apply(params, x)`` is a pure function of it. Layers are written with
``flax.linen``; the pair hides the module so ``jax.vmap(model.init)(keys)`` is a population.

Builders: :func:`mlp`, :func:`resmlp`, :func:`cnn`, :func:`resnet`, :func:`transformer`,
:func:`deep_linear`; any ``flax.linen`` module becomes a :class:`Model` through :func:`wrap`.
Every builder takes ``dtype`` (float32, or float64 with ``jax_enable_x64``) and an
initialisation scheme from :mod:`lljax.init` (``init="he"``).

Normalisation is pure. ``LayerNorm`` has no state. ``BatchNorm`` normalises with the
statistics of the batch it is given (``apply(params, x)``); population statistics are
computed explicitly (``stats = model.stats(params, x_all)``) and passed back
(``apply(params, x, stats=stats)``). There is no hidden running average: Hessian spectra
differ between the two modes (with batch statistics every example's output depends on the
whole batch, which couples examples in the loss), so the mode is always an argument.

Convolutions go through :func:`conv_general_dilated`, ``lax.conv_general_dilated`` with a
kernel derivative that XLA:CPU runs at full speed inside ``scan`` and ``while`` loops.

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

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

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
        used by tools that read intermediate activations (:func:`layer_outputs`,
        :func:`lljax.init.lsuv`).
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
    """Returns the activation function called ``name`` (callables pass through).

    Raises:
      ValueError: for a name not in :data:`ACTIVATIONS`.

    Examples:
      >>> import jax.numpy as jnp, lljax as ll
      >>> ll.models.activation("relu")(jnp.array([-1.0, 2.0])).tolist()
      [0.0, 2.0]
      >>> ll.models.activation(jnp.sin) is jnp.sin
      True
    """
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


_get_activation = activation  # builders take an argument named ``activation``


class BatchNorm(nn.Module):
    """Pure batch normalisation over all axes but the last.

    With ``stats`` in the ``"stats"`` collection (passed by :func:`wrap`), normalises by
    them; otherwise by the statistics of the batch it is given (biased variance), which it
    also sows into ``"batch_stats"`` so :attr:`Model.stats` can read them.
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        axes = tuple(range(x.ndim - 1))
        if self.has_variable("stats", "mean") != self.has_variable("stats", "var"):
            raise ValueError(
                f"stats: BatchNorm {'/'.join(self.path)} needs both 'mean' and 'var' "
                "(the structure Model.stats returns)"
            )
        if self.has_variable("stats", "mean"):
            mean = self.get_variable("stats", "mean").astype(x.dtype)
            var = self.get_variable("stats", "var").astype(x.dtype)
        else:
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - _expand(mean, x.ndim)), axes)
            self.sow("batch_stats", "mean", mean, reduce_fn=lambda a, b: b)
            self.sow("batch_stats", "var", var, reduce_fn=lambda a, b: b)
        y = (x - _expand(mean, x.ndim)) * _expand(jax.lax.rsqrt(var + self.epsilon), x.ndim)
        if self.use_scale:
            scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), x.dtype)
            y = y * _expand(scale, x.ndim)
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), x.dtype)
            y = y + _expand(bias, x.ndim)
        return y


def _expand(v, ndim):
    # Explicit broadcasting of a per-feature vector (the tests raise on rank promotion).
    return v.reshape((1,) * (ndim - 1) + v.shape)


NORMS = (None, "layer", "batch")


def norm_layer(norm: str | None) -> Callable[..., nn.Module] | None:
    """``None`` (or ``"none"``), ``"layer"`` or ``"batch"`` -> a module factory (or None).

    Raises:
      ValueError: for any other value.

    Examples:
      >>> import lljax as ll
      >>> ll.models.norm_layer(None) is None
      True
      >>> ll.models.norm_layer("batch") is ll.models.BatchNorm
      True
      >>> type(ll.models.norm_layer("layer")()).__name__
      'LayerNorm'
    """
    if norm is None or norm == "none":
        return None
    if norm == "layer":
        # Two-pass variance: E[x²] - E[x]² loses precision that curvature work needs.
        return lambda **kw: nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, **kw)
    if norm == "batch":
        return BatchNorm
    raise ValueError(f"norm: expected None, 'none', 'layer' or 'batch', got {norm!r}")


def wrap(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    dtype=jnp.float32,
    input_dtype=None,
    name: str = "model",
) -> Model:
    """Turns a flax.linen module into a :class:`Model`.

    ``init`` traces the module on a dummy batch of two examples of ``input_shape`` (two, so
    BatchNorm statistics are defined); ``params`` is the ``"params"`` collection alone, cast
    to ``dtype``.

    Args:
      module: a ``flax.linen`` module taking a batch ``(batch, *input_shape)``.
      input_shape: shape of one example.
      dtype: parameter dtype.
      input_dtype: dtype of the dummy input (default ``dtype``; integer for token models).
      name: recorded in results.

    Examples:
      >>> import jax, flax.linen as nn, lljax as ll
      >>> model = ll.models.wrap(nn.Dense(3), (5,))
      >>> model.apply(model.init(jax.random.key(0)), jax.numpy.ones((2, 5))).shape
      (2, 3)
    """
    input_shape = tuple(int(s) for s in input_shape)
    dtype = jnp.dtype(dtype)
    input_dtype = dtype if input_dtype is None else jnp.dtype(input_dtype)

    def init_fn(key):
        x = jnp.zeros((2, *input_shape), input_dtype)
        variables = module.init(key, x)
        return jax.tree.map(lambda p: p.astype(dtype), variables["params"])

    def apply_fn(params, x, *, stats=None):
        variables = {"params": params}
        if stats:
            variables["stats"] = stats
        out, state = module.apply(variables, x, mutable=["batch_stats"])
        if stats and state.get("batch_stats"):
            # A layer that found no statistics fell back to the batch's: a silent mode switch.
            flat = traverse_util.flatten_dict(dict(state["batch_stats"]))
            missing = sorted("/".join(k[:-1]) for k in flat if k[-1] == "mean")
            raise ValueError(
                f"stats: no statistics for layers {missing}; pass the tree Model.stats "
                "returns (layer names at the top level)"
            )
        return out

    def stats_fn(params, x):
        _, state = module.apply({"params": params}, x, mutable=["batch_stats"])
        return jax.tree.map(lambda v: v, dict(state.get("batch_stats", {})))

    return Model(init_fn, apply_fn, stats_fn, input_shape, name, module)


_KERNEL_LAYERS = (nn.Dense, nn.Conv)


def capture_layers(module: nn.Module, variables, x, on_output=None):
    """Runs ``module`` recording every Dense/Conv output in call order.

    Args:
      module: a ``flax.linen`` module.
      variables: its variables (``{"params": ..., "stats": ...}``).
      x: a batch.
      on_output: optional ``on_output(path, layer, output) -> output``: may replace a layer's
        output before the rest of the network sees it (how :func:`lljax.init.lsuv` rescales
        layers in a single forward pass).

    Returns:
      ``(outputs, layers)``: the model output and a list of ``(path, output)`` with ``path``
      the tuple of module names (the layer's parameters live at ``params[path]``).

    Examples:
      >>> import jax, lljax as ll
      >>> model, x = ll.models.mlp([4, 8, 2]), jax.numpy.ones((3, 4))
      >>> variables = {"params": model.init(jax.random.key(0))}
      >>> out, layers = ll.models.capture_layers(model.module, variables, x)
      >>> out.shape, [(path, o.shape) for path, o in layers]
      ((3, 2), [(('Dense_0',), (3, 8)), (('Dense_1',), (3, 2))])
    """
    layers = []

    def interceptor(next_fn, args, kwargs, context):
        out = next_fn(*args, **kwargs)
        mod = context.module
        if context.method_name == "__call__" and isinstance(mod, _KERNEL_LAYERS):
            path = tuple(mod.path)
            if on_output is not None:
                out = on_output(path, mod, out)
            layers.append((path, out))
        return out

    with nn.intercept_methods(interceptor):
        out, _ = module.apply(variables, x, mutable=["batch_stats"])
    return out, layers


def layer_outputs(model: Model, params: Params, x: jax.Array, *, stats=None) -> dict:
    """Pre-activation outputs of every Dense/Conv layer of ``model`` on the batch ``x``.

    Args:
      model: a :class:`Model` built from a flax module (``model.module`` set).
      params: its parameters.
      x: a batch ``(batch, *model.input_shape)``.
      stats: optional BatchNorm population statistics.

    Returns:
      A dict ``"path/to/layer" -> output`` in call order (the order signal flows through).

    Raises:
      ValueError: when the model has no flax module.

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.mlp([4, 8, 2])
      >>> params = model.init(jax.random.key(0))
      >>> outs = ll.models.layer_outputs(model, params, jax.numpy.ones((3, 4)))
      >>> {k: v.shape for k, v in outs.items()}
      {'Dense_0': (3, 8), 'Dense_1': (3, 2)}
    """
    if model.module is None:
        raise ValueError("model: layer_outputs needs a Model built from a flax module")
    variables = {"params": params}
    if stats:
        variables["stats"] = stats
    _, layers = capture_layers(model.module, variables, x)
    return {"/".join(path): out for path, out in layers}


def _check_widths(name: str, widths, min_len: int = 1) -> tuple[int, ...]:
    try:
        widths = tuple(widths)
    except TypeError:
        raise ValueError(f"{name}: expected a sequence of positive ints, got {widths!r}") from None
    if len(widths) < min_len or not all(
        isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w > 0 for w in widths
    ):
        raise ValueError(
            f"{name}: expected a sequence of at least {min_len} positive ints, got {widths!r}"
        )
    widths = tuple(int(w) for w in widths)  # numpy ints too, as plain (hashable) ints
    return widths


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _check_dtype(dtype):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype: expected a floating dtype (float32/float64), got {dtype}")
    return dtype


def _scaled(initializer, factor: float):
    return lambda key, shape, dtype=jnp.float32: factor * initializer(key, shape, dtype)


def _zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


# ---------------------------------------------------------------------------------------------
# MLP


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

    Raises:
      ValueError: for bad widths, an unknown activation, norm or scheme.

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.mlp([4, 8, 3], activation="tanh", norm="layer")
      >>> model.apply(model.init(jax.random.key(0)), jax.numpy.ones((2, 4))).shape
      (2, 3)
    """
    widths = _check_widths("widths", widths, min_len=2)
    _get_activation(activation)
    norm_layer(norm)
    scheme = init_lib.get(init)
    module = MLP(widths, activation, scheme, norm, bias)
    return wrap(module, (widths[0],), dtype=_check_dtype(dtype), name=f"mlp{list(widths)}")


# ---------------------------------------------------------------------------------------------
# Residual MLP


def _scale_branch(module: nn.Module, z, branch_scale, param_dtype):
    """α · z, with α a scalar parameter ``branch_scale`` of ``module`` from 0 if learnable."""
    if branch_scale == "learnable":
        alpha = module.param("branch_scale", nn.initializers.zeros, (), param_dtype)
        return alpha.astype(z.dtype) * z
    return z if branch_scale == 1.0 else branch_scale * z


class ResidualBlock(nn.Module):
    """One residual block ``h -> h + α · branch(h)`` (pre-norm) or ``norm(h + α · branch(h))``."""

    width: int
    activation: str | Callable
    scheme: init_lib.InitScheme
    branch_scale: float | str
    norm: str | None
    norm_position: str
    branch_layers: int
    bias: bool
    fixup_depth: int = 0  # number of blocks L when the Fixup rule applies, else 0

    @nn.compact
    def __call__(self, h):
        act = activation(self.activation)
        make_norm = norm_layer(self.norm)
        m = self.branch_layers
        kernel_init = self.scheme.kernel
        if self.fixup_depth and m > 1:
            kernel_init = _scaled(kernel_init, self.fixup_depth ** (-1.0 / (2 * m - 2)))
        z = h
        if self.norm_position == "pre" and make_norm is not None:
            z = make_norm()(z)
        for j in range(m):
            last = j == m - 1
            z = nn.Dense(
                self.width,
                use_bias=self.bias,
                # Fixup: the branch's last layer, bias included, starts at zero, so the
                # block is the identity at init whatever the base scheme's σ_b².
                kernel_init=_zeros if (last and self.fixup_depth) else kernel_init,
                bias_init=_zeros if (last and self.fixup_depth) else self.scheme.bias,
                param_dtype=h.dtype,
            )(z)
            if not last:
                z = act(z)
        h = h + _scale_branch(self, z, self.branch_scale, h.dtype)
        if self.norm_position == "post" and make_norm is not None:
            h = make_norm()(h)
        return h


class ResMLP(nn.Module):
    width: int
    depth: int
    out_dim: int
    activation: str | Callable
    scheme: init_lib.InitScheme
    branch_scale: float | str
    norm: str | None
    norm_position: str
    branch_layers: int
    bias: bool

    @nn.compact
    def __call__(self, x):
        fixup = self.scheme.residual == "fixup"
        x = x.reshape((x.shape[0], -1))
        h = nn.Dense(
            self.width,
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=x.dtype,
            name="embed",
        )(x)
        for i in range(self.depth):
            h = ResidualBlock(
                self.width,
                self.activation,
                self.scheme,
                self.branch_scale,
                self.norm,
                self.norm_position,
                self.branch_layers,
                self.bias,
                fixup_depth=self.depth if fixup else 0,
                name=f"block_{i}",
            )(h)
        make_norm = norm_layer(self.norm)
        if self.norm_position == "pre" and make_norm is not None:
            h = make_norm(name="norm_out")(h)
        return nn.Dense(
            self.out_dim,
            use_bias=self.bias,
            kernel_init=_zeros if fixup else self.scheme.kernel,
            bias_init=_zeros if fixup else self.scheme.bias,
            param_dtype=h.dtype,
            name="head",
        )(h)


BRANCH_SCALES = (1.0, "1/sqrt(depth)", "learnable")


def _branch_alpha(scheme: init_lib.InitScheme, branch_scale, depth: int) -> float | str:
    """α of every residual branch: ``branch_scale`` or the scheme's residual rule."""
    rule_scale = {"depth_scaled": "1/sqrt(depth)", "zero_branch": "learnable"}.get(scheme.residual)
    if branch_scale is None:
        branch_scale = rule_scale or 1.0
    elif rule_scale is not None and branch_scale != rule_scale:
        raise ValueError(
            f"branch_scale: {branch_scale!r} contradicts init scheme {scheme.name!r}, "
            f"which sets {rule_scale!r}; pass branch_scale=None"
        )
    if isinstance(branch_scale, str):
        if branch_scale not in ("1/sqrt(depth)", "learnable"):
            raise ValueError(
                "branch_scale: expected a float, '1/sqrt(depth)' or 'learnable', "
                f"got {branch_scale!r}"
            )
        alpha = 1.0 / math.sqrt(depth) if branch_scale == "1/sqrt(depth)" else branch_scale
    elif (
        isinstance(branch_scale, (int, float, np.integer, np.floating))
        and not isinstance(branch_scale, bool)
        and math.isfinite(branch_scale)
    ):
        alpha = float(branch_scale)
    else:
        raise ValueError(
            f"branch_scale: expected a finite float, '1/sqrt(depth)' or 'learnable', got "
            f"{branch_scale!r}"
        )
    return alpha


def resmlp(
    width: int,
    depth: int,
    *,
    in_dim: int,
    out_dim: int,
    activation: str | Callable = "relu",
    init: str | init_lib.InitScheme = "he",
    branch_scale: float | str | None = None,
    norm: str | None = None,
    norm_position: str = "pre",
    branch_layers: int = 2,
    bias: bool = True,
    dtype=jnp.float32,
) -> Model:
    """A residual MLP: ``embed -> depth × residual block -> [norm] -> head``.

    A block maps ``h`` to ``h + α · branch(h)`` with ``branch`` made of ``branch_layers``
    Dense layers (activation between them, none after the last). With ``norm_position="pre"``
    the branch sees ``norm(h)`` and a final norm precedes the head (pre-LN / pre-activation
    ResNet); with ``"post"`` the block output is ``norm(h + α · branch(h))`` (original
    Transformer). With ``norm=None`` the two coincide.

    The init scheme's residual rule is honoured: ``depth_scaled`` sets α = 1/√depth,
    ``zero_branch`` makes α a learnable scalar starting at 0 (so at init the net is
    ``head(norm(embed(x)))``), ``fixup`` scales the non-final branch layers by
    ``depth^(-1/(2m-2))`` (m = ``branch_layers``) and zeros each branch's last layer (kernel
    and bias, whatever the base scheme's σ_b²) and the head.

    Args:
      width: hidden width.
      depth: number of residual blocks L (>= 1).
      in_dim: input dimension (inputs are flattened).
      out_dim: output dimension.
      activation: a name from :data:`ACTIVATIONS` or a callable.
      init: scheme name or :class:`~lljax.init.InitScheme`.
      branch_scale: α: a float, ``"1/sqrt(depth)"`` or ``"learnable"`` (SkipInit/ReZero:
        a scalar parameter ``block_i/branch_scale`` starting at 0). ``None`` (default):
        from the scheme's residual rule, else 1.
      norm: ``None``, ``"layer"`` or ``"batch"``.
      norm_position: ``"pre"`` or ``"post"``.
      branch_layers: Dense layers per branch (m >= 1).
      bias: whether Dense layers have biases.
      dtype: float32 or float64.

    Returns:
      A :class:`Model` with params ``{"embed", "block_i": {"Dense_j", ...}, "head", ...}``.

    Raises:
      ValueError: for bad sizes, an unknown activation/norm/norm_position/branch_scale, or a
        ``branch_scale`` that contradicts the scheme's residual rule.

    References:
      He et al. 2016, arXiv:1603.05027 (pre-activation); Zhang et al. 2019, arXiv:1901.09321
      (Fixup); De & Smith 2020, arXiv:2002.10444 (SkipInit); Bachlechner et al. 2020,
      arXiv:2003.04887 (ReZero).

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.resmlp(16, 3, in_dim=4, out_dim=2, init="zero_branch")
      >>> params = model.init(jax.random.key(0))
      >>> float(params["block_0"]["branch_scale"])
      0.0
      >>> model.apply(params, jax.numpy.ones((5, 4))).shape
      (5, 2)
    """
    _check_positive_int("width", width)
    _check_positive_int("depth", depth)
    _check_positive_int("in_dim", in_dim)
    _check_positive_int("out_dim", out_dim)
    _check_positive_int("branch_layers", branch_layers)
    _get_activation(activation)
    norm_layer(norm)
    if norm_position not in ("pre", "post"):
        raise ValueError(f"norm_position: expected 'pre' or 'post', got {norm_position!r}")
    scheme = init_lib.get(init)
    alpha = _branch_alpha(scheme, branch_scale, depth)
    module = ResMLP(
        width, depth, out_dim, activation, scheme, alpha, norm, norm_position, branch_layers, bias
    )
    return wrap(
        module,
        (in_dim,),
        dtype=_check_dtype(dtype),
        name=f"resmlp(width={width},depth={depth},{scheme.name})",
    )


# ---------------------------------------------------------------------------------------------
# Convolution


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated`` whose kernel derivative XLA:CPU also runs fast in loops.

    Reverse mode transposes a convolution with respect to its kernel into a second convolution
    with batch and feature dimensions swapped (``f01b_i01o->01bf``). Inside a ``while`` loop
    (``lax.scan`` training, every Lanczos iteration) XLA:CPU emits that one as a naive loop
    nest, 50-100x slower than outside a loop (jax-ml/jax#12868). On the CPU the kernel
    tangent here is a sum over kernel taps of matmuls, so its transpose is matmuls too; the
    value and the input derivative stay ordinary convolutions, and other backends (cuDNN)
    keep the plain rule. Plain (channel-last, undilated, ungrouped) convolutions only; others
    are passed to ``lax.conv_general_dilated``. Every convolution of the builders uses it.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
      >>> dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
      >>> conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)[0, 0, 0]
      Array([12., 12., 12., 12.], dtype=float32)
    """
    sp = "DHW"[3 - (lhs.ndim - 2) :] if lhs.ndim <= 5 else None
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    channel_last = sp and lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, (f"N{sp}C", f"{sp}IO", f"N{sp}C")
    )
    plain = (
        dn == channel_last
        and all(d == 1 for d in (lhs_dilation or ()))
        and all(d == 1 for d in (rhs_dilation or ()))
        and feature_group_count == 1
        and batch_group_count == 1
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )  # fmt: skip
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], window_strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, tuple(window_strides), pads, dn, precision, preferred_element_type)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv(x, w, strides, pads, dn, precision, out_dtype):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=dn, precision=precision,
        preferred_element_type=out_dtype,
    )  # fmt: skip


def _conv_taps(x, w, strides, pads, precision, out_dtype):
    """The convolution as ``sum_k slice_k(pad(x)) @ w[k]`` over kernel offsets ``k``."""
    nsp = x.ndim - 2
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    k_shape = w.shape[:nsp]
    out_shape = [(xp.shape[1 + d] - k_shape[d]) // strides[d] + 1 for d in range(nsp)]
    out = None
    for k in itertools.product(*map(range, k_shape)):
        limit = [k[d] + strides[d] * (out_shape[d] - 1) + 1 for d in range(nsp)]
        patch = lax.slice(xp, (0, *k, 0), (xp.shape[0], *limit, xp.shape[-1]), (1, *strides, 1))
        term = lax.dot_general(
            patch, w[k], (((x.ndim - 1,), (0,)), ((), ())), precision=precision,
            preferred_element_type=out_dtype,
        )  # fmt: skip
        out = term if out is None else out + term
    return out


@functools.partial(_conv.defjvp, symbolic_zeros=True)
def _conv_jvp(strides, pads, dn, precision, out_dtype, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _conv(x, w, strides, pads, dn, precision, out_dtype)

    def conv(a, b):
        return _conv(a, b, strides, pads, dn, precision, out_dtype)

    def taps(a, b):
        return _conv_taps(a, b, strides, pads, precision, out_dtype)

    # Inputs that are not differentiated (the data) arrive as symbolic zeros: no work for them.
    zero = jax.custom_derivatives.SymbolicZero
    dy = None if isinstance(dx, zero) else conv(dx, w)
    if not isinstance(dw, zero):
        dy_w = lax.platform_dependent(x, dw, cpu=taps, default=conv)
        dy = dy_w if dy is None else dy + dy_w
    return y, jnp.zeros_like(y) if dy is None else dy


# ---------------------------------------------------------------------------------------------
# CNN


class CNN(nn.Module):
    spatial_shape: tuple[int, ...]
    in_channels: int
    channels: tuple[int, ...]
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: Any
    pool: str | None
    pool_size: int
    global_pool: bool
    hidden: tuple[int, ...]
    num_classes: int
    activation: str | Callable
    scheme: init_lib.InitScheme
    norm: str | None
    bias: bool

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        make_norm = norm_layer(self.norm)
        d = len(self.spatial_shape)
        x = x.reshape((x.shape[0], *self.spatial_shape, self.in_channels))
        for c, k, s in zip(self.channels, self.kernel_size, self.strides, strict=True):
            x = nn.Conv(
                c,
                (k,) * d,
                strides=(s,) * d,
                padding=self.padding,
                use_bias=self.bias,
                kernel_init=self.scheme.kernel,
                bias_init=self.scheme.bias,
                param_dtype=x.dtype,
                conv_general_dilated=conv_general_dilated,
            )(x)
            if make_norm is not None:
                x = make_norm()(x)
            x = act(x)
            if self.pool == "max":
                x = nn.max_pool(x, (self.pool_size,) * d, strides=(self.pool_size,) * d)
            elif self.pool == "avg":
                x = nn.avg_pool(x, (self.pool_size,) * d, strides=(self.pool_size,) * d)
        if self.global_pool:
            x = jnp.mean(x, axis=tuple(range(1, d + 1)))
        else:
            x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(
                width,
                use_bias=self.bias,
                kernel_init=self.scheme.kernel,
                bias_init=self.scheme.bias,
                param_dtype=x.dtype,
            )(x)
            x = act(x)
        return nn.Dense(
            self.num_classes,
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=x.dtype,
        )(x)


def _per_layer(name: str, value, n: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else value
    values = _check_widths(name, values)
    if len(values) != n:
        raise ValueError(f"{name}: expected an int or {n} ints (one per conv layer), got {value!r}")
    return values


def cnn(
    input_shape: Sequence[int] = (40,),
    num_classes: int = 10,
    *,
    channels: Sequence[int] = (25, 25, 25),
    kernel_size: int | Sequence[int] = (5, 3, 3),
    strides: int | Sequence[int] = 2,
    padding: int | str = 1,
    pool: str | None = None,
    pool_size: int = 2,
    global_pool: bool = False,
    hidden: Sequence[int] = (),
    spatial_dims: int | None = None,
    activation: str | Callable = "relu",
    init: str | init_lib.InitScheme = "he",
    norm: str | None = None,
    bias: bool = True,
    dtype=jnp.float32,
) -> Model:
    """A small convolutional net for 1-D signals and 2-D images.

    Each conv layer is ``Conv -> [norm] -> activation -> [pool]``; the features are then
    flattened (or globally averaged), passed through optional hidden Dense layers and a
    linear classifier. The defaults are the MNIST-1D paper's CNN baseline: three 1-D conv
    layers with 25 channels, kernels 5, 3, 3, stride 2, padding 1, ReLU, then a linear layer
    on the 5 × 25 = 125 flattened features.

    Input shapes: ``(L,)`` is a 1-D signal with one channel (MNIST-1D ``(batch, 40)`` is read
    as ``(batch, 40, 1)``), ``(L, C)`` a 1-D signal with C channels, ``(H, W, C)`` an image;
    ``spatial_dims=2`` reads ``(H, W)`` as a one-channel image.

    Args:
      input_shape: shape of one example (see above).
      num_classes: outputs of the classifier.
      channels: output channels of each conv layer.
      kernel_size: an int or one per conv layer (the window is that size along every
        spatial axis).
      strides: an int or one per conv layer.
      padding: an int (symmetric zero padding), ``"SAME"`` or ``"VALID"``.
      pool: ``None``, ``"max"`` or ``"avg"`` pooling after each conv layer.
      pool_size: pooling window and stride.
      global_pool: average over space instead of flattening.
      hidden: widths of Dense layers between the features and the classifier.
      spatial_dims: 1 or 2; ``None`` infers it from ``input_shape``.
      activation: a name from :data:`ACTIVATIONS` or a callable.
      init: scheme name or :class:`~lljax.init.InitScheme`.
      norm: ``None``, ``"layer"`` or ``"batch"`` after each conv (BatchNorm normalises each
        channel over batch and space).
      bias: whether layers have biases.
      dtype: float32 or float64.

    Returns:
      A :class:`Model` with params ``{"Conv_i": ..., "Dense_j": ...}``.

    Raises:
      ValueError: for bad shapes or sizes, an unknown pool, norm or activation.

    References:
      Greydanus & Kobak 2020, arXiv:2011.14439 (MNIST-1D and its CNN baseline).

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.cnn()  # MNIST-1D baseline
      >>> params = model.init(jax.random.key(0))
      >>> params["Dense_0"]["kernel"].shape
      (125, 10)
      >>> image_net = ll.models.cnn((8, 8, 3), 5, channels=(4,), kernel_size=3, pool="max")
      >>> image_net.apply(image_net.init(jax.random.key(0)), jax.numpy.ones((2, 8, 8, 3))).shape
      (2, 5)
    """
    input_shape = _check_widths("input_shape", input_shape)
    _check_positive_int("num_classes", num_classes)
    channels = _check_widths("channels", channels)
    n = len(channels)
    kernel_size = _per_layer("kernel_size", kernel_size, n)
    strides = _per_layer("strides", strides, n)
    hidden = _check_widths("hidden", hidden, min_len=0)
    _check_positive_int("pool_size", pool_size)
    if pool not in (None, "max", "avg"):
        raise ValueError(f"pool: expected None, 'max' or 'avg', got {pool!r}")
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding: expected an int, 'SAME' or 'VALID', got {padding!r}")
        padding = padding.upper()
    else:
        _check_positive_int("padding", padding, minimum=0)
    if spatial_dims is None:
        spatial_dims = 2 if len(input_shape) == 3 else 1
    if spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims: expected 1, 2 or None, got {spatial_dims!r}")
    if len(input_shape) == spatial_dims:
        spatial, in_channels = input_shape, 1
    elif len(input_shape) == spatial_dims + 1:
        spatial, in_channels = input_shape[:-1], input_shape[-1]
    else:
        raise ValueError(
            f"input_shape: expected (L,), (L, C) or (H, W, C) for {spatial_dims}-D convolutions, "
            f"got {input_shape!r}"
        )
    size = list(spatial)
    for i in range(n):  # spatial sizes layer by layer: a collapse is a bad argument, not 1/0
        k, st = kernel_size[i], strides[i]
        if padding == "SAME":
            size = [-(-d // st) for d in size]
        else:
            pad = 0 if padding == "VALID" else 2 * padding
            size = [(d + pad - k) // st + 1 if d + pad >= k else 0 for d in size]
        if pool is not None:
            size = [d // pool_size for d in size]
        if min(size) < 1:
            raise ValueError(
                f"input_shape: {tuple(spatial)} shrinks to {tuple(size)} after conv layer {i}"
                f"{' and its pooling' if pool else ''} (kernel_size {k}, strides {st}, "
                f"padding {padding!r}{f', pool_size {pool_size}' if pool else ''}); use fewer "
                "layers, smaller strides or pools, or more padding"
            )
    _get_activation(activation)
    norm_layer(norm)
    scheme = init_lib.get(init)
    module = CNN(
        tuple(spatial),
        int(in_channels),
        channels,
        kernel_size,
        strides,
        padding,
        pool,
        pool_size,
        global_pool,
        hidden,
        num_classes,
        activation,
        scheme,
        norm,
        bias,
    )
    return wrap(
        module, input_shape, dtype=_check_dtype(dtype), name=f"cnn{spatial_dims}d{list(channels)}"
    )


# ---------------------------------------------------------------------------------------------
# ResNet


class BasicBlock(nn.Module):
    """``act(shortcut(h) + α · norm(conv(act(norm(conv(h))))))``: He et al.'s basic block."""

    channels: int
    stride: int
    activation: str | Callable
    scheme: init_lib.InitScheme
    branch_scale: float | str
    norm: str | None
    bias: bool
    fixup_depth: int = 0  # number of blocks L when the Fixup rule applies, else 0

    @nn.compact
    def __call__(self, h):
        act = activation(self.activation)
        make_norm = norm_layer(self.norm)
        kernel_init = self.scheme.kernel
        if self.fixup_depth:  # m = 2 layers per branch: scale L^(-1/(2m-2)) = L^(-1/2)
            kernel_init = _scaled(kernel_init, self.fixup_depth**-0.5)

        def conv(features, size, stride, init, name, bias_init=self.scheme.bias):
            pad = (size - 1) // 2
            return nn.Conv(
                features,
                (size, size),
                strides=(stride, stride),
                padding=((pad, pad), (pad, pad)),
                use_bias=self.bias,
                kernel_init=init,
                bias_init=bias_init,
                param_dtype=h.dtype,
                conv_general_dilated=conv_general_dilated,
                name=name,
            )

        z = conv(self.channels, 3, self.stride, kernel_init, "conv_0")(h)
        if make_norm is not None:
            z = make_norm(name="norm_0")(z)
        z = act(z)
        # Fixup: the branch's last conv, bias included, starts at zero (the block is
        # act(h) at init whatever the base scheme's σ_b²).
        last_init = _zeros if self.fixup_depth else self.scheme.kernel
        last_bias = _zeros if self.fixup_depth else self.scheme.bias
        z = conv(self.channels, 3, 1, last_init, "conv_1", last_bias)(z)
        if make_norm is not None:
            z = make_norm(name="norm_1")(z)
        z = _scale_branch(self, z, self.branch_scale, h.dtype)
        if self.stride != 1 or h.shape[-1] != self.channels:
            # Projection shortcut (He et al.'s option B): 1x1 conv with the block's stride.
            h = conv(self.channels, 1, self.stride, self.scheme.kernel, "shortcut_conv")(h)
            if make_norm is not None:
                h = make_norm(name="shortcut_norm")(h)
        return act(h + z)


class ResNet(nn.Module):
    input_shape: tuple[int, ...]
    num_classes: int
    stage_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    stem: str
    activation: str | Callable
    scheme: init_lib.InitScheme
    branch_scale: float | str
    norm: str | None
    bias: bool

    @nn.compact
    def __call__(self, x):
        act = activation(self.activation)
        make_norm = norm_layer(self.norm)
        fixup = self.scheme.residual == "fixup"
        x = x.reshape((x.shape[0], *self.input_shape))
        size, stride, pad = (3, 1, 1) if self.stem == "cifar" else (7, 2, 3)
        h = nn.Conv(
            self.widths[0],
            (size, size),
            strides=(stride, stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=x.dtype,
            conv_general_dilated=conv_general_dilated,
            name="stem_conv",
        )(x)
        if make_norm is not None:
            h = make_norm(name="stem_norm")(h)
        h = act(h)
        if self.stem == "imagenet":
            h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        depth = sum(self.stage_sizes)
        for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for j in range(blocks):
                h = BasicBlock(
                    width,
                    2 if (i > 0 and j == 0) else 1,
                    self.activation,
                    self.scheme,
                    self.branch_scale,
                    self.norm,
                    self.bias,
                    fixup_depth=depth if fixup else 0,
                    name=f"stage{i}_block{j}",
                )(h)
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(
            self.num_classes,
            use_bias=True,
            kernel_init=_zeros if fixup else self.scheme.kernel,
            bias_init=_zeros if fixup else self.scheme.bias,
            param_dtype=h.dtype,
            name="head",
        )(h)


def resnet(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    stage_sizes: Sequence[int] = (2, 2, 2, 2),
    widths: Sequence[int] = (64, 128, 256, 512),
    stem: str = "cifar",
    activation: str | Callable = "relu",
    init: str | init_lib.InitScheme = "he",
    branch_scale: float | str | None = None,
    norm: str | None = "batch",
    bias: bool | None = None,
    dtype=jnp.float32,
) -> Model:
    """A convolutional ResNet of basic blocks (ResNet-18 by default).

    A stem conv, then stages of blocks ``act(shortcut(h) + α · branch(h))`` with
    ``branch = norm ∘ conv3x3 ∘ act ∘ norm ∘ conv3x3``; the first block of every stage but
    the first halves the resolution (stride 2) and its shortcut is a 1x1 conv + norm; then
    global average pooling and a linear head. Padding is symmetric, as in the original and
    in torchvision, so weights map one to one onto ``torchvision.models.resnet18``.

    ``stem="cifar"`` is a 3x3 stride-1 conv (the usual CIFAR ResNet-18, 11.17M parameters
    at 10 classes); ``stem="imagenet"`` is torchvision's 7x7 stride-2 conv and 3x3 stride-2
    max pool (11.18M parameters at 10 classes; on 32x32 inputs it is the model curvlinops
    benchmarks). BatchNorm is pure (module docstring): batch statistics unless ``stats`` are
    passed. The scheme's residual rule is honoured as in :func:`resmlp` (``fixup``: branch
    convs × L^(-1/2), each branch's last conv (bias included) and the head at zero;
    ``depth_scaled``: α = 1/√L; ``zero_branch``: learnable α from 0), L being the number of
    blocks.

    Args:
      input_shape: ``(H, W, C)`` of one image.
      num_classes: outputs of the head.
      stage_sizes: blocks per stage (ResNet-18: ``(2, 2, 2, 2)``, ResNet-34: ``(3, 4, 6, 3)``).
      widths: channels per stage.
      stem: ``"cifar"`` or ``"imagenet"``.
      activation: a name from :data:`ACTIVATIONS` or a callable.
      init: scheme name or :class:`~lljax.init.InitScheme`.
      branch_scale: α: a float, ``"1/sqrt(depth)"`` or ``"learnable"``; ``None`` (default):
        from the scheme's residual rule, else 1.
      norm: ``"batch"`` (default), ``"layer"`` or ``None``.
      bias: conv biases; ``None`` (default): only without normalisation (the head always
        has one).
      dtype: float32 or float64.

    Returns:
      A :class:`Model` with params ``{"stem_conv", "stem_norm", "stage{i}_block{j}": {"conv_0",
      "norm_0", "conv_1", "norm_1", ["shortcut_conv", "shortcut_norm"]}, "head"}``.

    Raises:
      ValueError: for bad shapes or sizes, an unknown stem, activation, norm or scheme, or a
        ``branch_scale`` that contradicts the scheme's residual rule.

    References:
      He et al. 2016, arXiv:1512.03385 (ResNet); Zhang et al. 2019, arXiv:1901.09321 (Fixup).

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.resnet()  # ResNet-18 for CIFAR-10
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0))
      >>> sum(p.size for p in jax.tree.leaves(shapes))
      11173962
      >>> tiny = ll.models.resnet((8, 8, 3), 5, stage_sizes=(1, 1), widths=(4, 8))
      >>> tiny.apply(tiny.init(jax.random.key(0)), jax.numpy.ones((2, 8, 8, 3))).shape
      (2, 5)
    """
    input_shape = _check_widths("input_shape", input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (H, W, C), got {input_shape!r}")
    _check_positive_int("num_classes", num_classes)
    stage_sizes = _check_widths("stage_sizes", stage_sizes)
    widths = _check_widths("widths", widths)
    if len(widths) != len(stage_sizes):
        raise ValueError(
            f"widths: expected one per stage ({len(stage_sizes)}), got {len(widths)}: {widths!r}"
        )
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem: expected 'cifar' or 'imagenet', got {stem!r}")
    _get_activation(activation)
    norm_layer(norm)
    scheme = init_lib.get(init)
    alpha = _branch_alpha(scheme, branch_scale, sum(stage_sizes))
    bias = norm is None if bias is None else bool(bias)
    module = ResNet(
        input_shape,
        num_classes,
        stage_sizes,
        widths,
        stem,
        activation,
        scheme,
        alpha,
        norm,
        bias,
    )
    depth = 2 * sum(stage_sizes) + 2
    return wrap(
        module,
        input_shape,
        dtype=_check_dtype(dtype),
        name=f"resnet{depth}({stem},{scheme.name})",
    )


# ---------------------------------------------------------------------------------------------
# Transformer


def _softmax(logits, axis=-1):
    # Plain jnp ops: differentiable any number of times (Hessian-vector products).
    z = logits - jax.lax.stop_gradient(jnp.max(logits, axis=axis, keepdims=True))
    e = jnp.exp(z)
    return e / jnp.sum(e, axis=axis, keepdims=True)


class CausalSelfAttention(nn.Module):
    width: int
    num_heads: int
    scheme: init_lib.InitScheme
    bias: bool

    @nn.compact
    def __call__(self, h):
        b, t, _ = h.shape
        dh = self.width // self.num_heads

        def dense(name):
            return nn.Dense(
                self.width,
                use_bias=self.bias,
                kernel_init=self.scheme.kernel,
                bias_init=self.scheme.bias,
                param_dtype=h.dtype,
                name=name,
            )

        q = dense("query")(h).reshape((b, t, self.num_heads, dh))
        k = dense("key")(h).reshape((b, t, self.num_heads, dh))
        v = dense("value")(h).reshape((b, t, self.num_heads, dh))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(dh, h.dtype))
        causal = jnp.tril(jnp.ones((t, t), bool)).reshape((1, 1, t, t))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        weights = _softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape((b, t, self.width))
        return dense("out")(out)


class TransformerBlock(nn.Module):
    width: int
    num_heads: int
    mlp_width: int
    layer_norm: bool
    activation: str | Callable
    scheme: init_lib.InitScheme
    bias: bool

    @nn.compact
    def __call__(self, h):
        make_norm = norm_layer("layer") if self.layer_norm else (lambda **kw: lambda z: z)
        h = h + CausalSelfAttention(self.width, self.num_heads, self.scheme, self.bias)(
            make_norm()(h)
        )
        z = make_norm()(h)
        z = nn.Dense(
            self.mlp_width,
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=h.dtype,
            name="mlp_in",
        )(z)
        z = activation(self.activation)(z)
        z = nn.Dense(
            self.width,
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=h.dtype,
            name="mlp_out",
        )(z)
        return h + z


class Transformer(nn.Module):
    vocab_size: int
    seq_len: int
    num_layers: int
    width: int
    num_heads: int
    mlp_width: int
    layer_norm: bool
    num_classes: int
    activation: str | Callable
    scheme: init_lib.InitScheme
    bias: bool
    readout: str
    dtype: Any

    @nn.compact
    def __call__(self, tokens):
        std = 1.0 / math.sqrt(self.width)
        embed = self.param(
            "embed", nn.initializers.normal(std), (self.vocab_size, self.width), self.dtype
        )
        pos = self.param(
            "pos_embed", nn.initializers.normal(std), (self.seq_len, self.width), self.dtype
        )
        if tokens.shape[-1] != self.seq_len:
            raise ValueError(
                f"tokens: expected sequences of length seq_len={self.seq_len}, got shape "
                f"{tokens.shape}"
            )
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens: expected integer token ids, got dtype {tokens.dtype}")
        # Out-of-vocabulary ids (negative ones too: take would wrap them) embed as NaN, so
        # they poison the loss visibly rather than silently aliasing another token.
        tokens = tokens.astype(jnp.int32)
        oov = (tokens < 0) | (tokens >= self.vocab_size)
        h = jnp.take(embed, jnp.where(oov, self.vocab_size, tokens), axis=0, mode="fill")
        h = h + pos.reshape((1, self.seq_len, self.width))
        for i in range(self.num_layers):
            h = TransformerBlock(
                self.width,
                self.num_heads,
                self.mlp_width,
                self.layer_norm,
                self.activation,
                self.scheme,
                self.bias,
                name=f"block_{i}",
            )(h)
        if self.layer_norm:
            h = norm_layer("layer")(name="norm_out")(h)
        if self.readout == "last":
            h = h[:, -1]
        return nn.Dense(
            self.num_classes,
            use_bias=self.bias,
            kernel_init=self.scheme.kernel,
            bias_init=self.scheme.bias,
            param_dtype=h.dtype,
            name="head",
        )(h)


def transformer(
    vocab_size: int,
    seq_len: int,
    *,
    num_classes: int,
    num_layers: int = 1,
    width: int = 128,
    num_heads: int = 4,
    mlp_width: int | None = None,
    layer_norm: bool = True,
    activation: str | Callable = "relu",
    init: str | init_lib.InitScheme = "lecun",
    bias: bool = True,
    readout: str = "last",
    dtype=jnp.float32,
) -> Model:
    """A small decoder-only (causal) transformer for token sequences.

    Token and learned position embeddings (both N(0, 1/width)), ``num_layers`` pre-LN blocks
    ``h + attn(LN(h))``, ``h + MLP(LN(h))``, a final LayerNorm and a linear head read at the
    last position. Attention is plain ``einsum`` + softmax (no fused kernels), so the model
    can be differentiated twice (Hessian-vector products). Built for modular arithmetic:
    inputs ``[a, b, =]`` from :func:`lljax.data.modular_arithmetic` (``vocab_size = p + 1``,
    ``seq_len = 3``, ``num_classes = p``).

    Args:
      vocab_size: number of tokens.
      seq_len: sequence length T; inputs are int arrays ``(batch, T)``.
      num_classes: outputs of the head.
      num_layers: transformer blocks.
      width: model width (divisible by ``num_heads``).
      num_heads: attention heads.
      mlp_width: hidden width of the MLP (default ``4 * width``).
      layer_norm: LayerNorm before attention, MLP and head; ``False`` removes all of them.
      activation: MLP activation.
      init: scheme for the Dense kernels and biases.
      bias: whether Dense layers have biases.
      readout: ``"last"`` (outputs ``(batch, num_classes)``) or ``"all"`` (every position,
        ``(batch, T, num_classes)``).
      dtype: float32 or float64.

    Returns:
      A :class:`Model` taking integer tokens.

    Raises:
      ValueError: for bad sizes, a width not divisible by ``num_heads``, unknown readout.

    References:
      Vaswani et al. 2017, arXiv:1706.03762; Power et al. 2022, arXiv:2201.02177;
      Nanda et al. 2023, arXiv:2301.05217.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.transformer(8, 3, num_classes=7, width=16, num_heads=2)
      >>> params = model.init(jax.random.key(0))
      >>> model.apply(params, jnp.array([[1, 2, 7], [3, 4, 7]])).shape
      (2, 7)
    """
    for name, value in [
        ("vocab_size", vocab_size),
        ("seq_len", seq_len),
        ("num_classes", num_classes),
        ("num_layers", num_layers),
        ("width", width),
        ("num_heads", num_heads),
    ]:
        _check_positive_int(name, value)
    if width % num_heads:
        raise ValueError(f"num_heads: width {width} is not divisible by num_heads {num_heads}")
    mlp_width = 4 * width if mlp_width is None else _check_positive_int("mlp_width", mlp_width)
    if readout not in ("last", "all"):
        raise ValueError(f"readout: expected 'last' or 'all', got {readout!r}")
    _get_activation(activation)
    scheme = init_lib.get(init)
    dtype = _check_dtype(dtype)
    module = Transformer(
        vocab_size,
        seq_len,
        num_layers,
        width,
        num_heads,
        mlp_width,
        layer_norm,
        num_classes,
        activation,
        scheme,
        bias,
        readout,
        dtype,
    )
    return wrap(
        module,
        (seq_len,),
        dtype=dtype,
        input_dtype=jnp.int32,
        name=f"transformer(layers={num_layers},width={width},heads={num_heads})",
    )


# ---------------------------------------------------------------------------------------------
# Deep linear network


class DeepLinear(nn.Module):
    widths: Sequence[int]
    scheme: init_lib.InitScheme

    @nn.compact
    def __call__(self, x):
        x = x.reshape((x.shape[0], -1))
        for width in self.widths[1:]:
            x = nn.Dense(
                width, use_bias=False, kernel_init=self.scheme.kernel, param_dtype=x.dtype
            )(x)
        return x


def deep_linear(
    widths: Sequence[int],
    *,
    init: str | init_lib.InitScheme = "lecun",
    dtype=jnp.float32,
) -> Model:
    """A deep linear network ``x -> x W_1 W_2 ... W_L``: no biases, no nonlinearities.

    Its function is linear in ``x`` but its loss landscape is not convex in the factors
    (saddles, symmetries), which makes it the standard model for exact theory checks.

    Args:
      widths: ``[in, hidden..., out]``.
      init: scheme for the kernels (biases are absent).
      dtype: float32 or float64.

    Returns:
      A :class:`Model` with params ``{"Dense_i": {"kernel"}}``; :func:`deep_linear_matrix`
      gives the end-to-end matrix.

    References:
      Saxe et al. 2014, arXiv:1312.6120; Kawaguchi 2016, arXiv:1605.07110.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.deep_linear([3, 4, 2])
      >>> params = model.init(jax.random.key(0))
      >>> x = jnp.ones((5, 3))
      >>> bool(jnp.allclose(model.apply(params, x), x @ ll.models.deep_linear_matrix(params)))
      True
    """
    widths = _check_widths("widths", widths, min_len=2)
    scheme = init_lib.get(init)
    module = DeepLinear(widths, scheme)
    return wrap(module, (widths[0],), dtype=_check_dtype(dtype), name=f"deep_linear{list(widths)}")


def deep_linear_matrix(params: Params) -> jax.Array:
    """The end-to-end matrix ``W_1 W_2 ... W_L`` (shape ``(in, out)``) of :func:`deep_linear`.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> params = ll.models.deep_linear([3, 4, 2]).init(jax.random.key(0))
      >>> ll.models.deep_linear_matrix(params).shape
      (3, 2)
      >>> ll.models.deep_linear_matrix({"Dense_0": {"kernel": 2 * jnp.eye(2)},
      ...                               "Dense_1": {"kernel": jnp.ones((2, 1))}}).tolist()
      [[2.0], [2.0]]
    """
    n = len(params)
    out = params["Dense_0"]["kernel"]
    for i in range(1, n):
        out = out @ params[f"Dense_{i}"]["kernel"]
    return out
