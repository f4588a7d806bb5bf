"""JaxBackend on the CPU against the Backend protocol, numpy:cpu in lock-step, and a machine without JAX.

Lock-step tolerances: float64 agrees with numpy:cpu to 1e-10 over every step
(the same arithmetic). float32 agrees to 1e-4 relative (the harness's
``LOCKSTEP_RTOL``): XLA and OpenBLAS sum each product in a different order,
which moves a float32 result by up to about K u (K the summed length, u =
6e-8: 3e-6 for K = 48), and SGD carries each step's difference into the next
weights, so the losses drift apart slowly; 1e-4 leaves room for that drift
over these 32 steps while a wrong step (a missing term, a transposed
gradient) moves the loss by far more.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

jax = pytest.importorskip("jax")

from bench.backends import listing, resolve  # noqa: E402
from bench.backends.api import Backend  # noqa: E402
from bench.backends.jax_backend import JaxBackend, available  # noqa: E402
from bench.backends.numpy_backend import NumpyBackend  # noqa: E402
from bench.backends.torch_backend import TorchBackend  # noqa: E402
from bench.lockstep import LOCKSTEP_RTOL  # noqa: E402
from bench.config import Config  # noqa: E402
from bench.data import make_synthetic  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.run import LoopHooks, epoch_order, run_one  # noqa: E402
from bench.roofline import Gemm, step_gemms  # noqa: E402
from bench.threads import default_threads  # noqa: E402
from bench.backends.jax_backend import normalised_rows  # noqa: E402
from bench.data.dataset import normaliser  # noqa: E402
from conftest import assert_one_line_error  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from test_gather import batches, dataset  # noqa: E402
import impl_jax  # noqa: E402

N_FEATURES, N_CLASSES = 48, 10
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return make_synthetic(1024, 300, 200, n_features=N_FEATURES, n_classes=N_CLASSES, seed=0)


@pytest.fixture(scope="module")
def data64():
    return make_synthetic(1024, 300, 200, n_features=N_FEATURES, n_classes=N_CLASSES, seed=0,
                          dtype="float64")


def config(**kw) -> Config:
    base = dict(hidden_dims=[32], batch_size=32, lr=0.05, eval_batch_size=128, epochs=2,
                reference_timing=False)
    base.update(kw)
    return Config(**base)


def make_backend(data, seed=0, **kw) -> JaxBackend:
    backend = JaxBackend(config(**kw))
    backend.load_data(data)
    backend.init_model(seed)
    return backend


def lockstep_losses(backend, data, state, seed=1):
    """Every step's loss of one harness run (2 epochs of 32 steps) from ``state``."""
    result = run_one(backend, backend.config, data, seed, initial_state=state, record_steps=True)
    assert result.status == "ok"
    return np.array([s["loss"] for s in result.steps])


def test_conforms_to_the_protocol_is_registered_and_records_its_compile_time(data):
    backend = make_backend(data, lr=0.0517)  # settings no other test compiles
    assert isinstance(backend, Backend)
    assert (backend.impl, backend.device) == ("jax", "cpu")
    chosen, _ = resolve(["jax:cpu"])
    assert chosen[0].name == "jax:cpu" and isinstance(chosen[0].make(config()), JaxBackend)
    info = backend.describe()
    assert info["compile_seconds"] > 0 and info["jax_version"] == jax.__version__
    assert (info["dtype"], info["jax_scan"], info["threads"]) == ("float32", False, default_threads())
    backend.init_model(1)  # the same settings and shapes: nothing to compile again
    assert backend.describe()["compile_seconds"] == 0
    assert make_backend(data, lr=0.0517).describe()["compile_seconds"] == 0  # nor in a new backend
    assert backend.peak_memory_bytes() is None


