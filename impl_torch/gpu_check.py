"""Check the torch backend on a GPU: a short training run, then timed epochs per speed-up.

Run: ``bash scripts/gpu_check.sh`` (which first runs ``pytest tests -m cuda``), or
``python -m impl_torch.gpu_check [--out DIR] [--epochs N] [--variants eager,cuda_graph,reduce-overhead]``.

Uses synthetic data of the real CIFAR-10 shapes (45 000 / 5 000 / 10 000 x
3072; no download needed) and the default config (3072 -> 128 -> 10, batch
128, 351 steps per epoch, float32, ELU). For each variant it runs
``bench.loop.train_run`` for a few epochs and reports the median epoch time
(the harness's clock: synchronised device to synchronised device, excluding
the one index copy per epoch, warm-up and evaluation) and its ratio to the
same epoch's matrix products alone (``bench.roofline.measure_gemms``, the
median of 3 on the same device). Writes ``gpu_check.log`` and
``gpu_check.csv`` under ``--out`` (default ``$OUT``, else a new temp dir it
prints). Without CUDA it runs a tiny CPU pass of the same code and exits 0.
"""

from __future__ import annotations

import csv
import gc
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import Config
from bench.data import make_synthetic
from bench.errors import OneLineArgumentParser, UserError, run_cli
from bench.loop import train_run
from bench.roofline import epoch_flop, measure_gemms
from impl_torch.backend import TorchBackend, available

VARIANTS = {  # name -> Config overrides
    "eager": {},
    "cuda_graph": {"cuda_graph": True},
    "reduce-overhead": {"torch_compile": "reduce-overhead"},
}
TARGET_MS = {"eager": 50.0, "cuda_graph": 15.0, "reduce-overhead": 15.0}  # issue 4, on an H100
CSV_FIELDS = ["variant", "device", "device_name", "torch_version", "status", "epochs",
              "median_epoch_ms", "min_epoch_ms", "max_epoch_ms", "first_epoch_ms", "gemm_ms",
              "epoch_over_gemm", "epoch_gflops", "target_ms", "meets_target", "test_acc",
              "peak_memory_mb", "error"]


class Tee:
    """Print to stdout and append to a log file."""

    def __init__(self, path: Path):
        self.fh = path.open("a", encoding="utf-8")

    def __call__(self, *parts: Any) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.fh.write(line + "\n")
        self.fh.flush()


