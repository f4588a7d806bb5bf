"""The MLP's structure: shared names and shapes, init, state dicts, residual blocks."""

from __future__ import annotations

import numpy as np
import pytest

from impl_numpy import MLP, LinearModule, ResidualBlock
from impl_numpy.modules import ELUModule


def test_names_and_shapes_shared_by_plain_and_residual():
    plain = MLP(10, [6, 3, 6], 4, rng=np.random.default_rng(0))
    res = MLP(10, [6, 3, 6], 4, residual=True, rng=np.random.default_rng(0))
    expected = [("linears.0.weight", (6, 10)), ("linears.0.bias", (6,)),
                ("linears.1.weight", (3, 6)), ("linears.1.bias", (3,)),
                ("linears.2.weight", (6, 3)), ("linears.2.bias", (6,)),
                ("linears.3.weight", (4, 6)), ("linears.3.bias", (4,))]
    for model in (plain, res):
        assert [(n, p.shape) for n, p in model.named_parameters()] == expected
        assert [n for n, _ in model.named_grads()] == [n for n, _ in expected]
        assert all(p.dtype == np.float32 for p in model.parameters())
    # the same rng gives the same draws whatever the wiring; the residual block's layers are scaled (R2)
    scale = {"linears.1.weight": 1.0, "linears.2.weight": 0.0}  # one block: 1/sqrt(1), then zero
    for (name, a), (_, b) in zip(plain.named_parameters(), res.named_parameters()):
        np.testing.assert_array_equal(a * np.float32(scale.get(name, 1.0)), b)


def test_residual_init_starts_every_block_as_the_identity_and_scales_its_first_layer():
    dims = [16] * 9  # a stem and four blocks
    res = MLP(40, dims, 5, residual=True, rng=np.random.default_rng(0), dtype=np.float64)
    plain = MLP(40, dims, 5, rng=np.random.default_rng(0), dtype=np.float64)
    for k in range(1, 5):
        np.testing.assert_allclose(res.linears[2 * k - 1].params["weight"],
                                   plain.linears[2 * k - 1].params["weight"] / 2.0)  # 1/sqrt(4 blocks)
        assert not res.linears[2 * k].params["weight"].any()                       # the last layer: zero
    x = np.random.default_rng(1).standard_normal((3, 40))
    stem = np.where(x @ res.linears[0].params["weight"].T > 0, x @ res.linears[0].params["weight"].T,
                    np.expm1(np.minimum(x @ res.linears[0].params["weight"].T, 0)))
    np.testing.assert_allclose(res.forward(x), stem @ res.linears[-1].params["weight"].T, atol=1e-12)


def test_init_statistics_and_determinism():
    a = MLP(3072, [512, 256], 10, rng=np.random.default_rng(5))
    b = MLP(3072, [512, 256], 10, rng=np.random.default_rng(5))
    c = MLP(3072, [512, 256], 10, rng=np.random.default_rng(6))
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a.parameters()[0], c.parameters()[0])
    w0, w1, w2 = a.linears[0].params["weight"], a.linears[1].params["weight"], a.linears[2].params["weight"]
    np.testing.assert_allclose(w0.std(), np.sqrt(1 / 3072), rtol=0.01)  # input layer: no gain
    np.testing.assert_allclose(w1.std(), np.sqrt(2 / 512), rtol=0.02)
    np.testing.assert_allclose(w2.std(), np.sqrt(2 / 256), rtol=0.05)
    assert abs(float(w0.mean())) < 0.01 * np.sqrt(1 / 3072) * 10
    for lin in a.linears:
        assert not lin.params["bias"].any()
        assert not lin.grads["weight"].any() and not lin.grads["bias"].any()


def test_course_interface_linear():
    layer = LinearModule(7, 3)
    assert layer.params["weight"].shape == (3, 7) and layer.params["bias"].shape == (3,)
    assert layer.grads["weight"].shape == (3, 7) and layer.grads["bias"].shape == (3,)
    assert layer.params["weight"].dtype == np.float64
    x = np.random.default_rng(0).standard_normal((2, 7))
    np.testing.assert_allclose(layer.forward(x), x @ layer.params["weight"].T, rtol=1e-14)
    layer.clear_cache()
    with pytest.raises(RuntimeError, match="without a cached forward"):
        layer.backward(np.ones((2, 3)))


