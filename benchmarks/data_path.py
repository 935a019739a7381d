"""Does the data path keep up with training? Loader images/s ÷ a VPT-deep training step's images/s.

One synthetic task is written at 224² in the VTAB-1k layout (JPEG files, 1,000 training images,
``train800val200``), opened as ``vprompt train`` opens it (training augmentation on), and read in
full epochs through the DataLoader ``vprompt.train`` builds (same batch size, shuffled):

* ``cached``: decoded once into uint8 memory (``vprompt.data.in_memory``, the default for a split
  this small), so an epoch only runs the flip augmentation and the float conversion;
* ``jpeg, workers 0``: every image read, decoded and resized from its JPEG in the training process;
* ``jpeg, workers auto``: the same in ``--workers auto`` worker processes (one per CPU beyond the
  first), started anew every epoch as ``vprompt train`` does.

The step is VPT-deep (p = 10) on ViT-S/16 at 224², batch 32, forward + backward + SGD step, on
``--device`` (a GPU when there is one), at the precision ``--mixed-precision auto`` picks on this machine and at full precision. All variants
are interleaved in rounds (``_common.interleaved_timings``); the ratios are medians of per-round
ratios (loader images/s ÷ step images/s), so a ratio of 10 means the loader could feed ten such
models. The decode-once cost of the cache is reported beside them.

    python benchmarks/data_path.py --quick
    python benchmarks/data_path.py --out docs/results/data_path.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from _common import (Column, Row, available_cores, base_parser, interleaved_timings, markdown_table, paired_ratios,
                     quartiles, setup, training_step, write_outputs)
from step_cost import device_name
from vprompt.backbones import BackboneSpec
from vprompt.data import in_memory, write_synthetic_suite
from vprompt.data.registry import open_task
from vprompt.hardware import resolve_precision, resolve_workers
from vprompt.train import EpochShuffle

TASK = "digits"
SPLIT = "train800val200"


def epoch_reader(dataset: Dataset, batch: int, workers: int) -> Callable[[], None]:
    """One full shuffled epoch through the DataLoader ``vprompt.train`` builds."""
    loader = DataLoader(dataset, batch, sampler=EpochShuffle(len(dataset), 0), num_workers=workers)

    def read() -> None:
        for _ in loader:
            pass

    return read


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Loader images/s (cached, JPEG) ÷ VPT-deep step images/s at ViT-S, 224²")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the training step runs (the loader always runs on the host)")
    args = parser.parse_args(argv)
    setup(args)
    device = torch.device(args.device)
    image_size = 64 if args.quick else 224
    kwargs = dict(img_size=64, patch_size=8, depth=6) if args.quick else {}
    auto = resolve_precision("auto", device)
    spec = BackboneSpec("vit_small_patch16_224", kwargs=kwargs)
    steps = {f"step {p}": training_step(spec, "vpt-deep", 10, args.batch, device, p == "bf16", prompt_len=10)
             for p in dict.fromkeys((auto, "no"))}
    workers = resolve_workers("auto", decodes_images=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_suite(Path(tmp), tasks=[TASK], image_size=image_size, test_size=1, progress=False)
        jpeg = open_task(Path(tmp) / TASK).dataset(SPLIT, image_size, train=True)
        started = time.perf_counter()
        cached = in_memory(jpeg, budget_mb=2048, workers=workers)
        decode_seconds = time.perf_counter() - started
        assert cached is not jpeg, "the split should fit the cache"
        readers = {"cached": epoch_reader(cached, args.batch, 0),
                   "jpeg, workers 0": epoch_reader(jpeg, args.batch, 0),
                   f"jpeg, workers auto ({workers})": epoch_reader(jpeg, args.batch, workers)}
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times = interleaved_timings(readers | steps, rounds=args.rounds, warmup=1, sync=sync)
        images = len(jpeg)
    rows: list[Row] = []
    for reader in readers:
        for step in steps:
            # (images / reader time) ÷ (batch / step time), round by round
            ratios = [r * images / args.batch for r in paired_ratios(times[step], times[reader])]
            q1, median, q3 = quartiles(ratios)
            rows.append({
                "loader": reader, "step": step.removeprefix("step "), "loader_over_step": round(median, 1),
                "loader_over_step_q1": round(q1, 1), "loader_over_step_q3": round(q3, 1),
                "epoch_images": images, "image_size": image_size, "batch": args.batch,
                "decode_once_over_epoch_cached": round(decode_seconds / quartiles(times["cached"])[1], 1),
                "model": "vit_small_patch16_224" + (f" {kwargs}" if kwargs else ""), "prompt_len": 10,
                "device": device_name(device), "threads": args.threads, "cores": available_cores(),
                "rounds": args.rounds, "torch": torch.__version__,
            })
        print(f"[data_path] {reader} done", file=sys.stderr)
    write_outputs(rows, table(rows), args.out, args.quick)


def table(rows: list[Row]) -> str:
    first = rows[0]
    columns: list[Column] = [
        ("loader", lambda r: r["loader"]),
        ("step precision", lambda r: r["step"]),
        ("loader img/s ÷ step img/s (IQR)",
         lambda r: f"{r['loader_over_step']:.1f} ({r['loader_over_step_q1']:.1f}–{r['loader_over_step_q3']:.1f})"),
    ]
    caption = (
        f"Data path: the loader on the host's {first['threads']} threads, the step on {first['device']}; one epoch of {first['epoch_images']} "
        f"images at {first['image_size']}² (JPEG on disk, training flip on), batch {first['batch']}, against a "
        f"VPT-deep (p = {first['prompt_len']}) training step of {first['model']}. Medians over {first['rounds']} "
        f"interleaved rounds of per-round ratios. Decoding the split into the cache once took "
        f"{first['decode_once_over_epoch_cached']}× a cached epoch."
    )
    return caption + "\n\n" + markdown_table(rows, columns)


if __name__ == "__main__":
    main()
