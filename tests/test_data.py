import functools
import random

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import lljax as ll
from lljax.data import Dataset, sample_batch


def assert_same(a: Dataset, b: Dataset):
    for la, lb in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(la, lb)
    assert (a.name, a.num_classes) == (b.name, b.num_classes)


def differs(a: Dataset, b: Dataset) -> bool:
    return not np.array_equal(a.x_train, b.x_train)


GENERATORS = {
    "gaussian_mixture": lambda key: ll.data.gaussian_mixture(
        key=key, num_train=50, num_test=20, num_classes=3, dim=4
    ),
    "linear_regression": lambda key: ll.data.linear_regression(
        key=key, num_train=50, num_test=20, dim=6, out_dim=2, rank=1
    ),
    "teacher_student": lambda key: ll.data.teacher_student(
        ll.models.mlp([5, 8, 3]), key=key, num_train=50, num_test=20, classify=True
    ),
    "modular_arithmetic": lambda key: ll.data.modular_arithmetic(11, "add", 0.5, key=key),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_deterministic_given_key(name):
    make = GENERATORS[name]
    a, b, c = make(jr.key(0)), make(jr.key(0)), make(jr.key(1))
    assert_same(a, b)
    assert differs(a, c) or not np.array_equal(a.y_train, c.y_train)
    # An int seed is the same as jax.random.key(seed).
    assert_same(make(0), a)
    assert a.num_train == a.x_train.shape[0] and a.num_test == a.x_test.shape[0]


def test_generator_shapes_and_metadata():
    g = GENERATORS["gaussian_mixture"](jr.key(0))
    assert g.x_train.shape == (50, 4) and g.y_train.shape == (50,) and g.x_test.shape == (20, 4)
    assert g.y_train.dtype == jnp.int32 and g.num_classes == 3 and g.input_shape == (4,)
    assert set(np.unique(g.y_train)) <= {0, 1, 2}
    r = GENERATORS["linear_regression"](jr.key(0))
    assert r.y_train.shape == (50, 2) and r.num_classes == 0
    t = GENERATORS["teacher_student"](jr.key(0))
    assert t.x_train.shape == (50, 5) and t.y_train.shape == (50,) and t.num_classes == 3


def test_linear_regression_recovers_low_rank_matrix():
    d = ll.data.linear_regression(
        key=jr.key(3), num_train=200, num_test=10, dim=6, out_dim=4, noise=0.0, rank=2
    )
    w, *_ = np.linalg.lstsq(np.asarray(d.x_train), np.asarray(d.y_train), rcond=None)
    np.testing.assert_allclose(np.asarray(d.x_test) @ w, d.y_test, atol=1e-4)
    s = np.linalg.svd(w, compute_uv=False)
    assert s[1] > 1e-2 and s[2] < 1e-4 * s[0]  # exactly rank 2


def test_teacher_student_labels_are_teacher_argmax():
    teacher = ll.models.mlp([5, 8, 3])
    d = ll.data.teacher_student(teacher, key=jr.key(0), num_train=30, num_test=10, classify=True)
    params = teacher.init(jr.split(jr.key(0), 3)[0])
    np.testing.assert_array_equal(d.y_train, jnp.argmax(teacher.apply(params, d.x_train), -1))


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "x2_plus_xy_plus_y2"])
def test_modular_arithmetic_labels(op):
    p = 7
    d = ll.data.modular_arithmetic(p, op, 0.6, seed=1)
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    a, b = x[:, 0], x[:, 1]
    assert np.all(x[:, 2] == p) and d.num_classes == p
    expected = {
        "add": (a + b) % p,
        "sub": (a - b) % p,
        "mul": (a * b) % p,
        "x2_plus_xy_plus_y2": (a * a + a * b + b * b) % p,
    }
    if op == "div":
        assert len(y) == p * (p - 1) and np.all(b != 0)
        np.testing.assert_array_equal((y * b) % p, a)  # y = a / b  <=>  y * b = a (mod p)
    else:
        assert len(y) == p * p
        np.testing.assert_array_equal(y, expected[op])
    assert len({(int(i), int(j)) for i, j in x[:, :2]}) == len(y)  # every pair once
    assert d.num_train == round(0.6 * len(y))


