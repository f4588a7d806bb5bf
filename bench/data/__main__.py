"""Summarise the CIFAR-10 copy the suite would use.

Run::

    python -m bench.data [--data-dir DIR] [--val-size N] [--seeds SEED] [--no-download]

(also installed as ``mlpbench-data``). Prints the source, whether it is the
official archive, the dataset fingerprint, the split sizes, the class counts
of the archive and of every split, and where the decoded cache lives. Its
flags are the data fields of ``bench.config.Config`` and its own
``DataSettings`` (``--help`` lists them); the split uses the first of
``--seeds``. Any error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import warnings

import numpy as np

from bench import runner
from bench.data.loader import load_decoded, split_rows
from bench.errors import UserError


def measure(ctx: runner.Context) -> runner.Result:
    """The summary lines; a UserError for unusable data."""
    cfg = ctx.config
    if cfg.dataset != "cifar10":
        raise UserError(f"--dataset {cfg.dataset}: this command summarises a CIFAR-10 copy "
                        "(leave --dataset at cifar10)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_decoded(cfg.data_dir, download=ctx.settings.download, progress=ctx.settings.progress)
    d, layout = loaded.decoded, loaded.source.layout
    # the rows load_dataset would give (the same split_rows); the pixels need no normalising here
    train_idx, val_idx = split_rows(len(d.train_y), val_size=cfg.val_size, seed=cfg.seeds[0],
                                    train_subset=cfg.train_subset)
    train_y = np.asarray(d.train_y)
    columns = {"archive-train": train_y, "train": train_y[train_idx], "val": train_y[val_idx],
               "test": np.asarray(d.test_y)}
    official = ("yes (md5 matches the official archive)" if loaded.official else
                "no (extracted folder: no archive checksum to compare)" if loaded.md5 is None else
                f"no (md5 {loaded.md5}; the official {layout.archive} has {layout.official_md5})")
    subset = f", first {cfg.train_subset} training rows kept" if cfg.train_subset is not None else ""
    lines = [
        f"source       {loaded.description}",
        f"official     {official}",
        f"fingerprint  sha256 {loaded.fingerprint}",
        f"cache        {loaded.cache_entry} ({loaded.cache_status})",
        f"split        seed {cfg.seeds[0]}: {len(val_idx)} validation images drawn from the "
        f"{len(train_y)} training images{subset}; test set untouched",
        f"sizes        train {len(train_idx)}, val {len(val_idx)}, test {len(d.test_y)} "
        f"(archive: {len(train_y)} training + {len(d.test_y)} test images)",
        f"features     {d.train_x.shape[1]} per image (CHW uint8), normalised to {cfg.dtype} with mean "
        f"{' '.join(map(str, cfg.mean))}, std {' '.join(map(str, cfg.std))}",
        "",
    ]
    counts = {k: np.bincount(v.astype(np.int64), minlength=len(d.classes)) for k, v in columns.items()}
    width = max(len("class"), *(len(f"{i} {c}") for i, c in enumerate(d.classes)))
    col = max(map(len, columns)) + 2
    lines.append(f"{'class':<{width}}" + "".join(f"{k:>{col}}" for k in columns))
    for i, name in enumerate(d.classes):
        lines.append(f"{f'{i} {name}':<{width}}" + "".join(f"{c[i]:>{col}}" for c in counts.values()))
    lines.append(f"{'total':<{width}}" + "".join(f"{c.sum():>{col}}" for c in counts.values()))
    return runner.Result(printed=["\n".join(lines)],
                         notes=[f"{runner.prog(COMMAND)}: warning: {w.message}" for w in caught])


COMMAND = runner.Command("data", "CIFAR-10 summary", measure, folder=False, about=__doc__.split("\n\n")[0])
main, cli = runner.entry_points(COMMAND)

if __name__ == "__main__":
    cli()
