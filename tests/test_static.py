"""Tests for lljax._static: static jit arguments compared by value, never by a value the key
has not seen."""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lljax as ll
from lljax import _static, ensemble, train
from lljax._static import Static


def test_equal_optax_transformations_compare_equal():
    assert Static(optax.adam(1e-3)) == Static(optax.adam(1e-3))
    assert Static(optax.adam(1e-3)) != Static(optax.adam(2e-3))
    assert Static(optax.adam(1e-3)) != Static(optax.adamw(1e-3))
    chain = lambda clip: optax.chain(optax.clip_by_global_norm(clip), optax.sgd(0.1))  # noqa: E731
    assert Static(chain(1.0)) == Static(chain(1.0)) != Static(chain(2.0))
    sched = lambda n: optax.sgd(optax.cosine_decay_schedule(0.1, n))  # noqa: E731
    assert Static(sched(100)) == Static(sched(100)) != Static(sched(200))
    inject = lambda lr: optax.inject_hyperparams(optax.sgd)(learning_rate=lr)  # noqa: E731
    assert Static(inject(0.1)) == Static(inject(0.1)) != Static(inject(0.3))
    sgld = lambda s: ll.optim.sgld(1e-3, key=jr.key(s))  # noqa: E731
    assert Static(sgld(0)) == Static(sgld(0)) != Static(sgld(1))


def test_arrays_of_different_narrow_dtypes_differ():
    # Every ml_dtypes type has dtype.str '<V1': equal bytes as float8_e4m3fn ([1, 2]) and as
    # float8_e4m3fnuz ([0.5, 1]) compared equal, and the first compiled program was reused.
    raw = jnp.array([0x38, 0x40], jnp.uint8)
    a = jax.lax.bitcast_convert_type(raw, jnp.float8_e4m3fn)
    b = jax.lax.bitcast_convert_type(raw, jnp.float8_e4m3fnuz)
    make = lambda c: lambda x: x * c.astype(jnp.float32)  # noqa: E731
    assert Static(make(a)) != Static(make(b))
    f = _static.jit(lambda fn, x: fn(x), static_argnums=0)
    np.testing.assert_array_equal(f(make(a), jnp.ones(2)), [1.0, 2.0])
    np.testing.assert_array_equal(f(make(b), jnp.ones(2)), [0.5, 1.0])


def test_values_are_compared_with_their_types_and_bits():
    assert Static(1) != Static(1.0) != Static(True)
    assert Static(0.0) != Static(-0.0)
    assert Static(float("nan")) == Static(float("nan"))
    small = lambda a: lambda x: a * x  # noqa: E731
    assert Static(small(np.ones(3))) == Static(small(np.ones(3)))
    assert Static(small(np.ones(3))) != Static(small(np.ones(3, np.float32)))
    assert Static(small(np.ones(3))) != Static(small(np.array([1.0, 1.0, 2.0])))
    # A large numpy array could be changed in place: the closure compares by identity.
    big = np.ones(5000)
    assert Static(small(big)) != Static(small(big))
    # Large jax arrays are immutable: the same one compares equal.
    big = jnp.ones(5000)
    assert Static(small(big)) == Static(small(big)) != Static(small(jnp.ones(5000)))


def test_opaque_values_keep_jit_semantics():
    class Opaque:  # a user's mutable object: never compared by its contents
        scale = 2.0

    obj = Opaque()
    make = lambda o: lambda x: o.scale * x  # noqa: E731
    assert Static(make(obj)) != Static(make(obj))  # two closures: identity, as jax.jit
    f = make(obj)
    assert Static(f) == Static(f)

    @dataclasses.dataclass(frozen=True)
    class Config:  # frozen: compared field by field
        width: int
        act: object

    assert Static(Config(3, jnp.tanh)) == Static(Config(3, jnp.tanh)) != Static(Config(4, jnp.tanh))
    assert Static([1, 2]) == Static([1, 2])  # unhashable, but inspectable


def test_changed_globals_and_captured_values_compile_again():
    calls = _static.jit(lambda fn, x: fn(x), static_argnums=0)

    env = {}

    def with_global(scale):  # a notebook cell run again: same code, same globals dict
        env["scale"] = scale
        exec("def fn(x):\n    return scale * x\n", env)
        return env["fn"]

    size = calls._cache_size()
    assert float(calls(with_global(2.0), 1.0)) == 2.0
    assert float(calls(with_global(2.0), 1.0)) == 2.0
    assert calls._cache_size() == size + 1
    assert float(calls(with_global(3.0), 1.0)) == 3.0  # not the first program's constant
    assert calls._cache_size() == size + 2

    box = [5.0]
    assert float(calls(lambda x: box[0] * x, 1.0)) == 5.0
    box[0] = 7.0
    assert float(calls(lambda x: box[0] * x, 1.0)) == 7.0  # a new closure: its list now


MODEL = ll.models.mlp([4, 8, 3])
DATA = ll.data.gaussian_mixture(key=jr.key(0), num_train=40, num_test=24, num_classes=3, dim=4)


def test_fit_with_a_new_equal_optimizer_reuses_the_program():
    params = MODEL.init(jr.key(1))
    kw = dict(steps=6, batch_size=8, key=jr.key(2), progress=False, eval_every=None)
    loss = ll.losses.cross_entropy(MODEL)
    a = train.fit(loss, params, optax.sgd(0.1), DATA, **kw)
    size = train._run_jit._cache_size()
    b = train.fit(ll.losses.cross_entropy(MODEL), params, optax.sgd(0.1), DATA, **kw)
    assert train._run_jit._cache_size() == size
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    c = train.fit(loss, params, optax.sgd(0.2), DATA, **kw)
    assert train._run_jit._cache_size() == size + 1
    diff = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y))), a.params, c.params)
    assert max(jax.tree.leaves(diff)) > 1e-3


def test_ensemble_train_with_new_equal_arguments_reuses_the_program():
    kw = dict(key=jr.key(3), num_members=2, steps=6, batch_size=8, progress=False)
    adam = lambda: optax.adam(1e-2)  # noqa: E731
    a = ensemble.train(MODEL, ll.losses.cross_entropy(MODEL), adam(), DATA, **kw)
    size = ensemble._run_population_jit._cache_size()
    b = ensemble.train(MODEL, ll.losses.cross_entropy(MODEL), adam(), DATA, **kw)
    assert ensemble._run_population_jit._cache_size() == size
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
