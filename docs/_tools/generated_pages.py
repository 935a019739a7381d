"""MkDocs hook: the pages built from the code and the results files, never typed by hand.

- ``reference/cli.md``: every subcommand's real ``--help`` (``vprompt.cli_reference``).
- ``results.md``: every committed results table under ``docs/results``, with what produced it.
- ``<!-- vprompt:models-table -->`` in a page: the family × method matrix of ``vprompt models``.
- ``<!-- vprompt:zoo-table -->``: the shipped zoo models, from their cards.
- ``<!-- vprompt:presets-table -->``: every shipped preset, per source and method (``vprompt presets``).
- ``<!-- vprompt:options METHOD -->``: every option of a method's config, with its type, default
  and the docstring under the field, read from the dataclass itself.

A results table that is not listed in ``RESULTS`` fails the build, so a new one cannot be
committed without a page.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from pathlib import Path

from mkdocs.structure.files import File, Files

from vprompt.cli_reference import markdown as cli_markdown
from vprompt.families.matrix import matrix
from vprompt.presets import all_presets
from vprompt.report import matrix_markdown as models_markdown
from vprompt.report import preset_markdown
from vprompt.methods import make_config
from vprompt.robust import AdversarialConfig
from vprompt.zoo import list_cards

MODELS_TABLE = "<!-- vprompt:models-table -->"
ZOO_TABLE = "<!-- vprompt:zoo-table -->"
PRESETS_TABLE = "<!-- vprompt:presets-table -->"
OPTIONS_TABLE = re.compile(r"<!-- vprompt:options ([\w-]+) -->")
CONFIGS = {"adversarial": AdversarialConfig}  # option tables that are not a method's config

# (results table under docs/results, title, the command that wrote it)
RESULTS = [
    ("step_cost.md", "Training-step cost of every method, ViT-Ti/S/B",
     "python benchmarks/step_cost.py --with-base --out docs/results/step_cost.json"),
    ("step_cost_families.md", "Training-step cost on DINOv3 (Eva) and Swin",
     "python benchmarks/step_cost.py --families --out docs/results/step_cost_families.json"),
    ("zoo_transfer.md", "The zoo ViT against its random-init twin: probe and VPT-deep at 30 epochs",
     "python benchmarks/zoo_transfer.py --models fractal-vit --methods probe vpt-deep --seeds 0 1 2 "
     "--records docs/results/zoo_transfer/runs --out docs/results/zoo_transfer.json"),
    ("zoo_transfer_lr_check.md", "The zoo_transfer VPT-deep rate grid widened to 1.0 (seed 0)",
     "python benchmarks/zoo_transfer.py --models fractal-vit --methods vpt-deep --seeds 0 --vpt-lrs 0.1 0.3 1.0 "
     "--records docs/results/zoo_transfer_lr_check/runs --out docs/results/zoo_transfer_lr_check.json"),
    ("zoo_transfer_probe.md", "The rebuilt zoo ViT's linear probe against its random twin, 3 seeds",
     "python benchmarks/zoo_transfer.py --models fractal-vit --methods probe --seeds 0 1 2 "
     "--out docs/results/zoo_transfer_probe.json"),
    ("demo.md", "vprompt demo at its defaults (3 tasks, linear, VPT-deep, VAPT), 3 seeds, timed",
     "python benchmarks/demo_table.py --records docs/results/demo/runs --out docs/results/demo.json"),
    ("vapt/results.md", "VAPT against VPT and the linear probe (offline, zoo ViT, 3 seeds)",
     "vprompt reproduce vapt --records docs/results/vapt/runs --out bench-work/vapt, then its results.json "
     "and results.md copied to docs/results/vapt"),
    ("pbl/results.md", "Pixel VP and PBL on standard and robust sources",
     "vprompt reproduce pbl --out docs/results/pbl"),
    ("robust_tokens/results.md", "Token prompts and pixel VP on the standard and robust zoo ViT",
     "vprompt reproduce robust-tokens --mixed-precision no --records docs/results/robust_tokens/runs --out "
     "bench-work/robust_tokens, then its results.json, results.md and tradeoff.png copied to docs/results/robust_tokens"),
    ("baselines/results.md", "The prompts beside peft's LoRA, BitFit and the probe",
     "vprompt reproduce baselines --mixed-precision no --records docs/results/baselines/runs --out "
     "bench-work/baselines, then its results.md, results.json and costs.json copied to docs/results/baselines"),
    ("hgprompt/results.md", "Multi-source transfer: HGPrompt and its baselines",
     "vprompt reproduce hgprompt --records docs/results/hgprompt/runs --out bench-work/hgprompt, then its "
     "results.json, results.md and weights.png copied to docs/results/hgprompt"),
    ("transfer_cost.md", "Cost of HGPrompt's weight search",
     "python benchmarks/transfer_cost.py --out docs/results/transfer_cost.json"),
    ("sweep_resume.md", "A Ray sweep killed half-way and restarted",
     "python benchmarks/sweep_resume.py --out docs/results/sweep_resume.json"),
    ("predict_cost.md", "Prediction and export cost",
     "python benchmarks/predict_cost.py --out docs/results/predict_cost.json"),
    ("lean_forward.md", "The lean forward against the full computation: training, evaluation, attack",
     "python benchmarks/lean_forward.py --out docs/results/lean_forward.json"),
    ("vs_official.md", "VPT against the official VPT code: parity and step cost",
     "python benchmarks/vs_official.py --official-vpt PATH --out docs/results/vs_official.json"),
    ("official_parity.md", "VPT and VAPT against their official code: logits and gradients at ViT-B/16",
     "python benchmarks/vs_official.py --parity-only --official-vpt PATH --official-vapt PATH --batch 2 "
     "--out docs/results/official_parity.json"),
    ("vapt_differences.md", "VAPT: vprompt's reconstruction against the official code",
     "read from the official source, by hand"),
    ("precision.md", "bf16 autocast against fp32 on a CPU: steps, the demo end to end, accuracies",
     "python benchmarks/precision.py --out docs/results/precision.json"),
    ("data_path.md", "Does the data path keep up? Loader images/s against a training step's",
     "python benchmarks/data_path.py --out docs/results/data_path.json"),
    ("grad_checkpointing.md", "Gradient checkpointing at ViT-B: peak memory and step time",
     "python benchmarks/grad_checkpointing.py --out docs/results/grad_checkpointing.json"),
    ("feature_cache.md", "A linear probe end to end: frozen features cached once against the backbone every epoch",
     "python benchmarks/feature_cache.py --out docs/results/feature_cache.json"),
]


def results_page(results_dir: Path) -> str:
    """One page with every results table, its source files and the command that made it."""
    found = {p.relative_to(results_dir).as_posix() for p in results_dir.rglob("*.md")}
    listed = {name for name, _, _ in RESULTS}
    if found - listed:
        raise ValueError(f"results tables without a page (add them to RESULTS in {__file__}): {sorted(found - listed)}")
    lines = ["# Results", "",
             "Every table here is the file a benchmark or recipe wrote, included as it is: no number on this "
             "page is typed by hand. Accuracy tables give their seeds and spread; cost tables are ratios "
             "measured in one run.", ""]
    for name, title, command in RESULTS:
        if name not in found:
            continue
        table = (results_dir / name).read_text(encoding="utf-8")
        folder = Path(name).parent
        extras = sorted(p.name for p in (results_dir / folder).iterdir()
                        if p.suffix in (".json", ".png") and (folder != Path(".") or p.stem == Path(name).stem))
        links = ", ".join(f"[{e}](results/{(folder / e).as_posix()})" for e in extras)
        lines += [f"## {title}", "", f"`{command}` — files: {links}", "", table.strip(), ""]
        plots = [e for e in extras if e.endswith(".png")]
        lines += [f"![{title}](results/{(folder / p).as_posix()})" for p in plots] + [""]
    return "\n".join(lines)


def field_docs(cls: type) -> dict[str, tuple[str, str]]:
    """``{field: (annotation, docstring)}`` from the class bodies of ``cls`` and its bases."""
    found: dict[str, tuple[str, str]] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
                scope = vars(inspect.getmodule(klass))
                found[node.target.id] = (annotation_text(node.annotation, scope), " ".join(str(doc).split()))
    return found


BOUNDS = {"at_least": "≥", "above": ">", "at_most": "≤", "below": "<"}


def annotation_text(node: ast.expr, scope: dict) -> str:
    """A field's annotation as a reader wants it: ``Annotated[int, at_least(1)]`` reads ``int ≥ 1``,
    a ``Literal`` (or an alias of one in ``scope``) lists its values."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "Annotated":
        kind, *marks = node.slice.elts
        return ", ".join([annotation_text(kind, scope), *(mark_text(mark) for mark in marks)])
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "Literal":
        values = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return " \\| ".join(ast.unparse(value) for value in values)
    if isinstance(node, ast.BinOp):  # X | None
        return f"{annotation_text(node.left, scope)} \\| {annotation_text(node.right, scope)}"
    if isinstance(node, ast.Name) and typing.get_origin(scope.get(node.id)) is typing.Literal:
        return " \\| ".join(repr(value) for value in typing.get_args(scope[node.id]))
    return ast.unparse(node)


