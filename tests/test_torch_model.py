"""TorchMLP on its own: init, structure, residual checks, and the shared-name state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impl_numpy import MLP
from impl_torch import TorchMLP, forward_loss


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_init_is_kaiming_normal_fan_in_without_gain_on_the_input_layer():
    gen = torch.Generator().manual_seed(0)
    model = TorchMLP(2000, [1000, 500], 10, generator=gen, dtype=torch.float64)
    for i, lin in enumerate(model.linears):
        expected = math.sqrt((1.0 if i == 0 else 2.0) / lin.in_features)
        w = lin.weight.detach()
        assert abs(w.std().item() / expected - 1) < 0.02, (i, w.std().item(), expected)
        assert abs(w.mean().item()) < 0.05 * expected
        assert torch.count_nonzero(lin.bias) == 0


def test_the_residual_init_is_the_numpy_one():
    """Both implementations take every layer's std from impl_common.arch.init_std (R2)."""
    from impl_common.arch import init_std, layer_widths
    from impl_numpy.mlp import MLP

    dims = [64, 32, 64, 32, 64]  # a stem and two blocks
    model = TorchMLP(100, dims, 10, residual=True, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    numpy = MLP(100, dims, 10, residual=True, rng=np.random.default_rng(0), dtype=np.float64)
    widths = layer_widths(100, dims, 10)
    for i, (lin, nlin) in enumerate(zip(model.linears, numpy.linears)):
        expected = init_std(i, widths, residual=True)
        for w in (lin.weight.detach().numpy(), nlin.params["weight"]):
            assert (w.std() == 0) if expected == 0 else abs(w.std() / expected - 1) < 0.15, (i, w.std())
    assert init_std(2, widths, True) == 0 and init_std(4, widths, True) == 0
    assert init_std(1, widths, True) == pytest.approx(math.sqrt(2 / 64) / math.sqrt(2))


def test_same_generator_seed_same_weights_and_the_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = TorchMLP(30, [20, 10], 5, generator=torch.Generator().manual_seed(7))
    b = TorchMLP(30, [20, 10], 5, generator=torch.Generator().manual_seed(7))
    c = TorchMLP(30, [20, 10], 5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), before)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), n
        if n.endswith("weight"):
            assert not torch.equal(pa, pc), n


def test_reset_parameters_redraws_from_the_generator():
    model = TorchMLP(8, [6], 3, generator=torch.Generator().manual_seed(1))
    first = model.export_state()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.reset_parameters(torch.Generator().manual_seed(1))
    for name, value in model.export_state().items():
        np.testing.assert_array_equal(value, first[name], err_msg=name)


@pytest.mark.parametrize("dims, residual", [([16], False), ([16, 8], False), ([16, 8, 16], True),
                                            ([16, 4, 16, 12, 16], True)])
def test_forward_is_the_documented_composition(dims, residual):
    gen = torch.Generator().manual_seed(2)
    model = TorchMLP(12, dims, 5, "elu", alpha=0.7, residual=residual, generator=gen,
                     dtype=torch.float64)
    x = torch.randn(9, 12, generator=gen, dtype=torch.float64)
    L = model.linears
    h = lambda v: F.elu(v, 0.7)  # noqa: E731
    a = h(L[0](x))
    if residual:
        for k in range(1, len(dims), 2):
            a = a + L[k + 1](h(L[k](a)))
    else:
        for lin in L[1:-1]:
            a = h(lin(a))
    expected = L[-1](a)
    out = model(x)
    assert out.shape == (9, 5)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_residual_layers_have_the_plain_layers_names_and_shapes():
    plain = TorchMLP(12, [16, 8, 16], 5, residual=False)
    res = TorchMLP(12, [16, 8, 16], 5, residual=True)
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
           {k: v.shape for k, v in res.state_dict().items()}


@pytest.mark.parametrize("dims, suggestion", [([16, 8], "[16, 16, 16]"), ([16], "[16, 16, 16]"),
                                              ([16, 8, 12], "[16, 16, 16]"),
                                              ([16, 8, 16, 4], "[16, 16, 16, 16, 16]")])
def test_residual_with_unfit_dims_says_which_dims_work(dims, suggestion):
    with pytest.raises(ValueError, match=r"\[F, N1, F, N2, F, \.\.\.\]") as info:
        TorchMLP(12, dims, 5, residual=True)
    assert suggestion in str(info.value)
    assert str(dims) in str(info.value)


def test_unknown_activation_and_bad_widths_are_refused():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        TorchMLP(4, [3], 2, "gelu")
    with pytest.raises(ValueError, match="positive"):
        TorchMLP(4, [3, 0], 2)


@pytest.mark.parametrize("dims, residual", [([7], False), ([6, 5], False), ([6, 3, 6], True)])
def test_state_names_and_shapes_equal_the_numpy_mlp(dims, residual):
    torch_state = TorchMLP(11, dims, 4, residual=residual).export_state()
    numpy_state = MLP(11, dims, 4, residual=residual, rng=np.random.default_rng(0)).state_dict()
    assert list(torch_state) == list(numpy_state)
    assert {k: v.shape for k, v in torch_state.items()} == {k: v.shape for k, v in numpy_state.items()}
    assert all(isinstance(v, np.ndarray) for v in torch_state.values())


def test_export_is_a_copy_and_import_writes_in_place():
    model = TorchMLP(5, [4], 3, generator=torch.Generator().manual_seed(0))
    state = model.export_state()
    state["linears.0.weight"][...] = 9.0  # must not reach the model
    assert not torch.any(model.linears[0].weight == 9.0)
    storage = model.linears[0].weight.data_ptr()
    model.import_state(state)
    assert model.linears[0].weight.data_ptr() == storage
    assert torch.all(model.linears[0].weight == 9.0)


def test_import_state_names_every_mismatch():
    model = TorchMLP(5, [4], 3)
    state = model.export_state()
    del state["linears.1.bias"]
    state["linears.2.weight"] = np.zeros((3, 4))
    state["linears.0.weight"] = np.zeros((4, 6))
    with pytest.raises(ValueError) as info:
        model.import_state(state)
    msg = str(info.value)
    assert "missing linears.1.bias" in msg
    assert "unexpected linears.2.weight" in msg
    assert "linears.0.weight has shape (4, 6), expected (4, 5)" in msg


def test_forward_loss_returns_mean_loss_and_correct_count():
    model = TorchMLP(6, [5], 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    loss, correct = forward_loss(model, x, y)
    logits = model(x)
    expected = (torch.logsumexp(logits, 1) - logits[torch.arange(10), y]).mean()  # F1
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert correct.dtype == torch.int64 and correct.item() == int((logits.argmax(1) == y).sum())


def test_repr_names_the_architecture():
    text = repr(TorchMLP(12, [16, 8, 16], 5, "elu", alpha=0.5, residual=True))
    assert "12 -> [16, 8, 16] -> 5, elu(alpha=0.5), residual=True" in text
