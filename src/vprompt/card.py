"""The model card every saved prompt carries: a README.md a person can read and the Hugging Face
Hub reads (its YAML header is Hub model-card metadata), so a prompt folder can be shared as it is.
"""

from __future__ import annotations

import json
from typing import Any

CARD_FILE = "README.md"


def yaml_value(value: Any) -> str:
    """A scalar or list in YAML flow style (JSON is valid YAML)."""
    return json.dumps(value)


def hub_metadata(meta: dict[str, Any], training: dict[str, Any] | None) -> list[str]:
    backbone = meta["backbone"]
    lines = ["library_name: vprompt", "pipeline_tag: image-classification",
             f"tags: {yaml_value(['vprompt', 'visual-prompting', meta['method'], 'timm'])}"]
    if backbone.get("pretrained"):
        lines.append(f"base_model: {yaml_value('timm/' + backbone['name'])}")
    accuracy = (training or {}).get("metrics", {}).get("eval_acc")
    if accuracy is not None:
        task = training.get("task") or "target task"
        lines += ["model-index:", f"- name: {yaml_value(meta['method'] + ' on ' + backbone['name'])}", "  results:",
                  "  - task: {type: image-classification}", f"    dataset: {{name: {yaml_value(task)}, type: {yaml_value(task)}}}",
                  f"    metrics: [{{type: accuracy, value: {accuracy:.6f}}}]"]
    return lines


def model_card(meta: dict[str, Any], weights: str, training: dict[str, Any] | None = None) -> str:
    """The README.md of a prompt folder: ``meta`` is its prompt.json, ``weights`` where the backbone's
    weights come from (``BackboneSpec.weights_source``), ``training`` what the run knows (``config``,
    ``metrics`` of the last epoch, ``task``, ``eval_split``, ``adversarial``)."""
    backbone, classes = meta["backbone"], meta["class_names"]
    shown = ", ".join(classes[:20]) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
    options = ", ".join(f"{k}={v}" for k, v in meta["method_config"].items()) or "defaults"
    lines = ["---", *hub_metadata(meta, training), "---", "",
             f"# {meta['method']} prompt for `{backbone['name']}`", "",
             "A visual prompt trained with [vprompt](https://pypi.org/project/vprompt/): only the prompt and",
             "head are stored here (`prompt.safetensors`, `prompt.json`); the frozen backbone is rebuilt from its spec.", "",
             f"- **Method**: `{meta['method']}` ({options})",
             f"- **Backbone**: `{backbone['name']}`" + (f" with {backbone['kwargs']}" if backbone.get("kwargs") else "")
             + f" ({weights}); weights fingerprint `{meta['backbone_fingerprint']}`",
             f"- **Input**: RGB images in [0, 1] at {meta['input_size'][0]}×{meta['input_size'][1]}; the model normalises them",
             f"- **Classes** ({meta['num_classes']}): {shown}"]
    if training:
        config = training.get("config", {})
        settings = ", ".join(f"{k} {config[k]}" for k in ("preset", "epochs", "batch_size", "optimizer", "base_lr",
                                                            "weight_decay", "warmup_epochs", "seed")
                             if config.get(k) is not None)
        lines.append(f"- **Training**: {settings}" + (f"; adversarial: {training['adversarial']}"
                                                       if training.get("adversarial") else ""))
        metrics = training.get("metrics", {})
        if metrics.get("eval_acc") is not None:
            lines.append(f"- **Accuracy**: {metrics['eval_acc']:.4f} on {training.get('task') or 'the task'} "
                         f"[{training.get('eval_split') or 'eval split'}] after epoch {metrics.get('epoch')}, "
                         f"one run (seed {config.get('seed')}): no spread over seeds is known for this prompt")
    else:
        lines.append("- **Training**: not recorded (saved outside `vprompt train`)")
    lines += ["", "## Use it", "", "```bash",
              "vprompt predict --prompt THIS_FOLDER my_images/      # top-5 classes per image",
              "vprompt eval --prompt THIS_FOLDER --data TASK --split test",
              "vprompt export --prompt THIS_FOLDER --format onnx --out model.onnx   # runs without vprompt",
              "```", "", "```python", "import vprompt", "",
              'model = vprompt.load_prompt("THIS_FOLDER")   # or "hf://ORG/NAME" once uploaded to the Hub',
              'rows = vprompt.predict(model, ["image.jpg"])', "```", ""]
    return "\n".join(lines)