def mark_text(mark: ast.expr) -> str:
    """``at_least(1)`` reads ``≥ 1``; other marks (``NonEmpty``, ``Writable``…) by their name."""
    if isinstance(mark, ast.Call) and ast.unparse(mark.func) in BOUNDS:
        return f"{BOUNDS[ast.unparse(mark.func)]} {ast.unparse(mark.args[0])}"
    return f"({ast.unparse(mark)})"


def options_table(name: str) -> str:
    """The markdown table of every option of ``name``'s config."""
    config = CONFIGS[name]() if name in CONFIGS else make_config(name)
    docs = field_docs(type(config))
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for field in dataclasses.fields(config):
        kind, doc = docs.get(field.name, ("", ""))
        default = getattr(config, field.name)
        shown = default.describe() if hasattr(default, "describe") else repr(default)
        rows.append(f"| `{field.name}` | {kind} | `{shown}` | {doc.replace('|', '&#124;')} |")
    return "\n".join(rows)


def arch_overrides(kwargs: dict) -> str:
    """timm constructor overrides as ``key=value`` pairs."""
    return ", ".join(f"`{key}={value}`".replace(" ", "") for key, value in kwargs.items())


def zoo_table() -> str:
    """The shipped zoo models as their cards describe them."""
    rows = ["| model | timm architecture | variant | source acc | PGD-20 acc | build (s, 2 CPU cores) | epochs |",
            "|---|---|---|---|---|---|---|"]
    for card in list_cards():
        variant = card["variant"] + (f", fine-tuned from `zoo:{card['parent']}`" if card.get("parent") else "")
        rows.append(f"| `zoo:{card['name']}` | `{card['arch']}`: {arch_overrides(card['kwargs'])} | {variant} | {card['source_acc']:.3f} "
                    f"| {card['robust_acc_pgd20']:.3f} | {card['build_seconds']:.0f} | {card['train']['epochs']} |")
    return "\n".join(rows)


def on_files(files: Files, config) -> Files:
    docs = Path(config["docs_dir"])
    files.append(File.generated(config, "reference/cli.md", content=cli_markdown()))
    files.append(File.generated(config, "results.md", content=results_page(docs / "results")))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MODELS_TABLE in markdown:
        markdown = markdown.replace(MODELS_TABLE, models_markdown(matrix()))
    if ZOO_TABLE in markdown:
        markdown = markdown.replace(ZOO_TABLE, zoo_table())
    if PRESETS_TABLE in markdown:
        markdown = markdown.replace(PRESETS_TABLE, preset_markdown(list(all_presets().values())))
    return OPTIONS_TABLE.sub(lambda m: options_table(m.group(1)), markdown)
