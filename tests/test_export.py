"""vprompt export: standalone TorchScript and ONNX files whose logits equal the PromptedModel's,
that run without vprompt or timm, with a sidecar; a model that cannot be exported gets one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import tiny_vit_spec
from vprompt.backbones import BackboneSpec
from vprompt.cli import main
from vprompt.errors import ConfigError
from vprompt.export import export_model, run_onnx, run_torchscript
from vprompt.families.matrix import TINY_SEQUENCE, TINY_SWIN
from vprompt.model import create_model, save_prompt

CASES = {
    "vpt-deep": (tiny_vit_spec(), {"prompt_len": 3}),
    "vapt": (tiny_vit_spec(), {"prompt_len": 3}),
    "kv-prompt": (tiny_vit_spec(), {"prompt_len": 3}),
    "vp": (tiny_vit_spec(num_classes=12), {"mapping": "rlm"}),  # pixel prompt + label mapping on the source head
}
FAMILIES = {
    "dinov3": BackboneSpec("vit_small_patch16_dinov3", kwargs=dict(TINY_SEQUENCE), init_seed=0),
    "eva02": BackboneSpec("eva02_tiny_patch14_224", kwargs=dict(TINY_SEQUENCE), init_seed=0),
    "beit": BackboneSpec("beit_base_patch16_224", kwargs=dict(TINY_SEQUENCE), init_seed=0),
    "swin": BackboneSpec("swin_tiny_patch4_window7_224", kwargs=dict(TINY_SWIN), init_seed=0),
}


def trained(spec: BackboneSpec, method: str, **options):
    """A model with moved prompts and head, so the export is checked on more than its init."""
    torch.manual_seed(0)
    model = create_model(spec, method, 5, [f"c{i}" for i in range(5)], **options).train()
    params = [p for p in model.parameters() if p.requires_grad]
    model(torch.rand(4, 3, *model.image_size)).logsumexp(1).sum().backward()
    with torch.no_grad():
        for param in params:
            param -= 0.5 * param.grad.sign()
    return model.eval()


def logits_close(model, run) -> None:
    for batch in (1, 7):
        images = torch.rand(batch, 3, *model.image_size, generator=torch.Generator().manual_seed(10 + batch))
        with torch.no_grad():
            expected = model(images).numpy()
        np.testing.assert_allclose(run(images.numpy()), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt, runner", [("torchscript", run_torchscript),
                                         pytest.param("onnx", run_onnx, marks=pytest.mark.slow)])  # onnx: 2-4 s each
@pytest.mark.parametrize("method", CASES)
def test_exported_logits_equal_the_prompted_models(tmp_path, method, fmt, runner):
    spec, options = CASES[method]
    model = trained(spec, method, **options)
    out = tmp_path / f"model.{fmt}"
    sidecar = json.loads(export_model(model, out, fmt).read_text())
    logits_close(model, runner(out))
    assert sidecar["class_names"] == model.class_names and sidecar["input_size"] == list(model.image_size)
    assert sidecar["backbone_fingerprint"] == model.backbone_fingerprint and sidecar["method"] == method


@pytest.mark.slow  # an ONNX export per family, end to end
@pytest.mark.parametrize("family", FAMILIES)
def test_every_token_prompt_family_exports(tmp_path, family):
    model = trained(FAMILIES[family], "vpt-deep", prompt_len=2)
    for fmt, runner in (("torchscript", run_torchscript), ("onnx", run_onnx)):
        export_model(model, tmp_path / f"m.{fmt}", fmt)
        logits_close(model, runner(tmp_path / f"m.{fmt}"))


STANDALONE = textwrap.dedent("""
    import importlib.abc, sys
    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("vprompt", "timm"):
                raise ImportError(f"{name} must not be needed")
    sys.meta_path.insert(0, Refuse())
    sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]
    import json, numpy as np, onnxruntime, torch
    folder = sys.argv[1]
    images = np.load(folder + "/images.npy")
    expected = np.load(folder + "/expected.npy")
    scripted = torch.jit.load(folder + "/model.pt")(torch.from_numpy(images)).detach().numpy()
    session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
    onnx = session.run(None, {"images": images})[0]
    assert np.abs(scripted - expected).max() < 1e-4 and np.abs(onnx - expected).max() < 1e-4
    assert not [m for m in sys.modules if m.split(".")[0] in ("vprompt", "timm")]
    names = json.load(open(folder + "/model.onnx.json"))["class_names"]
    print(names[int(onnx.argmax(1)[0])])
""")


@pytest.mark.slow  # end to end: exports run in a fresh process
def test_exports_run_without_vprompt_or_timm(capsys, tmp_path):
    model = trained(*CASES["vapt"][:1], "vapt", prompt_len=2)
    prompt = save_prompt(model, tmp_path / "prompt")
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        main(["export", "--prompt", str(prompt), "--format", fmt, "--out", str(tmp_path / name)])
    assert "checked against the PromptedModel" in capsys.readouterr().out
    images = torch.rand(3, 3, *model.image_size)
    np.save(tmp_path / "images.npy", images.numpy())
    with torch.no_grad():
        expected = model(images)
    np.save(tmp_path / "expected.npy", expected.numpy())
    result = subprocess.run([sys.executable, "-I", "-c", STANDALONE, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == model.class_names[int(expected.argmax(1)[0])]
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["prompt_sha256"] and sidecar["input"]["shape"] == ["batch", 3, *model.image_size]


def test_a_failed_export_is_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch):
    import vprompt.export as export

    def broken(model, example, path):
        raise RuntimeError("Could not trace the operator aten::frobnicate\nlong traceback text")

    monkeypatch.setitem(export.WRITERS, "onnx", broken)
    prompt = save_prompt(create_model(tiny_vit_spec(), "vpt-shallow", 3, prompt_len=1), tmp_path / "p")
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--prompt", str(prompt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: cannot export vpt-shallow on vit_tiny_patch16_224 to onnx: Could not trace")
    assert not list(tmp_path.glob("m.onnx*"))


def test_an_export_that_disagrees_is_refused(tmp_path, monkeypatch):
    import vprompt.export as export

    model = create_model(tiny_vit_spec(), "vpt-shallow", 3, prompt_len=1)
    monkeypatch.setitem(export.RUNNERS, "torchscript", lambda path: (lambda images: np.zeros((len(images), 3))))
    with pytest.raises(ConfigError, match="differ from the PromptedModel's"):
        export_model(model, tmp_path / "m.pt", "torchscript")
    assert not list(tmp_path.iterdir())