def test_mnist1d_published_shapes_and_determinism():
    state = np.random.get_state()  # noqa: NPY002
    d = ll.data.mnist1d()
    assert d.x_train.shape == (4000, 40) and d.y_train.shape == (4000,)
    assert d.x_test.shape == (1000, 40) and d.y_test.shape == (1000,)
    assert d.x_train.dtype == jnp.float32 and d.y_train.dtype == jnp.int32
    assert d.num_classes == 10 and d.name == "mnist1d"
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    assert np.all(np.isfinite(d.x_train))
    # Global NumPy RNG untouched; regeneration identical; another seed differs.
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # noqa: NPY002
    ll.data._mnist1d_cached.cache_clear()
    py_state = random.getstate()
    assert_same(d, ll.data.mnist1d())
    assert random.getstate() == py_state  # the generator seeds Python's RNG too
    small = ll.data.mnist1d(seed=0, num_samples=200, train_split=0.75)
    assert small.x_train.shape == (150, 40) and small.x_test.shape == (50, 40)
    assert differs(small, ll.data.mnist1d(seed=1, num_samples=200, train_split=0.75))


def _indexed_data(n=20, n_test=8):
    # Inputs carry their own index so a batch reveals which examples it contains.
    x = jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((1, 3))
    return Dataset(x, jnp.arange(n), jnp.zeros((n_test, 3)), jnp.zeros(n_test, jnp.int32))


def test_sample_batch_without_replacement_jit_vmap():
    data = _indexed_data()
    x, y = sample_batch(data, key=jr.key(0), batch_size=15)
    assert x.shape == (15, 3) and y.shape == (15,)
    assert len(np.unique(y)) == 15  # no example twice
    np.testing.assert_array_equal(x[:, 0], y)  # inputs and labels stay paired
    draw = jax.jit(functools.partial(sample_batch, batch_size=15))
    xj, yj = draw(data, key=jr.key(0))
    np.testing.assert_array_equal(yj, y)
    keys = jr.split(jr.key(1), 6)
    xs, ys = jax.vmap(lambda k: sample_batch(data, key=k, batch_size=15))(keys)
    assert xs.shape == (6, 15, 3)
    for k, row in zip(keys, ys, strict=True):
        np.testing.assert_array_equal(row, sample_batch(data, key=k, batch_size=15)[1])
        assert len(np.unique(row)) == 15
    assert len({tuple(np.asarray(r)) for r in ys}) > 1  # different keys, different batches
    # The whole split is returned as is.
    np.testing.assert_array_equal(sample_batch(data, key=jr.key(0), batch_size=20)[1], data.y_train)
    xt, _ = sample_batch(data, key=jr.key(0), batch_size=4, split="test")
    assert xt.shape == (4, 3)


def test_sample_batch_is_uniform():
    # Each of n examples is in a batch of b with probability b/n: check counts within 5 s.e.
    n, b, trials = 10, 3, 2000
    data = _indexed_data(n)
    ys = jax.vmap(lambda k: sample_batch(data, key=k, batch_size=b)[1])(jr.split(jr.key(2), trials))
    counts = np.bincount(np.asarray(ys).ravel(), minlength=n)
    p = b / n
    se = np.sqrt(trials * p * (1 - p))
    assert np.all(np.abs(counts - trials * p) < 5 * se)


