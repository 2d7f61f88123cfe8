"""Static jit arguments compared by value, so equal configurations share one compiled program.

``jax.jit`` keys a static argument by its ``__hash__`` and ``__eq__``, and functions compare
by identity: ``optax.adam(1e-3)`` built twice is two sets of closures, so a loop of
``fit(..., optax.adam(1e-3))`` calls compiles on every call. :class:`Static` compares what
it can fully inspect by value: numbers, strings, containers, small arrays, and functions by
their code, defaults, closed-over values and the globals they read. Immutable objects of
the libraries lljax builds on (jax, flax, optax, numpy, lljax itself: modules, classes,
jitted functions, flax modules, large jax arrays) compare by identity inside that value.
Anything else (a user's class instance, a large numpy array that could be mutated in
place) makes the whole argument compare as ``jax.jit`` would compare it, by its own
``__eq__``. So a cache hit never rests on a value the key has not seen.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import types
from collections.abc import Callable

import jax
import numpy as np

_SCALARS = (type(None), bool, int, str, bytes, type(Ellipsis), type(NotImplemented))
# Packages whose objects are immutable in practice; inside a fingerprint they compare by
# identity.
_TRUSTED = frozenset({"jax", "jaxlib", "numpy", "optax", "flax", "chex", "lljax", "builtins"})
_MAX_ARRAY = 1024  # elements; larger numpy arrays are opaque, larger jax arrays by identity


class _Opaque(Exception):
    """Raised for a value the fingerprint cannot compare safely."""


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _trusted_module(module: str | None) -> bool:
    return (module or "").partition(".")[0] in _TRUSTED


def _trusted(obj) -> bool:
    return _trusted_module(getattr(type(obj), "__module__", None))


class _Fingerprint:
    """One pass over an object graph; ``refs`` keeps identity-compared objects alive so
    their ids stay unique while the fingerprint exists."""

    def __init__(self):
        self.refs: list = []
        self.stack: list[int] = []

    def identity(self, obj):
        self.refs.append(obj)
        return ("id", id(obj))

    def __call__(self, obj):
        t = type(obj)
        if t in _SCALARS:
            return (t, obj)
        if t in (float, complex):
            return (t, repr(obj))  # tells -0.0 from 0.0, and nan equals nan
        if id(obj) in self.stack:
            return ("cycle", self.stack.index(id(obj)))
        self.stack.append(id(obj))
        try:
            return self.compound(obj, t)
        finally:
            self.stack.pop()

    def compound(self, obj, t):
        if isinstance(obj, (tuple, list)):
            return (t, tuple(self(x) for x in obj))
        if isinstance(obj, dict):
            return (t, tuple((self(k), self(v)) for k, v in obj.items()))
        if isinstance(obj, (set, frozenset)):
            return (t, frozenset(self(x) for x in obj))
        if isinstance(obj, types.FunctionType):
            if "<locals>" not in obj.__qualname__ and _trusted_module(obj.__module__):
                return self.identity(obj)  # a library's module-level function: one object
            return self.function(obj)
        if isinstance(obj, types.MethodType):
            return ("method", self(obj.__func__), self(obj.__self__))
        if isinstance(obj, functools.partial):
            return ("partial", self(obj.func), self(obj.args), self(obj.keywords))
        if isinstance(obj, (np.ndarray, np.generic)) or (
            isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer)
        ):
            return self.array(obj)
        if isinstance(obj, np.dtype):
            return (t, obj)
        if isinstance(obj, (types.ModuleType, type, types.BuiltinFunctionType, types.CodeType)):
            return self.identity(obj)
        if _trusted(obj):
            if type(obj).__eq__ is not object.__eq__:
                try:
                    hash(obj)
                    return ("eq", t, obj)  # the library's own value semantics (a config)
                except TypeError:
                    pass
            return self.identity(obj)
        if dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen:
            fields = dataclasses.fields(obj)
            return (self.identity(t), tuple((f.name, self(getattr(obj, f.name))) for f in fields))
        raise _Opaque

    def array(self, obj):
        size = int(np.size(obj))
        if size > _MAX_ARRAY:
            if isinstance(obj, jax.Array):
                return self.identity(obj)  # immutable
            raise _Opaque
        if isinstance(obj, jax.Array) and jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            impl = str(jax.random.key_impl(obj))
            return ("key", impl, self.array(jax.random.key_data(obj)))
        a = np.asarray(obj)
        if a.dtype == object:
            raise _Opaque
        # The dtype's name, not .str: ml_dtypes (float8, int4, ...) all have .str '<V1'.
        return ("array", type(obj), a.dtype.name, a.shape, a.tobytes())

    def function(self, fn: types.FunctionType):
        code, env = fn.__code__, fn.__globals__
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(self(cell.cell_contents))
            except ValueError:  # an empty cell (a name assigned after the closure)
                cells.append(("empty",))
        used = tuple(sorted((n, self(env[n])) for n in _global_names(code) if n in env))
        return (
            "function",
            code,
            self.identity(env),
            self(fn.__defaults__),
            self(fn.__kwdefaults__),
            tuple(cells),
            used,
            self(dict(fn.__dict__)),
        )


def _key_of(value):
    """``(key, hash, refs)`` of a static value; see :class:`Static`."""
    fp = _Fingerprint()
    try:
        key, refs = ("value", fp(value)), fp.refs
    except _Opaque:
        key, refs = ("self", value), ()
    try:
        return key, hash(key), refs
    except TypeError:  # unhashable and opaque: identity, as a closure would hold it
        key = ("id", id(value))
        return key, hash(key), (value,)


# The key first computed for an object, by identity (the entry holds the object, so its id
# is not reused): passing the same object again hits the same program even if a list it
# closes over has changed since, as with jax.jit; it also skips the walk.
_MEMO: collections.OrderedDict[int, tuple] = collections.OrderedDict()
_MEMO_SIZE = 512


class Static:
    """A static jit argument, hashed and compared by the fingerprint of its value.

    The first time an object is seen its fingerprint is stored; later uses of the same
    object reuse it.

    Examples:
      >>> import optax
      >>> Static(optax.adam(1e-3)) == Static(optax.adam(1e-3))
      True
      >>> Static(optax.adam(1e-3)) == Static(optax.adam(2e-3))
      False
    """

    __slots__ = ("value", "_key", "_refs", "_hash")

    def __init__(self, value):
        self.value = value
        if type(value) in _SCALARS:
            self._key, self._hash, self._refs = _key_of(value)
            return
        entry = _MEMO.get(id(value))
        if entry is None or entry[0] is not value:
            entry = (value, *_key_of(value))
            _MEMO[id(value)] = entry
        try:  # LRU bookkeeping; another thread may have evicted the entry meanwhile
            _MEMO.move_to_end(id(value))
            while len(_MEMO) > _MEMO_SIZE:
                _MEMO.popitem(last=False)
        except KeyError:
            pass
        _, self._key, self._hash, self._refs = entry

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if not isinstance(other, Static) or self._hash != other._hash:
            return False
        try:
            return bool(self._key == other._key)
        except Exception:  # a library object whose __eq__ does not give a bool: a miss
            return False

    def __repr__(self):
        return f"Static({self.value!r})"


def unwrap(x):
    return x.value if isinstance(x, Static) else x


def jit(fun: Callable, *, static_argnums=(), static_argnames=()) -> Callable:
    """``jax.jit(fun, ...)`` whose static arguments are compared as :class:`Static` values.

    The returned function keeps ``jax.jit``'s ``lower`` and ``_cache_size``.
    """
    static_argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    static_argnames = (
        (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    )
    params = list(inspect.signature(fun).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    nums = set(static_argnums) | {i for i, n in enumerate(positional) if n in static_argnames}
    names = set(static_argnames) | {positional[i] for i in static_argnums if i < len(positional)}

    @functools.wraps(fun)
    def unwrapped(*args, **kwargs):
        return fun(*(unwrap(a) for a in args), **{k: unwrap(v) for k, v in kwargs.items()})

    jitted = jax.jit(unwrapped, static_argnums=tuple(sorted(nums)), static_argnames=tuple(names))

    def wrap(args, kwargs):
        args = tuple(Static(a) if i in nums else a for i, a in enumerate(args))
        kwargs = {k: Static(v) if k in names else v for k, v in kwargs.items()}
        return args, kwargs

    @functools.wraps(fun)
    def call(*args, **kwargs):
        args, kwargs = wrap(args, kwargs)
        return jitted(*args, **kwargs)

    def lower(*args, **kwargs):
        args, kwargs = wrap(args, kwargs)
        return jitted.lower(*args, **kwargs)

    call.lower = lower
    call._cache_size = jitted._cache_size
    return call
