"""The fused softmax-cross-entropy against SoftMax -> CrossEntropy, and at extreme logits."""

from __future__ import annotations

import numpy as np
import pytest

from impl_numpy.modules import CrossEntropyModule, SoftmaxCrossEntropyModule, SoftMaxModule


@pytest.mark.parametrize("shape", [(1, 2), (1, 10), (7, 3), (128, 10)])
def test_fused_matches_softmax_then_cross_entropy(shape):
    s, c = shape
    rng = np.random.default_rng(0)
    z = rng.standard_normal(shape) * 4
    y = rng.integers(0, c, size=s)
    softmax, ce, fused = SoftMaxModule(), CrossEntropyModule(), SoftmaxCrossEntropyModule()
    p = softmax.forward(z)
    loss = ce.forward(p, y)
    dz = softmax.backward(ce.backward(p, y))  # S2 applied to C2
    np.testing.assert_allclose(fused.forward(z, y), loss, rtol=1e-13)
    np.testing.assert_allclose(fused.backward(z, y), dz, rtol=1e-12, atol=1e-15)


def test_fused_gradient_is_p_minus_onehot_over_s():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([2, 0])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = (p - np.eye(3)[y]) / 2
    fused = SoftmaxCrossEntropyModule()
    np.testing.assert_allclose(fused.forward(z, y), -np.mean(np.log(p[[0, 1], y])), rtol=1e-14)
    np.testing.assert_allclose(fused.backward(z, y), expected, rtol=1e-14)


def test_fused_backward_without_forward_recomputes():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((4, 5)), np.array([0, 1, 2, 4])
    a = SoftmaxCrossEntropyModule()
    a.forward(rng.standard_normal((4, 5)), y)  # a different batch is cached
    b = SoftmaxCrossEntropyModule()
    b.forward(z, y)
    np.testing.assert_array_equal(a.backward(z, y), b.backward(z, y))


def test_one_hot_labels_accepted():
    rng = np.random.default_rng(2)
    z, y = rng.standard_normal((3, 4)), np.array([3, 0, 1])
    onehot = np.eye(4)[y]
    fused = SoftmaxCrossEntropyModule()
    assert fused.forward(z, onehot) == fused.forward(z, y)
    p = SoftMaxModule().forward(z)
    np.testing.assert_array_equal(CrossEntropyModule().backward(p, onehot), CrossEntropyModule().backward(p, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_stay_finite(dtype, scale):
    rng = np.random.default_rng(3)
    z = (rng.choice([-1.0, 1.0], size=(6, 10)) * abs(scale)).astype(dtype)
    z[:, 0] = scale
    y = np.array([0, 1, 2, 3, 4, 5])
    fused = SoftmaxCrossEntropyModule()
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no overflow, no log(0), no 0/0
        loss = fused.forward(z, y)
        dz = fused.backward(z, y)
    assert np.isfinite(loss) and loss >= 0
    assert np.all(np.isfinite(dz))
    # samples whose target is a +1e4 logit among -1e4 ones cost ~0; the others cost ~2e4
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=1e-6)
    softmax = SoftMaxModule()
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        p = softmax.forward(z)
    assert np.all(np.isfinite(p))


def test_extreme_logits_exact_value():
    z = np.array([[1e4, -1e4, 0.0]])
    fused = SoftmaxCrossEntropyModule()
    np.testing.assert_allclose(fused.forward(z, np.array([1])), 2e4, rtol=1e-15)
    np.testing.assert_allclose(fused.forward(z, np.array([0])), 0.0, atol=1e-300)
    np.testing.assert_allclose(fused.backward(z, np.array([1])), [[1.0, -1.0, 0.0]], atol=1e-300)
