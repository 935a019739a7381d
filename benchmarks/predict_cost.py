"""What using a trained prompt costs: `vprompt predict` against `vprompt eval`, and an ONNX export
against the eager PromptedModel.

Ratios, all measured in one run with the variants interleaved:

* ``predict ÷ eval throughput`` on the same images of one split: predict over the split
  (``--data``), and predict over the same images as a folder of files; both write their rows to a
  CSV file, as a user would. The issue's bound is ≥ 0.9.
* ``ONNX ÷ eager latency`` of the exported model (onnxruntime, CPU provider) at batch 1 and 32,
  on the same random batch (``torch.no_grad`` for eager).

    python benchmarks/predict_cost.py --quick
    python benchmarks/predict_cost.py --out results/predict_cost.json
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import torch

from _common import Row, base_parser, interleaved_timings, markdown_table, paired_ratios, quartiles, setup, write_outputs
from vprompt.backbones import BackboneSpec
from vprompt.data import write_synthetic_suite
from vprompt.data.filelist import task_info
from vprompt.export import export_model, run_onnx
from vprompt.model import create_model, save_prompt
from vprompt.recipes.predict import predict_to
from vprompt.runs import evaluate_on_task

FULL = dict(model="vit_tiny_patch16_224", kwargs={}, images=1000, image_size=224, rounds=3)
QUICK = dict(model="vit_tiny_patch16_224", kwargs=dict(img_size=32, patch_size=8, depth=4), images=200,
             image_size=32, rounds=3)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("predict vs eval throughput, ONNX vs eager latency")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    setup(args)
    cfg = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        task = write_synthetic_suite(work / "suite", tasks=["objects"], image_size=cfg["image_size"],
                                     test_size=cfg["images"], progress=False)[0]
        info = task_info(task)
        model = create_model(BackboneSpec(cfg["model"], kwargs=cfg["kwargs"]), "vpt-deep", info.num_classes,
                             info.class_names, prompt_len=10).eval()
        prompt = save_prompt(model, work / "prompt")
        folder = task / "images" / "test"
        quiet = contextlib.redirect_stderr(io.StringIO())

        def predict_split() -> None:
            with quiet:
                predict_to(prompt, [], str(task), "test", 5, work / "split.csv", args.batch_size, "cpu", False, False)

        def predict_files() -> None:
            with quiet:
                predict_to(prompt, [str(folder)], None, "test", 5, work / "files.csv", args.batch_size, "cpu", False, False)

        def evaluate() -> None:
            evaluate_on_task(prompt, task, "test", args.batch_size, progress=False)

        times = interleaved_timings({"eval": evaluate, "predict_split": predict_split, "predict_files": predict_files},
                                    rounds=cfg["rounds"])
        export_model(model, work / "model.onnx", "onnx")
        session = run_onnx(work / "model.onnx")
        latency_rows = []
        for batch in (1, 32):
            images = torch.rand(batch, 3, *model.image_size)
            array = images.numpy()

            def eager() -> None:
                with torch.no_grad():
                    model(images)

            lat = interleaved_timings({"eager": eager, "onnx": lambda: session(array)}, rounds=20, warmup=3)
            q1, ratio, q3 = quartiles(paired_ratios(lat["onnx"], lat["eager"]))
            latency_rows.append({"measure": f"ONNX ÷ eager latency, batch {batch}", "ratio": round(ratio, 3),
                                 "q1": round(q1, 3), "q3": round(q3, 3), "eager_ms": round(quartiles(lat["eager"])[1] * 1e3, 2),
                                 "onnx_ms": round(quartiles(lat["onnx"])[1] * 1e3, 2)})
    rows: list[Row] = []
    for variant in ("predict_split", "predict_files"):
        # throughput ratio = eval time ÷ predict time on the same images
        q1, ratio, q3 = quartiles(paired_ratios(times["eval"], times[variant]))
        rows.append({"measure": f"{variant.replace('_', ' (')}) ÷ eval throughput", "ratio": round(ratio, 3),
                     "q1": round(q1, 3), "q3": round(q3, 3),
                     "eval_s": round(quartiles(times["eval"])[1], 3), "predict_s": round(quartiles(times[variant])[1], 3)})
    rows += latency_rows
    common = {"model": cfg["model"], "timm_kwargs": str(cfg["kwargs"]), "images": cfg["images"],
              "image_size": cfg["image_size"], "batch_size": args.batch_size, "threads": args.threads,
              "torch": torch.__version__, "load_avg_1m": round(os.getloadavg()[0], 2)}
    rows = [row | common for row in rows]
    caption = (f"Prediction cost on the CPU, {args.threads} threads: {cfg['model']} {cfg['kwargs'] or ''} VPT-deep "
               f"(p = 10), {cfg['images']} images at {cfg['image_size']}², batch {args.batch_size}. Throughput ratios: "
               f"medians of {cfg['rounds']} interleaved rounds (eval time ÷ predict time; above 1: predict is faster); "
               f"latency ratios: 20 interleaved rounds. 1-minute load average {common['load_avg_1m']}.")
    table = markdown_table(rows, [("measure", lambda r: r["measure"]),
                                  ("ratio (IQR)", lambda r: f"{r['ratio']:.2f} ({r['q1']:.2f}–{r['q3']:.2f})")])
    write_outputs(rows, caption + "\n\n" + table, args.out, args.quick)


if __name__ == "__main__":
    main()
