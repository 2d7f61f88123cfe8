"""Named initialisation schemes usable with any lljax model.

A scheme is an :class:`InitScheme`: a kernel initialiser, a bias initialiser and a rule for
residual branches. Models take either a scheme or its name (``init="he"``).

Kernel variances are relative to ``fan_in`` (the number of inputs feeding one output unit;
for a flax ``Dense`` kernel of shape ``(in, out)`` that is ``in``, for a ``Conv`` kernel of
shape ``(*window, in, out)`` it is ``prod(window) * in``).

Examples:
  >>> import jax, lljax as ll
  >>> scheme = ll.init.get("he")
  >>> w = scheme.kernel(jax.random.key(0), (512, 256))
  >>> round(float(w.var() * 512), 1)
  2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr

Initializer = Callable[..., jax.Array]


class InitScheme(NamedTuple):
    """An initialisation scheme.

    Attributes:
      name: scheme name, recorded in results.
      kernel: ``kernel(key, shape, dtype) -> array`` for Dense/Conv kernels.
      bias: ``bias(key, shape, dtype) -> array``.
      residual: how residual models treat branches: ``None`` (branches as any layer),
        ``"depth_scaled"`` (branch output × 1/√L), ``"fixup"`` or ``"zero_branch"``.
      sigma_w2: kernel variance × fan_in (``None`` for orthogonal), for theory checks.
      sigma_b2: bias variance.
    """

    name: str
    kernel: Initializer
    bias: Initializer
    residual: str | None = None
    sigma_w2: float | None = None
    sigma_b2: float = 0.0


def _fan_in(shape) -> int:
    return int(math.prod(shape[:-1])) if len(shape) > 1 else int(shape[0])


def variance_scaled(sigma_w2: float) -> Initializer:
    """Gaussian kernel with variance ``sigma_w2 / fan_in``."""

    def init(key, shape, dtype=jnp.float32):
        std = math.sqrt(sigma_w2 / _fan_in(shape))
        return std * jr.normal(key, shape, dtype)

    return init


def _glorot(key, shape, dtype=jnp.float32):
    fan_out = int(shape[-1]) * (int(math.prod(shape[:-2])) if len(shape) > 2 else 1)
    std = math.sqrt(2.0 / (_fan_in(shape) + fan_out))
    return std * jr.normal(key, shape, dtype)


def _orthogonal(gain: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        flat = (_fan_in(shape), int(shape[-1]))
        return jax.nn.initializers.orthogonal(scale=gain)(key, flat, dtype).reshape(shape)

    return init


def _zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def constant_bias(sigma_b2: float) -> Initializer:
    """Bias ~ N(0, sigma_b2) (zeros when ``sigma_b2 == 0``)."""

    def init(key, shape, dtype=jnp.float32):
        if sigma_b2 == 0:
            return jnp.zeros(shape, dtype)
        return math.sqrt(sigma_b2) * jr.normal(key, shape, dtype)

    return init


def lecun() -> InitScheme:
    """LeCun normal: Var(W) = 1/fan_in, zero biases (LeCun et al. 1998)."""
    return InitScheme("lecun", variance_scaled(1.0), _zeros, sigma_w2=1.0)


def he() -> InitScheme:
    """He normal: Var(W) = 2/fan_in, zero biases (He et al. 2015, arXiv:1502.01852)."""
    return InitScheme("he", variance_scaled(2.0), _zeros, sigma_w2=2.0)


def glorot() -> InitScheme:
    """Glorot normal: Var(W) = 2/(fan_in + fan_out) (Glorot & Bengio 2010)."""
    return InitScheme("glorot", _glorot, _zeros)


def orthogonal(gain: float = 1.0) -> InitScheme:
    """Scaled orthogonal kernels (Saxe et al. 2014, arXiv:1312.6120), zero biases."""
    return InitScheme("orthogonal", _orthogonal(gain), _zeros, sigma_w2=None)


def gaussian(sigma_w2: float, sigma_b2: float = 0.0) -> InitScheme:
    """Mean-field parametrisation W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²).

    The parametrisation of signal-propagation theory (Poole et al. 2016, arXiv:1606.05340).
    """
    return InitScheme(
        f"gaussian({sigma_w2:g},{sigma_b2:g})",
        variance_scaled(sigma_w2),
        constant_bias(sigma_b2),
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
    )


def depth_scaled(base: str | InitScheme = "he") -> InitScheme:
    """``base`` with every residual branch's output multiplied by 1/√L (L branches)."""
    b = get(base)
    return b._replace(name=f"depth_scaled({b.name})", residual="depth_scaled")


def fixup(base: str | InitScheme = "he") -> InitScheme:
    """Fixup (Zhang et al. 2019, arXiv:1901.09321).

    Inside each of the L residual branches of m layers the layers are rescaled by
    L^(-1/(2m-2)); the last layer of each branch and the classifier start at zero.
    """
    b = get(base)
    return b._replace(name=f"fixup({b.name})", residual="fixup")


def zero_branch(base: str | InitScheme = "he") -> InitScheme:
    """SkipInit / ReZero (De & Smith 2020, arXiv:2002.10444; Bachlechner et al. 2020):
    each residual branch is multiplied by a learnable scalar that starts at zero."""
    b = get(base)
    return b._replace(name=f"zero_branch({b.name})", residual="zero_branch")


_NAMED: dict[str, Callable[[], InitScheme]] = {
    "lecun": lecun,
    "he": he,
    "glorot": glorot,
    "orthogonal": orthogonal,
    "depth_scaled": depth_scaled,
    "fixup": fixup,
    "zero_branch": zero_branch,
}

NAMES = tuple(_NAMED) + ("gaussian", "lsuv")


def get(scheme: str | InitScheme) -> InitScheme:
    """Returns the :class:`InitScheme` named ``scheme`` (schemes pass through).

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(scheme, InitScheme):
        return scheme
    if scheme not in _NAMED:
        raise ValueError(
            f"init: unknown scheme {scheme!r}; expected one of {sorted(_NAMED)}, "
            "an InitScheme (e.g. lljax.init.gaussian(sigma_w2, sigma_b2)); "
            "lsuv is data-dependent: call lljax.init.lsuv(model, params, x) after init."
        )
    return _NAMED[scheme]()


Params = Any