def time_variant(name: str, data, device: str, epochs: int, log: Tee) -> dict[str, Any]:
    """Train ``epochs`` epochs of the default config with variant ``name``; the row for the CSV."""
    cfg = Config(epochs=epochs, **VARIANTS[name])
    row: dict[str, Any] = {"variant": name, "device": device, "epochs": epochs,
                           "torch_version": torch.__version__, "target_ms": TARGET_MS.get(name)}
    backend = None
    try:
        backend = TorchBackend(cfg, device)
        backend.load_data(data)
        t0 = time.perf_counter()
        result = train_run(backend, data, cfg, seed=42)
        wall = time.perf_counter() - t0
        ms = np.array([e["epoch_seconds"] for e in result.epochs]) * 1e3
        n_train = len(data.y_train)
        gemm_ms = measure_gemms(backend, cfg, data.n_features, data.n_classes, n_train) * 1e3
        median = float(np.median(ms))
        flop = epoch_flop(data.n_features, cfg.hidden_dims, data.n_classes, cfg.batch_size, n_train)
        peak = backend.peak_memory_bytes()
        row.update(status=result.status, device_name=backend.describe()["device_name"],
                   median_epoch_ms=round(median, 3), min_epoch_ms=round(float(ms.min()), 3),
                   max_epoch_ms=round(float(ms.max()), 3), first_epoch_ms=round(float(ms[0]), 3),
                   gemm_ms=round(gemm_ms, 3), epoch_over_gemm=round(median / gemm_ms, 3),
                   epoch_gflops=round(flop / median / 1e6, 1),
                   meets_target=(median <= TARGET_MS[name]) if device.startswith("cuda") else "",
                   test_acc=result.run["test_acc"],
                   peak_memory_mb=round(peak / 2**20, 1) if peak is not None else "")
        log(f"  {name}: epochs (ms) {np.round(ms, 2).tolist()}  median {median:.2f} ms, "
            f"GEMM-only {gemm_ms:.2f} ms, ratio {median / gemm_ms:.2f}, test_acc "
            f"{result.run['test_acc']:.4f}, wall {wall:.1f} s (incl. warm-up/compile and eval)")
    except Exception as exc:  # report and go on to the next variant
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        row.update(status="error", error=f"{type(exc).__name__}: {first}")
        log(f"  {name}: FAILED {type(exc).__name__}: {first}")
    finally:
        del backend
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def short_run(data, device: str, log: Tee) -> bool:
    """Two epochs of the default config, printed per epoch; True when it trained."""
    cfg = Config(epochs=2)
    backend = TorchBackend(cfg, device)
    backend.load_data(data)
    result = train_run(backend, data, cfg, seed=0)
    for e in result.epochs:
        log(f"  epoch {e['epoch']}: train_loss {e['train_loss']:.4f} train_acc {e['train_acc']:.4f} "
            f"val_acc {e['val_acc']:.4f} epoch {e['epoch_seconds'] * 1e3:.1f} ms")
    log(f"  status {result.status}, test_acc {result.run['test_acc']:.4f}, peak memory "
        f"{result.run['peak_memory_bytes']}")
    info = backend.describe()
    log("  describe: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return result.status == "ok" and result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m impl_torch.gpu_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for gpu_check.log and gpu_check.csv "
                                      "(default: $OUT, else a new temp dir)")
    parser.add_argument("--device", default="cuda", help="torch device to check (default: cuda)")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per variant (default: 5)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant {unknown[0]!r} (allowed: {', '.join(VARIANTS)})")
    out = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check."))
    out.mkdir(parents=True, exist_ok=True)
    log = Tee(out / "gpu_check.log")
    log(f"gpu_check: writing {out / 'gpu_check.log'} and {out / 'gpu_check.csv'}")
    log(f"torch {torch.__version__} (CUDA build {torch.version.cuda}), numpy {np.__version__}, "
        f"python {sys.version.split()[0]}, threads {torch.get_num_threads()}")

    ok, reason = available(args.device)
    if ok and torch.device(args.device).type != "cpu":
        device = args.device
        log(f"device {device}: {torch.cuda.get_device_name(device) if device.startswith('cuda') else device}")
        sizes, epochs = (45_000, 5_000, 10_000), args.epochs
    else:
        log(f"no {args.device} here ({reason or 'cpu asked for'}): a tiny CPU pass of the same code, "
            "for the code path only (no GPU figures)")
        device, sizes, epochs = "cpu", (2048, 256, 256), 2
        try:
            TorchBackend(Config(cuda_graph=True), "cpu")
        except UserError as exc:
            log(f"  as expected, cuda_graph on cpu: UserError: {exc}")
        skipped = [v for v in variants if v != "eager"]
        if skipped:
            log(f"  skipping {', '.join(skipped)} on cpu (CUDA-only or a minutes-long CPU compile)")
        variants = ["eager"]

    t0 = time.perf_counter()
    data = make_synthetic(*sizes, seed=0)
    log(f"synthetic data {sizes} x {data.n_features} in {time.perf_counter() - t0:.1f} s")

    log("short training run (2 epochs, default config):")
    trained = short_run(data, device, log)
    log("  OK: the loss fell" if trained else "  PROBLEM: the run did not train")

    log(f"timed epochs ({epochs} per variant, default config, seed 42):")
    rows = [time_variant(v, data, device, epochs, log) for v in variants]
    with (out / "gpu_check.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        if r.get("status") == "ok" and device.startswith("cuda"):
            verdict = "meets" if r["meets_target"] else "MISSES"
            log(f"  {r['variant']}: {r['median_epoch_ms']} ms per epoch {verdict} the "
                f"{r['target_ms']} ms target")
    log(f"wrote {out / 'gpu_check.csv'}")
    failed = (not trained) or any(r.get("status") != "ok" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main, prog="impl_torch.gpu_check")
