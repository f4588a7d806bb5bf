"""TorchBackend on CUDA: training, parity with the CPU, the graph and compile speed-ups, no copy per step.

Run on a GPU machine with ``pytest tests -m cuda``; skipped without CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.config import Config
from bench.data import make_synthetic
from bench.run import run_one
from bench.roofline import step_gemms
from impl_torch import TorchMLP
from bench.backends.torch_backend import TorchBackend

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]

N_FEATURES, N_CLASSES, BATCH = 256, 10, 64
STEPS = 20


@pytest.fixture(scope="module")
def data():
    return make_synthetic(2048, 256, 256, n_features=N_FEATURES, n_classes=N_CLASSES, seed=0)


def config(**kw) -> Config:
    base = dict(hidden_dims=[64], batch_size=BATCH, lr=0.05, epochs=2, eval_batch_size=100,
                reference_timing=False)
    base.update(kw)
    return Config(**base)


def backend_on(device, data, seed=0, **kw) -> TorchBackend:
    backend = TorchBackend(config(**kw), device)
    backend.load_data(data)
    backend.init_model(seed)
    return backend


def losses_of(backend, n_steps=STEPS, seed=1) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(len(backend._splits["train"][1]))
    idx = backend.device_indices(order)
    for k in range(n_steps):
        backend.train_batch(idx[k * BATCH:(k + 1) * BATCH])
    backend.synchronize()
    return backend.pop_step_records().losses


class TestCuda:
    def test_a_short_training_run_learns(self, data):
        backend = TorchBackend(config(), "cuda")
        backend.load_data(data)
        result = run_one(backend, backend.config, data, 0)
        assert result.status == "ok"
        assert result.run["test_acc"] > 0.5  # chance is 0.1
        assert result.run["peak_memory_bytes"] > 0
        info = backend.describe()
        assert info["cuda_device_name"] and info["cuda_capability"]

    @pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
    @pytest.mark.parametrize("residual", [False, True])
    def test_forward_loss_and_grads_match_the_cpu_from_the_same_weights(self, dtype, tol, residual):
        dims = [64, 32, 64] if residual else [64, 32]
        gen = torch.Generator().manual_seed(0)
        cpu = TorchMLP(N_FEATURES, dims, N_CLASSES, residual=residual, generator=gen, dtype=dtype)
        gpu = TorchMLP(N_FEATURES, dims, N_CLASSES, residual=residual, dtype=dtype, device="cuda")
        gpu.import_state(cpu.export_state())
        x = torch.randn(BATCH, N_FEATURES, dtype=dtype, generator=gen)
        y = torch.randint(0, N_CLASSES, (BATCH,), generator=gen)
        results = []
        for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
            logits = model(x.to(dev))
            loss = F.cross_entropy(logits, y.to(dev))
            loss.backward()
            results.append((logits.detach().cpu(), loss.detach().cpu(),
                            {n: p.grad.cpu() for n, p in model.named_parameters()}))
        (l_c, loss_c, g_c), (l_g, loss_g, g_g) = results
        torch.testing.assert_close(l_g, l_c, rtol=tol, atol=tol)
        torch.testing.assert_close(loss_g, loss_c, rtol=tol, atol=tol)
        for name in g_c:
            scale = g_c[name].abs().max().clamp_min(1e-30)
            torch.testing.assert_close(g_g[name] / scale, g_c[name] / scale, rtol=tol, atol=tol,
                                       msg=name)

    @pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-4)])
    def test_backend_losses_match_the_cpu_backend(self, data, dtype, tol):
        d = data if dtype == "float32" else make_synthetic(2048, 256, 256, n_features=N_FEATURES,
                                                           seed=0, dtype="float64")
        cpu = backend_on("cpu", d, dtype=dtype, momentum=0.9)
        gpu = backend_on("cuda", d, dtype=dtype, momentum=0.9)
        for name, value in cpu.export_state().items():  # the init is drawn on the host
            np.testing.assert_array_equal(gpu.export_state()[name], value, err_msg=name)
        np.testing.assert_allclose(losses_of(gpu), losses_of(cpu), rtol=tol, atol=tol)

    @pytest.mark.parametrize("speedup", [dict(cuda_graph=True), dict(torch_compile="reduce-overhead")],
                             ids=["cuda_graph", "reduce-overhead"])
    def test_speedups_give_the_eager_losses(self, data, speedup):
        eager = backend_on("cuda", data, momentum=0.9)
        fast = backend_on("cuda", data, momentum=0.9, **speedup)
        start = eager.export_state()
        first = losses_of(fast)  # includes graph capture / compilation
        np.testing.assert_allclose(first, losses_of(eager), rtol=1e-5, atol=1e-5)
        # import restores the weights and restarts the momentum: the same losses again
        fast.import_state(start)
        np.testing.assert_allclose(losses_of(fast), first, rtol=1e-5, atol=1e-5)
        assert fast.describe()["cuda_graph"] == speedup.get("cuda_graph", False)
        assert fast.describe()["torch_compile"] == speedup.get("torch_compile", "none")

    @pytest.mark.parametrize("speedup", [{}, dict(cuda_graph=True)], ids=["eager", "cuda_graph"])
    def test_no_host_to_device_copy_per_step(self, data, speedup):
        from torch.profiler import ProfilerActivity, profile

        backend = backend_on("cuda", data, **speedup)
        losses_of(backend, n_steps=5)  # warm-up (and capture)
        order = np.random.default_rng(2).permutation(2048)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            idx = backend.device_indices(order)  # the one copy of the epoch
            for k in range(STEPS):
                backend.train_batch(idx[k * BATCH:(k + 1) * BATCH])
            backend.synchronize()
        names = [e.name for e in prof.events()]
        htod = [n for n in names if "HtoD" in n]
        assert any("Memcpy" in n or "memcpy" in n.lower() for n in names), "the profiler saw no copies"
        assert len(htod) <= 1, htod
        assert len(backend.pop_step_records().losses) == STEPS

    def test_tf32_is_recorded_and_the_global_flag_restored(self, data):
        before = torch.backends.cuda.matmul.allow_tf32
        backend = backend_on("cuda", data, tf32=True)
        losses_of(backend, n_steps=3)
        backend.evaluate("val")
        assert torch.backends.cuda.matmul.allow_tf32 == before
        assert backend.describe()["tf32"] is True

    def test_gemm_seconds_on_cuda(self, data):
        backend = backend_on("cuda", data)
        seconds = backend.gemm_seconds(step_gemms(N_FEATURES, [64], N_CLASSES, BATCH), 10)
        assert 0 < seconds < 10
