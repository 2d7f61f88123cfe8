import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lljax as ll
from lljax.losses import accuracy_from_logits, softmax_cross_entropy, squared_error


def naive_cross_entropy(logits, labels):
    """-log softmax in float64 NumPy with the max shift: the reference."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, np.asarray(labels)[..., None], -1)[..., 0]


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_cross_entropy_matches_reference_float32(scale):
    logits = scale * jax.random.normal(jax.random.key(0), (7, 5))
    labels = jax.random.randint(jax.random.key(1), (7,), 0, 5)
    got = softmax_cross_entropy(logits, labels)
    assert got.dtype == jnp.float32 and got.shape == (7,)
    np.testing.assert_allclose(got, naive_cross_entropy(logits, labels), rtol=1e-5, atol=1e-5)


def test_cross_entropy_matches_reference_float64(x64):
    logits = 10.0 * jax.random.normal(jax.random.key(0), (7, 5), jnp.float64)
    labels = jax.random.randint(jax.random.key(1), (7,), 0, 5)
    got = softmax_cross_entropy(logits, labels)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, naive_cross_entropy(logits, labels), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_cross_entropy_huge_logits_stable(x64, dtype):
    # A naive exp() overflows at 1e4 (float32) and 1e308-ish never fits; the loss must not.
    big = 1e4 if dtype == jnp.float32 else 1e300
    logits = jnp.array([[big, 0.0, -big], [0.0, big, big]], dtype)
    labels = jnp.array([0, 2])
    got = softmax_cross_entropy(logits, labels)
    assert jnp.all(jnp.isfinite(got))
    np.testing.assert_allclose(got, [0.0, np.log(2.0)], rtol=1e-6, atol=1e-6)
    wrong = softmax_cross_entropy(logits, jnp.array([2, 0]))
    np.testing.assert_allclose(wrong, [2 * big, big + np.log(2.0)], rtol=1e-6)
    grad = jax.grad(lambda z: softmax_cross_entropy(z, labels).sum())(logits)
    assert jnp.all(jnp.isfinite(grad))


def test_integer_and_one_hot_labels_agree():
    logits = jax.random.normal(jax.random.key(2), (6, 4))
    labels = jnp.array([0, 3, 1, 1, 2, 3])
    one_hot = jax.nn.one_hot(labels, 4)
    np.testing.assert_allclose(
        softmax_cross_entropy(logits, labels), softmax_cross_entropy(logits, one_hot), rtol=1e-6
    )
    assert accuracy_from_logits(logits, labels) == accuracy_from_logits(logits, one_hot)


def test_one_hot_with_minus_inf_logit_is_finite():
    logits = jnp.array([[0.0, -jnp.inf, 1.0]])
    got = softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(got, naive_cross_entropy(np.array([[0.0, -1e30, 1.0]]), [0]))


def test_cross_entropy_bad_label_shape():
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros((3, 1), jnp.int32))
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(jnp.zeros((3, 4)), jnp.zeros((3, 5)))


def test_squared_error_and_mse():
    out = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    tgt = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(squared_error(out, tgt), [2.5, 2.5])
    # Scalar targets against a single output column.
    np.testing.assert_allclose(squared_error(out[:, :1], tgt[:, 0]), [0.5, 0.5])
    with pytest.raises(ValueError, match="targets"):
        squared_error(out, tgt[:, 0])
    # Per-example losses of (batch, h, w) outputs; an empty batch gives no losses.
    img = jnp.arange(12.0).reshape(2, 3, 2)
    np.testing.assert_allclose(squared_error(img, 0 * img), 0.5 * np.sum(img**2, (1, 2)))
    assert squared_error(jnp.zeros((0, 3, 2)), jnp.zeros((0, 3, 2))).shape == (0,)
    with pytest.raises(ValueError, match="outputs"):
        squared_error(jnp.float32(1.0), jnp.float32(0.0))

    model = ll.models.mlp([3, 2], activation="identity")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    pred = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"][None, :]
    expected = 0.5 * np.mean(np.sum((np.asarray(pred) - np.asarray(y)) ** 2, -1))
    np.testing.assert_allclose(ll.losses.mse(model)(params, (x, y)), expected, rtol=1e-5)


def test_cross_entropy_loss_fn_and_accuracy():
    model = ll.models.mlp([3, 4], activation="identity")
    params = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
    loss_fn = ll.losses.cross_entropy(model)
    logits = model.apply(params, x)
    np.testing.assert_allclose(
        loss_fn(params, (x, y)), naive_cross_entropy(logits, y).mean(), rtol=1e-5
    )
    assert loss_fn.model is model
    np.testing.assert_allclose(
        loss_fn.per_example(logits, y), naive_cross_entropy(logits, y), rtol=1e-5
    )
    acc = ll.losses.accuracy(model)(params, (x, y))
    assert acc == np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y))
    # jit and vmap over a population give the same losses as a loop.
    keys = jax.random.split(jax.random.key(3), 3)
    pop = jax.vmap(model.init)(keys)
    vm = jax.jit(jax.vmap(loss_fn, in_axes=(0, None)))(pop, (x, y))
    loop = [loss_fn(model.init(k), (x, y)) for k in keys]
    np.testing.assert_allclose(vm, loop, rtol=1e-5)


def test_accuracy_known_values():
    logits = jnp.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    assert float(accuracy_from_logits(logits, jnp.array([0, 1, 1, 0]))) == 0.5
    assert float(accuracy_from_logits(logits, jnp.array([0, 1, 0, 1]))) == 1.0


def test_integer_labels_out_of_range_raise_or_give_nan():
    logits = jax.random.normal(jax.random.key(4), (4, 3))
    for bad in ([0, 1, 2, -1], [0, 1, 3, 2]):
        with pytest.raises(ValueError, match=r"labels: .*\[0, 3\)"):
            softmax_cross_entropy(logits, jnp.array(bad))
        with pytest.raises(ValueError, match=r"labels: .*\[0, 3\)"):
            accuracy_from_logits(logits, jnp.array(bad))
    # Traced labels cannot be checked: a bad label gives NaN, never another class's loss
    # (take_along_axis alone wraps -1 to the last class).
    got = jax.jit(softmax_cross_entropy)(logits, jnp.array([0, 1, 2, -1]))
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 1, 2, 0]))
    np.testing.assert_allclose(got[:3], ref[:3], rtol=1e-6)
    assert np.isnan(got[3])
    assert np.isnan(jax.jit(softmax_cross_entropy)(logits, jnp.array([3, 0, 0, 0]))[0])


def test_probability_labels_must_be_non_negative_and_finite():
    logits = jnp.zeros((2, 3))
    for bad in ([1.5, -0.5, 0.0], [jnp.nan, 0.0, 1.0], [jnp.inf, 0.0, 0.0]):
        with pytest.raises(ValueError, match="labels: probability labels must be finite"):
            softmax_cross_entropy(logits, jnp.array([bad, [1.0, 0.0, 0.0]]))


def test_probability_labels_keep_logits_dtype(x64):
    logits = jax.random.normal(jax.random.key(5), (4, 3), jnp.float32)
    soft = jax.nn.softmax(jax.random.normal(jax.random.key(6), (4, 3), jnp.float32))
    ref = optax.softmax_cross_entropy(logits, soft)
    got = softmax_cross_entropy(logits, soft.astype(jnp.float64))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    got16 = softmax_cross_entropy(logits.astype(jnp.bfloat16), soft)
    assert got16.dtype == jnp.bfloat16
    np.testing.assert_allclose(got16.astype(jnp.float32), ref, rtol=3e-2)


def test_accuracy_one_hot_labels_must_match_the_classes():
    logits = jnp.array([[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="labels: one-hot"):
        accuracy_from_logits(logits, jax.nn.one_hot(jnp.array([0, 4]), 5))
    with pytest.raises(ValueError, match="labels: one-hot"):
        accuracy_from_logits(logits, jax.nn.one_hot(jnp.array([0, 1]), 3))
    assert float(accuracy_from_logits(logits, jax.nn.one_hot(jnp.array([0, 2]), 4))) == 0.5