def test_available_answers_for_any_device_string():
    ok, reason = available("cpu")
    assert ok and "XLA" in reason
    for bad in ("tpu", "cpu:1", "cuda:x"):
        ok, reason = available(bad)
        assert not ok and "unknown device" in reason
    if not any(d.platform == "gpu" for d in jax.devices()):
        ok, reason = available("cuda")
        assert not ok and "jax[cuda12]" in reason


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", LOCKSTEP_RTOL)])
def test_lockstep_with_numpy_from_the_same_weights(data, data64, dtype, rtol):
    d = data64 if dtype == "float64" else data
    cfg = config(dtype=dtype, momentum=0.9, weight_decay=1e-3)
    ref = NumpyBackend(cfg)
    ref.load_data(d)
    ref.init_model(1)
    state = ref.export_state()
    expected = lockstep_losses(ref, d, state)
    jx = JaxBackend(cfg)
    jx.load_data(d)
    got = lockstep_losses(jx, d, state)
    assert got.shape == expected.shape == (2 * 1024 // 32,)
    np.testing.assert_allclose(got, expected, rtol=rtol)
    assert np.abs(got - expected).max() > 0 or dtype == "float64"  # two libraries, not one


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_scan_gives_the_losses_of_the_steps_one_by_one(data, data64, dtype):
    d = data64 if dtype == "float64" else data
    state = make_backend(d, dtype=dtype).export_state()
    steps = lockstep_losses(make_backend(d, dtype=dtype, momentum=0.9), d, state)
    scanned = make_backend(d, dtype=dtype, momentum=0.9, jax_scan=True)
    assert scanned.describe()["jax_scan"] is True
    np.testing.assert_allclose(lockstep_losses(scanned, d, state), steps,
                               rtol=1e-12 if dtype == "float64" else 1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not available("cuda")[0], reason=f"jax:cuda: {available('cuda')[1]}")
@pytest.mark.parametrize("scan", [False, True])
def test_jax_cuda_in_lockstep_with_numpy_cpu(data, scan):
    ref = NumpyBackend(config(momentum=0.9))
    ref.load_data(data)
    ref.init_model(1)
    state = ref.export_state()
    expected = lockstep_losses(ref, data, state)
    gpu = JaxBackend(config(momentum=0.9, jax_scan=scan), "cuda")
    gpu.load_data(data)
    np.testing.assert_allclose(lockstep_losses(gpu, data, state), expected, rtol=LOCKSTEP_RTOL)
    assert gpu.peak_memory_bytes() > 0 and gpu.describe()["device_name"]


def test_no_compilation_after_the_start(data):
    """Everything is compiled in init_model: no epoch, evaluation or test split compiles."""
    compiles, watching = [], [False]
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(name) if watching[0] and "backend_compile" in name
        else None)

    class Watch(LoopHooks):
        def before_training(self, backend):
            watching[0] = True

    for scan in (False, True):
        backend = JaxBackend(config(jax_scan=scan, eval_batch_size=100))
        backend.load_data(data)
        result = run_one(backend, backend.config, data, 0, hooks=[Watch()])
        watching[0] = False
        assert result.status == "ok" and math.isfinite(result.run["test_acc"])
    assert compiles == []


@settings(max_examples=25, deadline=None)
@given(batches())
def test_a_batch_gathered_from_uint8_is_the_normalised_split_bit_for_bit(case):
    raw, mean, std, dtype, rows = case
    data = dataset(raw, mean, std, dtype)
    shift, scale = normaliser(data.mean, data.std, data.n_features, dtype)
    with impl_jax.precision(dtype):
        x, y = jax.jit(normalised_rows)((raw, data.y_train.astype(np.int32), shift, scale),
                                        rows.astype(np.int32))
        assert x.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(x), data.x_train[rows])
    np.testing.assert_array_equal(np.asarray(y), data.y_train[rows])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_on_the_uint8_path_equals_the_float_path(dtype):
    data = make_synthetic(512, 64, 64, seed=5, dtype=dtype)
    losses = []
    for source in ("normalised", "uint8"):
        backend = JaxBackend(config(dtype=dtype, gather_from=source, eval_batch_size=64))
        backend.load_data(data)
        assert backend._train[0].dtype == (np.uint8 if source == "uint8" else np.dtype(dtype))
        result = run_one(backend, backend.config, data, 3, record_steps=True)
        losses.append([s["loss"] for s in result.steps] + [result.run["test_loss"]])
    np.testing.assert_array_equal(losses[0], losses[1])


def test_the_gather_alone_is_timed_after_every_epoch(data):
    chosen, _ = resolve(["jax:cpu"])
    record = run_one(chosen[0], config(reference_timing=True), data, 0)
    assert record.status == "ok"
    assert all(e["gather_seconds"] > 0 for e in record.epochs)


def test_float64_does_not_leak_into_float32_runs_or_other_backends(data, data64):
    def losses(make, d, **kw):
        backend = make(config(**kw))
        backend.load_data(d)
        backend.init_model(3)
        return lockstep_losses(backend, d, backend.export_state())

    before = losses(JaxBackend, data), losses(TorchBackend, data), losses(NumpyBackend, data)
    assert losses(JaxBackend, data64, dtype="float64").dtype == np.float64
    assert not jax.config.jax_enable_x64
    assert jax.numpy.asarray(1.0).dtype == np.float32
    after = losses(JaxBackend, data), losses(TorchBackend, data), losses(NumpyBackend, data)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    backend = make_backend(data)
    assert all(v.dtype == np.float32 for v in backend.export_state().values())


def test_records_evaluation_and_state(data):
    backend = make_backend(data, momentum=0.9)
    state = backend.export_state()
    idx = backend.device_indices(epoch_order(0, 1, 1024))
    for k in range(5):
        backend.train_batch(idx[k * 32:(k + 1) * 32])
    rec = backend.pop_step_records()
    assert rec.losses.dtype == np.float64 and rec.losses.shape == (5,) and rec.seen == 160
    assert 0 <= rec.correct <= 160
    assert backend.pop_step_records().seen == 0
    backend.import_state(state)  # back to the start, momentum forgotten
    for name, value in backend.export_state().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    loss, acc = backend.evaluate("val")  # chunks 128, 128, 44 against numpy on the whole split
    ref = NumpyBackend(config(eval_batch_size=10_000))
    ref.load_data(data)
    ref.init_model(0)
    ref.import_state(state)
    ref_loss, ref_acc = ref.evaluate("val")
    assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == pytest.approx(ref_acc, abs=1 / 300)
    state["linears.0.weight"] = state["linears.0.weight"][:, :-1]
    with pytest.raises(ValueError, match=r"linears.0.weight has shape \(32, 47\), expected \(32, 48\)"):
        backend.import_state(state)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        backend.evaluate("dev")