def test_bad_inputs_raise_clear_errors():
    data = _indexed_data()
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(data, key=jr.key(0), batch_size=21)
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch(data, key=jr.key(0), batch_size=0)
    with pytest.raises(ValueError, match="split"):
        sample_batch(data, key=jr.key(0), batch_size=2, split="val")
    with pytest.raises(ValueError, match="x_train"):
        Dataset(jnp.zeros((3, 2)), jnp.zeros(4), jnp.zeros((1, 2)), jnp.zeros(1))
    with pytest.raises(ValueError, match="key"):
        ll.data.gaussian_mixture(key="abc")
    with pytest.raises(ValueError, match="num_classes"):
        ll.data.gaussian_mixture(key=jr.key(0), num_classes=1)
    with pytest.raises(ValueError, match="num_train"):
        ll.data.linear_regression(key=jr.key(0), num_train=0)
    with pytest.raises(ValueError, match="rank"):
        ll.data.linear_regression(key=jr.key(0), dim=3, out_dim=2, rank=3)
    with pytest.raises(ValueError, match="operation"):
        ll.data.modular_arithmetic(7, "pow")
    with pytest.raises(ValueError, match="prime"):
        ll.data.modular_arithmetic(8, "div")
    with pytest.raises(ValueError, match="train_fraction"):
        ll.data.modular_arithmetic(7, "add", 1.5)
    with pytest.raises(ValueError, match="train_split"):
        ll.data.mnist1d(train_split=1.0)
    with pytest.raises(ValueError, match="noise: must be 0 with classify"):
        ll.data.teacher_student(ll.models.mlp([2, 3]), key=0, noise=0.1, classify=True)
    with pytest.raises(ValueError, match="key"):
        ll.data.epoch_batches(10, 3, key="abc")
    # NaN passes a plain ``noise < 0`` test and would make every target NaN.
    nan = float("nan")
    with pytest.raises(ValueError, match="noise"):
        ll.data.linear_regression(key=0, num_train=4, num_test=4, noise=nan)
    with pytest.raises(ValueError, match="noise"):
        ll.data.teacher_student(ll.models.mlp([2, 3, 1]), key=0, num_train=4, noise=nan)
    with pytest.raises(ValueError, match="separation"):
        ll.data.gaussian_mixture(key=0, num_train=4, num_test=4, separation=nan)
    with pytest.raises(ValueError, match="batch_size"):  # True is not 1
        sample_batch(data, key=jr.key(0), batch_size=True)
    # Int seeds work wherever keys do.
    assert ll.data.epoch_batches(10, 3, key=0).shape == (3, 3)
    np.testing.assert_array_equal(
        sample_batch(data, key=1, batch_size=4)[0],
        sample_batch(data, key=jr.key(1), batch_size=4)[0],
    )


def test_dataset_is_a_pytree():
    data = _indexed_data()
    assert len(jax.tree.leaves(data)) == 4
    total = jax.jit(lambda d: d.x_train.sum() + d.y_train.sum())(data)
    assert float(total) == float(3 * sum(range(20)) + sum(range(20)))
    doubled = jax.tree.map(lambda a: a * 2, data)
    assert isinstance(doubled, Dataset) and doubled.num_classes == data.num_classes


def test_dataset_astype(x64):
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=10, num_test=5)
    d64 = data.astype(jnp.float64)
    assert d64.x_train.dtype == jnp.float64 and d64.y_train.dtype == jnp.int32
    assert d64.name == data.name and d64.num_classes == data.num_classes


def test_epoch_batches_cover_each_example_once():
    idx = ll.data.epoch_batches(23, 5, key=jr.key(0))
    assert idx.shape == (4, 5)
    assert len(np.unique(np.asarray(idx))) == 20


def test_mnist1d_refuses_empty_splits_and_bad_seeds():
    with pytest.raises(ValueError, match="train_split"):
        ll.data.mnist1d(num_samples=10, train_split=0.01)
    with pytest.raises(ValueError, match="num_samples"):
        ll.data.mnist1d(num_samples=5)  # fewer than one per class
    with pytest.raises(ValueError, match="train_split"):  # 19 samples make 10, none to train
        ll.data.mnist1d(num_samples=19, train_split=0.06)
    d = ll.data.mnist1d(num_samples=25)  # whole classes: 20 examples, split 16 / 4
    assert (d.num_train, d.num_test) == (16, 4)
    with pytest.raises(ValueError, match="seed"):
        ll.data.mnist1d(seed="x")
