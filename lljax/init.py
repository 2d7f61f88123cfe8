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
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr

from lljax import _linalg

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


def _check_variance(value, name: str) -> float:
    """A scheme's σ² must be a finite real ≥ 0: NaN or a negative variance would otherwise
    surface only at ``model.init``, as NaN kernels or a bare "math domain error"."""
    v = _finite(value)
    if v is None or v < 0:
        raise ValueError(f"{name}: expected a finite non-negative variance, got {value!r}")
    return v


def _finite(value) -> float | None:
    if isinstance(value, (str, bytes)):  # float("2") would pass, and fail later in the maths
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def variance_scaled(sigma_w2: float) -> Initializer:
    """Gaussian kernel with variance ``sigma_w2 / fan_in``.

    Raises:
      ValueError: if ``sigma_w2`` is negative or not finite.

    Examples:
      >>> import jax, flax.linen as nn, lljax as ll
      >>> kernel_init = ll.init.variance_scaled(2.0)
      >>> w = kernel_init(jax.random.key(0), (3, 3, 16, 32))  # a Conv kernel: fan_in = 144
      >>> w.shape, w.dtype
      ((3, 3, 16, 32), dtype('float32'))
      >>> layer = nn.Dense(8, kernel_init=kernel_init)  # any flax initializer slot
    """
    _check_variance(sigma_w2, "sigma_w2")

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
        rows, cols = _fan_in(shape), int(shape[-1])
        # Q of a Gaussian matrix with the signs of diag(R) divided out is Haar-distributed
        # (Mezzadri 2007); the same draw as jax.nn.initializers.orthogonal, but with a QR
        # that a vmapped population init on the CPU cannot deadlock (see lljax._linalg).
        # LAPACK has no half-precision QR: draw and factor in at least float32, then cast.
        work = jnp.promote_types(dtype, jnp.float32)
        q, r = _linalg.qr(jr.normal(key, (max(rows, cols), min(rows, cols)), work))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        return (gain * (q if rows >= cols else q.T)).reshape(shape).astype(dtype)

    return init