def test_gemm_seconds_times_the_listed_products(data):
    backend = make_backend(data)
    assert backend.gemm_seconds(step_gemms(N_FEATURES, [32], N_CLASSES, 32), 3) > 0
    assert backend.gemm_seconds([Gemm(8, 4, 2), Gemm(3, 5, 7, ta=True, tb=True)], 2) > 0


def test_dispatched_computations_finish_in_order():
    """What the GEMM-only bracket relies on to wait for its last products only."""
    a = jax.device_put(np.ones((400, 400), np.float32))
    big, small = jax.jit(lambda m: m @ m), jax.jit(lambda m: m[:2, :2] + 1)
    big(a).block_until_ready(), small(a).block_until_ready()  # compiled
    for _ in range(3):
        products = [big(a) for _ in range(20)]
        small(a).block_until_ready()  # dispatched last, cheap: done first if run out of order
        assert all(p.is_ready() for p in products)


def test_fewer_threads_than_cores_is_refused():
    if default_threads() == 1:
        pytest.skip("one core: any thread count JAX can use is allowed")
    with pytest.raises(UserError, match="cannot be limited to threads=1"):
        JaxBackend(config(threads=1))


def test_jax_scan_with_eval_every_is_one_line(cli):
    assert_one_line_error(cli("bench.compare", "--dataset", "synthetic", "--backends", "jax:cpu",
                              "--jax-scan", "--eval-every", "5"), "jax_scan", "eval_every")


# ---------------------------------------------------------------- without JAX


def test_without_jax_the_backend_is_listed_and_skipped_with_its_reason(monkeypatch):
    for name in [m for m in sys.modules if m == "impl_jax" or m.startswith(("impl_jax.", "jax"))
                 or m == "bench.backends.jax_backend"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now raises ImportError
    rows = {r["backend"]: r for r in listing()}  # from the installed packages, importing nothing
    assert rows["jax:cpu"]["runs here"] == "no" and "pip install '.[jax]'" in rows["jax:cpu"]["why / what"]
    chosen, skipped = resolve(None)
    names = {c.name for c in chosen}
    assert "jax:cpu" not in names and {"numpy:cpu", "torch:cpu"} <= names
    assert any(name == "jax:cpu" and "JAX is not installed" in why for name, why in skipped)
    with pytest.raises(UserError, match="jax:cpu is not available here: JAX is not installed"):
        resolve(["jax:cpu"])


def test_without_jax_the_command_line_says_so_in_one_line(cli, tmp_path):
    """A fresh interpreter in which no finder can see jax (a sitecustomize hides it)."""
    site = tmp_path / "nojax"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class HideJax:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, HideJax())\n")
    from conftest import REPO
    env = {"PYTHONPATH": f"{site}:{REPO}"}
    listed = cli("bench.compare", "--list-backends", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("| jax:cpu |"))
    assert "| no |" in row and "pip install '.[jax]'" in row
    assert_one_line_error(cli("bench.compare", "--dataset", "synthetic", "--backends", "jax:cpu",
                              env=env), "jax:cpu is not available here", "pip install '.[jax]'")


def test_compare_reports_the_compile_time_in_its_own_column_and_line(cli):
    from test_compare import TINY

    proc = cli("bench.compare", *TINY, "--backends", "numpy:cpu,jax:cpu", "--jax-scan", "--lockstep",
               "--no-reference-timing", "--out", "o")
    assert proc.returncode == 0, proc.stderr
    runs = pd.read_csv(proc.cwd / "o" / "runs.csv").set_index("backend")
    assert runs.loc["jax:cpu", "compile_seconds"] > 0 and np.isnan(runs.loc["numpy:cpu", "compile_seconds"])
    summary = pd.read_csv(proc.cwd / "o" / "summary.csv").set_index("backend")
    assert summary.loc["jax:cpu", "compile_seconds"] == runs.loc["jax:cpu", "compile_seconds"]
    assert "| compile s |" in proc.stdout.splitlines()[0]
    report = (proc.cwd / "o" / "report.md").read_text()
    assert "Compilation (before the first epoch, outside every clock" in report and "`jax:cpu` " in report
    env = json.loads((proc.cwd / "o" / "env.json").read_text())
    assert env["config"]["jax_scan"] is True
    assert env["lockstep"]["backends"]["jax:cpu"]["max_rel"] < LOCKSTEP_RTOL  # scanned, in lock-step
