"""A prompt file is data, never instructions: crafted prompt folders through `vprompt eval` each end in
one ``error:`` line and exit 2, with no file opened that the prompt file named, no connection
attempted and no pickled code run (an audit hook watches every ``open`` and socket call); a prompt
saved before the check still loads to identical logits."""

from __future__ import annotations

import json
import pickle
import shutil
import site
import struct
import sys
from pathlib import Path

import pytest
import torch

import vprompt
from conftest import tiny_vit_spec
from vprompt.cli import main
from vprompt.data import write_synthetic_suite
from vprompt.model import create_model, load_prompt, save_prompt

EVENTS: list[tuple[str, str]] | None = None
"""While a case runs: every (event, argument) the audit hook saw; None between cases."""


def audit(event: str, args: tuple) -> None:
    if EVENTS is not None and event in ("open", "socket.connect", "socket.getaddrinfo", "urllib.Request"):
        EVENTS.append((event, str(args[0]) if args else ""))


sys.addaudithook(audit)
CODE = tuple({sys.prefix, sys.base_prefix, str(Path(vprompt.__file__).parents[1]), *site.getsitepackages()})
"""Where the interpreter reads code from: imports may open files there while a case runs."""


class Marker:
    """Unpickling this writes a file: the proof that pickled code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("code ran",))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-file")
    task = write_synthetic_suite(root / "suite", tasks=["digits"], image_size=16, test_size=10, progress=False)[0]
    model = create_model(tiny_vit_spec(), "vpt-deep", 10, [f"c{i}" for i in range(10)], prompt_len=2)
    save_prompt(model, root / "good")
    with (root / "evil.pt").open("wb") as file:  # a pickle outside the prompt folder, as a crafted file names it
        pickle.dump(Marker(str(root / "CODE_RAN")), file)
    return root, task


def edited(root: Path, name: str, change) -> Path:
    """A copy of the good prompt whose prompt.json ``change`` edited (it returns the new JSON)."""
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(root / "good", folder)
    meta = json.loads((folder / "prompt.json").read_text())
    (folder / "prompt.json").write_text(json.dumps(change(meta)))
    return folder


def backbone(**changes):
    def change(meta):
        meta["backbone"] = meta["backbone"] | changes
        return meta
    return change


def kwargs(**changes):
    def change(meta):
        meta["backbone"]["kwargs"] = meta["backbone"]["kwargs"] | changes
        return meta
    return change


def top(**changes):
    return lambda meta: meta | changes


CASES = {
    # the issue's: timm's keyword arguments that point at files and URLs, a local checkpoint, unbounded sizes
    "overlay file": (lambda m: backbone(pretrained=True)(kwargs(pretrained_cfg_overlay={"file": "{root}/evil.pt"})(m)),
                     "not an architecture argument"),
    "overlay url": (kwargs(pretrained_cfg_overlay={"url": "http://198.51.100.7/w.pt"}), "not an architecture argument"),
    "overlay hub id": (kwargs(pretrained_cfg_overlay={"hf_hub_id": "evil/weights"}), "not an architecture argument"),
    "checkpoint path": (backbone(checkpoint="/etc/passwd"), "names local weights"),
    "huge input size": (top(input_size=[100000, 100000]), "input_size must be two integers"),
    "huge class count": (top(num_classes=10 ** 9), "num_classes must be an integer"),
    # more of our own
    "cache dir": (kwargs(cache_dir="/tmp/elsewhere"), "not an architecture argument"),
    "pretrained cfg": (kwargs(pretrained_cfg={"file": "x"}), "not an architecture argument"),
    "timm hub name": (backbone(name="hf-hub:evil/model"), "names a timm architecture, not where to fetch"),
    "timm local dir": (backbone(name="local-dir:/etc"), "names a timm architecture, not where to fetch"),
    "transformers path": (backbone(name="hf-transformers:/etc/model"), "never a path"),
    "class count as text": (top(num_classes="10"), "num_classes must be an integer"),
    "class count as flag": (top(num_classes=True), "num_classes must be an integer"),
    "control characters": (lambda m: m | {"class_names": ["c\x1b[31m0", *m["class_names"][1:]]}, "printable names"),
    "names and count differ": (lambda m: m | {"class_names": m["class_names"][:3]}, "class_names must be 10"),
    "unknown key": (top(run_this="rm -rf /"), "unknown keys"),
    "nested option": (lambda m: m | {"method_config": m["method_config"] | {"prompt_len": {"a": 1}}},
                      "method_config must map"),
    "non-finite option": (lambda m: m | {"method_config": m["method_config"] | {"prompt_dropout": float("nan")}},
                          "method_config must map"),
    "method with control characters": (top(method="vpt-deep\n"), "is not a method name"),
    "huge width": (kwargs(embed_dim=10 ** 7), "must be a bounded number"),
    "huge model": (kwargs(embed_dim=65536, depth=200, num_heads=64), "GiB (parameters and buffers), more than"),
    "word with a path": (kwargs(global_pool="../../etc"), "must be a bounded number, a flag, a word"),
    "negative seed": (backbone(init_seed=-1), "init_seed must be"),
    "float input size": (top(input_size=[16.5, 16]), "input_size must be two integers"),
    "fingerprint not hex": (top(backbone_fingerprint="../../x"), "backbone_fingerprint must be a hex digest"),
    "not an object": (lambda m: [m], "is not a JSON object"),
    "backbone not an object": (top(backbone="vit_base_patch16_224"), "backbone must be an object"),
    "huge buffers": (lambda m: backbone(name="beit_base_patch16_224", kwargs={"img_size": 2048, "depth": 12,
                                                                            "embed_dim": 32, "num_heads": 2})(m),
                     "GiB (parameters and buffers), more than"),
    "huge image side": (kwargs(img_size=65536), "img_size must be at most 4096"),
    "exponential pattern": (lambda m: m | {"method_config": m["method_config"] | {"target_modules": "(\\w|\\w)*!"}},
                            "method option target_modules must be a word"),
    "loading argument": (kwargs(checkpoint_path="/etc/passwd"), "not an architecture argument"),
    "robustbench threat": (backbone(name="robustbench:evil/Salman2020Do_R18", kwargs={}), "RobustBench threat 'evil'"),
    "transformers folder here": (backbone(name="hf-transformers:shipped", kwargs={}), "names a folder here"),
}


def run_case(folder: Path, task: Path, capsys) -> tuple[int, str, list[tuple[str, str]]]:
    global EVENTS
    EVENTS = []
    try:
        with pytest.raises(SystemExit) as exited:
            main(["eval", "--prompt", str(folder), "--data", str(task)])
    finally:
        events, EVENTS = EVENTS, None
    return exited.value.code, capsys.readouterr().err, events


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_prompt_file_is_one_error_line_and_opens_nothing_it_names(case, workspace, capsys, monkeypatch):
    root, task = workspace
    (root / "shipped").mkdir(exist_ok=True)  # a folder shipped beside the prompt, named as a transformers checkpoint
    monkeypatch.chdir(root)
    change, expected = CASES[case]
    folder = edited(root, case.replace(" ", "-"), lambda meta: json.loads(
        json.dumps(change(meta)).replace("{root}", str(root))))
    code, err, events = run_case(folder, task, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in err
    opened = [arg for event, arg in events if event == "open"]
    assert str(folder / "prompt.json") in opened  # the hook sees what is read
    assert not [p for p in opened if not p.startswith((str(folder), *CODE))], opened  # nothing but code and the folder
    assert not [e for e in events if e[0] != "open"], events  # no connection attempted
    assert not (root / "CODE_RAN").exists()


def test_weights_whose_header_does_not_match_are_refused_before_a_tensor_is_read(workspace, capsys):
    root, task = workspace
    folder = edited(root, "lying-header", lambda meta: meta)
    header = {"token_prompt.prompts": {"dtype": "F32", "shape": [3, 2, 4096], "data_offsets": [0, 3 * 2 * 4096 * 4]}}
    text = json.dumps(header).encode()
    (folder / "prompt.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 64)  # data cut short
    code, err, _ = run_case(folder, task, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "cannot read" in err or "tensors do not match" in err


def test_a_prompt_trained_on_a_weights_file_loads_when_the_user_gives_the_file(workspace, tmp_path):
    root, task = workspace
    trained = create_model(tiny_vit_spec(), "linear", 10)
    weights = tmp_path / "backbone.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in trained.backbone.state_dict().items()}, str(weights))
    spec = tiny_vit_spec()
    spec.checkpoint, spec.init_seed = str(weights), None
    model = create_model(spec, "vpt-deep", 10, prompt_len=2)
    save_prompt(model, tmp_path / "prompt")
    with pytest.raises(Exception, match="names local weights"):
        load_prompt(tmp_path / "prompt")
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(load_prompt(tmp_path / "prompt", weights=weights).eval()(images), model.eval()(images))
    main(["eval", "--prompt", str(tmp_path / "prompt"), "--data", str(task), "--weights", str(weights), "--json"])


def test_the_good_prompt_still_loads_to_identical_logits(workspace):
    root, _ = workspace
    images = torch.rand(2, 3, 16, 16)
    first, second = load_prompt(root / "good"), load_prompt(root / "good")
    assert torch.equal(first(images), second(images))