def _zeros(key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


def constant_bias(sigma_b2: float) -> Initializer:
    """Bias ~ N(0, sigma_b2) (zeros when ``sigma_b2 == 0``).

    Raises:
      ValueError: if ``sigma_b2`` is negative or not finite.

    Examples:
      >>> import jax, lljax as ll
      >>> ll.init.constant_bias(0.0)(jax.random.key(0), (3,)).tolist()
      [0.0, 0.0, 0.0]
      >>> ll.init.constant_bias(0.05)(jax.random.key(0), (3,)).shape
      (3,)
    """
    _check_variance(sigma_b2, "sigma_b2")

    def init(key, shape, dtype=jnp.float32):
        if sigma_b2 == 0:
            return jnp.zeros(shape, dtype)
        return math.sqrt(sigma_b2) * jr.normal(key, shape, dtype)

    return init


def lecun() -> InitScheme:
    """LeCun normal: Var(W) = 1/fan_in, zero biases (LeCun et al. 1998).

    Examples:
      >>> import jax, lljax as ll
      >>> scheme = ll.init.lecun()
      >>> scheme.name, scheme.sigma_w2, scheme.sigma_b2
      ('lecun', 1.0, 0.0)
      >>> key = jax.random.key(0)
      >>> scheme.kernel(key, (16, 8)).shape, scheme.bias(key, (4,)).tolist()
      ((16, 8), [0.0, 0.0, 0.0, 0.0])
    """
    return InitScheme("lecun", variance_scaled(1.0), _zeros, sigma_w2=1.0)


def he() -> InitScheme:
    """He normal: Var(W) = 2/fan_in, zero biases (He et al. 2015, arXiv:1502.01852).

    Examples:
      >>> import jax, lljax as ll
      >>> scheme = ll.init.he()
      >>> scheme.name, scheme.sigma_w2
      ('he', 2.0)
      >>> model = ll.models.mlp([4, 8, 2], activation="relu", init=scheme)  # or init="he"
      >>> model.init(jax.random.key(0))["Dense_0"]["kernel"].shape
      (4, 8)
    """
    return InitScheme("he", variance_scaled(2.0), _zeros, sigma_w2=2.0)


def glorot() -> InitScheme:
    """Glorot normal: Var(W) = 2/(fan_in + fan_out) (Glorot & Bengio 2010).

    Examples:
      >>> import jax, lljax as ll
      >>> scheme = ll.init.glorot()
      >>> scheme.name, scheme.sigma_w2  # no single σ_w²: the variance depends on fan_out
      ('glorot', None)
      >>> scheme.kernel(jax.random.key(0), (3, 3, 16, 32)).shape  # Conv: fan_out = 9 * 32
      (3, 3, 16, 32)
    """
    return InitScheme("glorot", _glorot, _zeros)


def orthogonal(gain: float = 1.0) -> InitScheme:
    """Scaled orthogonal kernels (Saxe et al. 2014, arXiv:1312.6120), zero biases.

    Raises:
      ValueError: if ``gain`` is not a finite real.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> scheme = ll.init.orthogonal(2.0)
      >>> scheme.name, scheme.sigma_w2
      ('orthogonal(2)', None)
      >>> w = scheme.kernel(jax.random.key(0), (8, 4))
      >>> bool(jnp.allclose(jnp.linalg.svd(w, compute_uv=False), 2.0, atol=1e-5))  # all = gain
      True
    """
    if _finite(gain) is None:
        raise ValueError(f"gain: expected a finite real, got {gain!r}")
    name = "orthogonal" if gain == 1 else f"orthogonal({gain:g})"
    return InitScheme(name, _orthogonal(gain), _zeros, sigma_w2=None)


def gaussian(sigma_w2: float, sigma_b2: float = 0.0) -> InitScheme:
    """Mean-field parametrisation W ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²).

    The parametrisation of signal-propagation theory (Poole et al. 2016, arXiv:1606.05340).

    Raises:
      ValueError: if ``sigma_w2`` or ``sigma_b2`` is negative or not finite.

    Examples:
      >>> import jax, lljax as ll
      >>> scheme = ll.init.gaussian(1.5, 0.05)
      >>> scheme.name, scheme.sigma_w2, scheme.sigma_b2
      ('gaussian(1.5,0.05)', 1.5, 0.05)
      >>> model = ll.models.mlp([4, 8, 2], activation="tanh", init=scheme)
      >>> scheme.bias(jax.random.key(0), (8,)).shape  # biases ~ N(0, 0.05), not zeros
      (8,)
    """
    sigma_w2 = _check_variance(sigma_w2, "sigma_w2")
    sigma_b2 = _check_variance(sigma_b2, "sigma_b2")
    return InitScheme(
        f"gaussian({sigma_w2:g},{sigma_b2:g})",
        variance_scaled(sigma_w2),
        constant_bias(sigma_b2),
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
    )


def _with_residual(b: InitScheme, rule: str) -> InitScheme:
    """``b`` with residual ``rule``; rules do not stack (a block applies one)."""
    if b.residual is not None:
        raise ValueError(
            f"base: {b.name!r} already has the residual rule {b.residual!r}; {rule} needs a "
            "plain scheme (rules do not stack)"
        )
    return b._replace(name=f"{rule}({b.name})", residual=rule)


def depth_scaled(base: str | InitScheme = "he") -> InitScheme:
    """``base`` with every residual branch's output multiplied by 1/√L (L branches).

    Examples:
      >>> import lljax as ll
      >>> scheme = ll.init.depth_scaled("lecun")
      >>> scheme.name, scheme.residual, scheme.sigma_w2
      ('depth_scaled(lecun)', 'depth_scaled', 1.0)
      >>> ll.models.resmlp(16, 4, in_dim=3, out_dim=2, init=scheme).name  # branches × 1/√4
      'resmlp(width=16,depth=4,depth_scaled(lecun))'
    """
    return _with_residual(get(base), "depth_scaled")


def fixup(base: str | InitScheme = "he") -> InitScheme:
    """Fixup (Zhang et al. 2019, arXiv:1901.09321).

    Inside each of the L residual branches of m layers the layers are rescaled by
    L^(-1/(2m-2)); the last layer of each branch and the classifier start at zero, kernels
    and biases (whatever the base scheme's σ_b²), so every block is the identity at init.

    Examples:
      >>> import jax, lljax as ll
      >>> model = ll.models.resmlp(16, 4, in_dim=3, out_dim=2, init=ll.init.fixup("he"))
      >>> params = model.init(jax.random.key(0))
      >>> bool((params["block_0"]["Dense_1"]["kernel"] == 0).all())  # last layer of a branch
      True
      >>> bool((params["head"]["kernel"] == 0).all())  # the classifier
      True
    """
    return _with_residual(get(base), "fixup")


def zero_branch(base: str | InitScheme = "he") -> InitScheme:
    """SkipInit / ReZero (De & Smith 2020, arXiv:2002.10444; Bachlechner et al. 2020):
    each residual branch is multiplied by a learnable scalar that starts at zero.

    Examples:
      >>> import jax, lljax as ll
      >>> scheme = ll.init.zero_branch("he")
      >>> scheme.name, scheme.residual
      ('zero_branch(he)', 'zero_branch')
      >>> params = ll.models.resmlp(16, 3, in_dim=4, out_dim=2, init=scheme).init(jax.random.key(0))
      >>> [float(params[f"block_{i}"]["branch_scale"]) for i in range(3)]
      [0.0, 0.0, 0.0]
    """
    return _with_residual(get(base), "zero_branch")


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
_WRAPPERS = ("depth_scaled", "fixup", "zero_branch")

_CALL = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")


def get(scheme: str | InitScheme) -> InitScheme:
    """Returns the :class:`InitScheme` named ``scheme`` (schemes pass through).

    Besides the plain names, the names schemes record round-trip: ``"gaussian(1.5,0.05)"``,
    ``"orthogonal(2)"`` (gain), ``"fixup(lecun)"``, ``"depth_scaled(he)"``,
    ``"zero_branch(glorot)"``, nested: ``"fixup(gaussian(1.5,0.05))"``.

    Raises:
      ValueError: for an unknown name, listing the known ones.

    Examples:
      >>> import lljax as ll
      >>> s = ll.init.get("gaussian(1.5,0.05)")
      >>> s.sigma_w2, s.sigma_b2
      (1.5, 0.05)
      >>> ll.init.get(s.name) == s
      False
      >>> ll.init.get(s.name).name == s.name
      True
    """
    if isinstance(scheme, InitScheme):
        return scheme
    if isinstance(scheme, str) and scheme in _NAMED:
        return _NAMED[scheme]()
    match = _CALL.match(scheme) if isinstance(scheme, str) else None
    if match is not None:
        fn, inner = match.group(1), match.group(2).strip()
        # A wrapper's argument is itself a name, commas included: "fixup(gaussian(1.5,0.05))".
        args = [inner] if fn in _WRAPPERS else [a.strip() for a in inner.split(",") if a.strip()]
        try:
            if fn == "gaussian" and len(args) in (1, 2):
                return gaussian(*(float(a) for a in args))
            if fn == "orthogonal" and len(args) == 1:
                return orthogonal(float(args[0]))
            if fn in _WRAPPERS and inner:
                return _NAMED[fn](args[0])
        except ValueError as e:
            raise ValueError(f"init: cannot parse {scheme!r}: {e}") from None
    raise ValueError(
        f"init: unknown scheme {scheme!r}; expected one of {sorted(_NAMED)}, "
        "'gaussian(sigma_w2,sigma_b2)', an InitScheme (e.g. lljax.init.gaussian(1.5, 0.05)); "
        "lsuv is data-dependent: call lljax.init.lsuv(model, params, x) after init."
    )


def lsuv(
    model,
    params: Params,
    x: jax.Array,
    *,
    tol: float = 1e-2,
    max_iters: int = 10,
    orthogonal: bool = False,
    key: jax.Array | None = None,
) -> Params:
    """Layer-sequential unit-variance initialisation (LSUV).

    Walks the Dense/Conv layers in the order the signal reaches them and rescales each
    kernel, ``W <- W / sqrt(Var(out))``, until the layer's output (pre-activation, bias
    included; variance over all batch, spatial and unit entries) has variance within ``tol``
    of 1 on the calibration batch ``x``, or ``max_iters`` rescalings were made. Layers whose
    output variance is zero (e.g. Fixup's zero layers) are left alone.

    A layer's output is linear in its kernel (``s·xW + b``), and while a layer is being
    fitted the layers before it are fixed, so the paper's loop of forward passes per layer
    is done here on that layer's output inside a single forward pass: the cost is one
    forward pass whatever the depth. Works under ``jit`` and ``vmap`` (over ``params``).

    Args:
      model: a :class:`~lljax.models.Model` built from a flax module (``model.module``).
      params: its parameters (any scheme; LSUV only rescales kernels).
      x: a calibration batch ``(batch, *model.input_shape)``; BatchNorm layers use its
        statistics.
      tol: tolerance on ``|Var - 1|``.
      max_iters: most rescalings per layer (one suffices for bias-free layers).
      orthogonal: first replace every kernel by an orthogonal one (the paper's step 1).
      key: PRNG key for the orthogonal pre-initialisation.

    Returns:
      The rescaled ``params`` (same tree and dtypes).

    Raises:
      ValueError: for a model without a module, bad ``tol``/``max_iters``, or
        ``orthogonal=True`` without ``key``.

    References:
      Mishkin & Matas 2015, arXiv:1511.06422.

    Examples:
      >>> import jax, jax.numpy as jnp, lljax as ll
      >>> model = ll.models.mlp([8, 32, 32, 4], activation="tanh", init="lecun")
      >>> x = jax.random.normal(jax.random.key(0), (64, 8))
      >>> params = ll.init.lsuv(model, model.init(jax.random.key(1)), x)
      >>> [round(float(o.var()), 2) for o in ll.models.layer_outputs(model, params, x).values()]
      [1.0, 1.0, 1.0]
    """
    from lljax import models as models_lib  # models imports this module

    if getattr(model, "module", None) is None:
        raise ValueError("model: lsuv needs a Model built from a flax module (model.module)")
    if not tol > 0:
        raise ValueError(f"tol: expected a positive float, got {tol!r}")
    if not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters: expected an int >= 1, got {max_iters!r}")
    if orthogonal:
        if key is None:
            raise ValueError("key: orthogonal=True needs a PRNG key for the orthogonal pre-init")
        params = _orthogonal_kernels(params, key)

    scales = {}

    def on_output(path, layer, out):
        b = layer.variables["params"].get("bias")
        b = jnp.zeros((), out.dtype) if b is None else b.astype(out.dtype)
        b = b.reshape((1,) * (out.ndim - b.ndim) + b.shape)
        z = out - b  # x @ W: the part of the output the kernel scales
        if path not in scales:  # a layer called twice keeps its first scale
            s = jnp.ones((), out.dtype)
            for _ in range(max_iters):
                var = jnp.var(s * z + b)
                done = (jnp.abs(var - 1) < tol) | ~(var > jnp.finfo(out.dtype).tiny)
                s = jnp.where(done, s, s * jax.lax.rsqrt(jnp.where(done, 1, var)))
            scales[path] = s
        return scales[path] * z + b

    models_lib.capture_layers(model.module, {"params": params}, x, on_output)

    def rescale(path, leaf):
        names = tuple(getattr(p, "key", None) for p in path)
        if names[-1] == "kernel" and names[:-1] in scales:
            return leaf * scales[names[:-1]].astype(leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(rescale, params)


def _orthogonal_kernels(params: Params, key: jax.Array) -> Params:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jr.split(key, len(leaves))
    new = []
    for (path, leaf), k in zip(leaves, keys, strict=True):
        name = getattr(path[-1], "key", None)
        new.append(_orthogonal(1.0)(k, leaf.shape, leaf.dtype) if name == "kernel" else leaf)
    return jax.tree_util.tree_unflatten(treedef, new)


Params = Any
