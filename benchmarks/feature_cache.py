"""A linear probe end to end, frozen features cached ÷ the backbone run every epoch.

One synthetic task is written at 224² in the VTAB-1k layout (JPEG files: ``train800val200``, 1,000
images, and a test split scored after every epoch, as ``vprompt train`` does). The linear probe on
ViT-S/16 (random init: the cost does not depend on the weights) trains for 10 epochs twice through
``vprompt.train``: with the default ``--cache-mb`` (the backbone runs over each image once and
every epoch trains the head on the stored features) and with ``--cache-mb 0`` (every epoch runs
the backbone again, as before the cache). Wall time covers everything ``vprompt.train`` does,
the first epoch and the feature pass included. The two runs alternate ``--rounds`` times; the
ratio is the median of per-round ratios.

    python benchmarks/feature_cache.py --quick
    python benchmarks/feature_cache.py --out docs/results/feature_cache.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import Column, Row, available_cores, base_parser, markdown_table, quartiles, setup, write_outputs
from vprompt.backbones import BackboneSpec
from vprompt.data import FileListDataset, write_synthetic_suite
from vprompt.hardware import resolve_precision
from vprompt.model import create_model
from vprompt.train import TrainConfig, train

TASK = "digits"


def timed_run(spec: BackboneSpec, task: Path, out: Path, size: int, epochs: int, cache_mb: float) -> tuple[float, Row]:
    """Seconds of one linear-probe run, and its last metrics row."""
    torch.manual_seed(0)
    model = create_model(spec, "linear", 10)
    config = TrainConfig(epochs=epochs, warmup_epochs=1, batch_size=64, cache_mb=cache_mb)
    started = time.perf_counter()
    result = train(model, FileListDataset(task, "train800val200", size), out, config,
                   eval_set=FileListDataset(task, "test", size), progress=False)
    return time.perf_counter() - started, result.metrics[-1]


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Linear probe end to end: cached frozen features ÷ the backbone every epoch")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--test-size", type=int, default=200)
    args = parser.parse_args(argv)
    setup(args)
    size = 64 if args.quick else 224
    kwargs = dict(img_size=64, patch_size=8, depth=6) if args.quick else {}
    spec = BackboneSpec("vit_small_patch16_224", kwargs=kwargs, init_seed=0)
    seconds: dict[str, list[float]] = {"cached": [], "uncached": []}
    last: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        task = write_synthetic_suite(Path(tmp) / "suite", tasks=[TASK], image_size=size, test_size=args.test_size,
                                     progress=False)[0]
        for round_ in range(args.rounds):
            for name, cache_mb in (("cached", TrainConfig.cache_mb), ("uncached", 0.0)):
                took, row = timed_run(spec, task, Path(tmp) / f"{name}{round_}", size, args.epochs, cache_mb)
                assert row["cached_features"] == (name == "cached"), row
                seconds[name].append(took)
                last[name] = row
                print(f"[feature_cache] round {round_ + 1} {name}: {took:.1f} s", file=sys.stderr)
    ratios = [c / u for c, u in zip(seconds["cached"], seconds["uncached"])]
    q1, median, q3 = quartiles(ratios)
    rows: list[Row] = [{
        "cached_seconds": round(quartiles(seconds["cached"])[1], 1),
        "uncached_seconds": round(quartiles(seconds["uncached"])[1], 1),
        "cached_over_uncached": round(median, 3), "ratio_q1": round(q1, 3), "ratio_q3": round(q3, 3),
        "rounds": args.rounds, "epochs": args.epochs, "train_images": 1000, "test_images": args.test_size,
        "image_size": size, "model": "vit_small_patch16_224" + (f" {kwargs}" if kwargs else ""),
        "precision": resolve_precision("auto", torch.device("cpu")),
        "eval_acc_cached": last["cached"]["eval_acc"], "eval_acc_uncached": last["uncached"]["eval_acc"],
        "threads": args.threads, "cores": available_cores(), "torch": torch.__version__,
    }]
    write_outputs(rows, table(rows), args.out, args.quick)


def table(rows: list[Row]) -> str:
    first = rows[0]
    columns: list[Column] = [
        ("run", lambda r: f"linear probe, {r['epochs']} epochs"),
        ("cached (s)", lambda r: f"{r['cached_seconds']:.1f}"),
        ("uncached (s)", lambda r: f"{r['uncached_seconds']:.1f}"),
        ("cached ÷ uncached", lambda r: f"{r['cached_over_uncached']:.3f}"),
        ("test accuracy cached / uncached", lambda r: f"{r['eval_acc_cached']:.3f} / {r['eval_acc_uncached']:.3f}"),
    ]
    rounds = "one round (n = 1)" if first["rounds"] == 1 else f"median of {first['rounds']} alternating rounds"
    caption = (
        f"A linear probe end to end through `vprompt.train` on {first['model']} (random init) at "
        f"{first['image_size']}², {first['train_images']} training images (JPEG on disk) and {first['test_images']} test "
        f"images scored every epoch, precision {first['precision']}, {first['threads']} threads: frozen features "
        f"computed once and cached, against the backbone run every epoch (`--cache-mb 0`). Wall time of the whole "
        f"run, {rounds}."
    )
    return caption + "\n\n" + markdown_table(rows, columns)


if __name__ == "__main__":
    main()
