"""Summarise the CIFAR-10 copy the suite would use.

Run::

    python -m bench.data [--data-dir DIR] [--val-size N] [--seeds SEED] [--no-download]

(also installed as ``mlpbench-data``). Prints the source, whether it is the
official archive, the dataset fingerprint, the split sizes, the class counts
of the archive and of every split, and where the decoded cache lives. Every
Config flag is accepted (``--help`` lists them); the split uses the first of
``--seeds``. Any error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.config import add_config_arguments, config_from_args
from bench.data.loader import load_decoded, split_rows
from bench.errors import OneLineArgumentParser, UserError, run_cli


def _prog() -> str:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m bench.data" if name in ("", "__main__.py", "-c") else name


def build_parser(prog: str) -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="fail instead of downloading when no copy is found")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar while downloading")
    add_config_arguments(parser, "data")
    return parser


def summarise(argv: Sequence[str] | None = None, prog: str = "python -m bench.data") -> int:
    """Print the summary; raises UserError for bad flags or unusable data."""
    args = build_parser(prog).parse_args(argv)
    cfg = config_from_args(args, "data")
    if cfg.dataset != "cifar10":
        raise UserError(f"--dataset {cfg.dataset}: this command summarises a CIFAR-10 copy "
                        "(leave --dataset at cifar10)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_decoded(cfg.data_dir, download=args.download, progress=args.progress)
    for w in caught:
        print(f"{prog}: warning: {w.message}", file=sys.stderr)
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
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run :func:`summarise`; a UserError becomes one line and exit 2."""
    prog = _prog()
    run_cli(lambda a: summarise(a, prog), argv, prog=prog)


if __name__ == "__main__":
    main()