def test_state_dict_round_trip_and_cast():
    a = MLP(6, [5], 3, rng=np.random.default_rng(1))
    b = MLP(6, [5], 3, rng=np.random.default_rng(2), dtype=np.float64)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["linears.0.bias"][:] = 7  # a copy: the model is untouched
    assert not a.linears[0].params["bias"].any()
    b.load_state_dict(a.state_dict())
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert pb.dtype == np.float64
        np.testing.assert_array_equal(pa, pb)


def test_load_state_dict_mismatches():
    model = MLP(6, [5], 3, rng=np.random.default_rng(1))
    state = model.state_dict()
    bad = dict(state)
    del bad["linears.1.bias"]
    with pytest.raises(ValueError, match=r"missing \['linears.1.bias'\]"):
        model.load_state_dict(bad)
    bad = dict(state, extra=np.zeros(1))
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        model.load_state_dict(bad)
    bad = dict(state)
    bad["linears.0.weight"] = np.zeros((6, 5))
    with pytest.raises(ValueError, match=r"linears.0.weight has shape \(6, 5\), the model's is \(5, 6\)"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(model.linears[0].params["weight"], state["linears.0.weight"])


@pytest.mark.parametrize("dims, example", [([128, 64], "[128, 128, 128]"), ([128], "[128, 128, 128]"),
                                           ([64, 32, 48], "[64, 64, 64]"), ([8, 8, 8, 8], "[8, 8, 8, 8, 8]")])
def test_residual_bad_dims_message(dims, example):
    with pytest.raises(ValueError) as info:
        MLP(10, dims, 3, residual=True)
    message = str(info.value)
    assert f"hidden_dims {dims}" in message
    assert "[F, N1, F, N2, F, ...]" in message
    assert f"e.g. {example}" in message


def test_residual_block_shape_constraint():
    with pytest.raises(ValueError, match=r"Linear2 must map 3 -> 5 .* got 3 -> 4"):
        ResidualBlock(LinearModule(5, 3), ELUModule(), LinearModule(3, 4))


def test_residual_identity_term_exact():
    """With both weights zero, f(x) = 0 and its backward gives 0: the block's dx is dout exactly."""
    rng = np.random.default_rng(3)
    block = ResidualBlock.build(4, 6, "elu", rng=rng)
    block.linear1.params["weight"][:] = 0
    block.linear2.params["weight"][:] = 0
    x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    np.testing.assert_array_equal(block.forward(x), x)
    np.testing.assert_array_equal(block.backward(dout), dout)


def test_residual_identity_term_added_to_branch():
    """dx = dout + (dout through f): the Jacobian is I + df/dx."""
    rng = np.random.default_rng(4)
    block = ResidualBlock.build(3, 2, "tanh", rng=rng)
    x, dout = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    block.forward(x)
    dx = block.backward(dout).copy()
    branch = block.linear1.backward(block.activation.backward(block.linear2.backward(dout)))
    np.testing.assert_allclose(dx, dout + branch, rtol=1e-14)


def test_residual_forward_matches_formula():
    rng = np.random.default_rng(5)
    model = MLP(5, [4, 3, 4, 2, 4], 3, "relu", residual=True, rng=rng, dtype=np.float64)
    x = rng.standard_normal((6, 5))
    w = [(lin.params["weight"], lin.params["bias"]) for lin in model.linears]
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    a = relu(x @ w[0][0].T + w[0][1])
    a = a + relu(a @ w[1][0].T + w[1][1]) @ w[2][0].T + w[2][1]
    a = a + relu(a @ w[3][0].T + w[3][1]) @ w[4][0].T + w[4][1]
    np.testing.assert_allclose(model.forward(x), a @ w[5][0].T + w[5][1], rtol=1e-13)


def test_repr_and_helpers():
    model = MLP(4, [3], 2, "tanh", rng=np.random.default_rng(7), dtype=np.float64)
    assert model.num_parameters() == 3 * 4 + 3 + 2 * 3 + 2
    text = repr(model)
    assert text.startswith("MLP(4 -> 3 -> 2, activation=tanh, residual=False, dtype=float64, parameters=23)")
    assert "LinearModule(in_features=4, out_features=3, input_layer=True)" in text
    for g in model.grads():
        g[...] = 1
    model.zero_grad()
    assert not any(g.any() for g in model.grads())


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLP(4, [3], 2, "gelu")
    with pytest.raises(ValueError, match="positive integers"):
        MLP(4, [], 2)
    with pytest.raises(ValueError, match="positive integers"):
        MLP(4, [3, 0], 2)
