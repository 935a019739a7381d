"""Cost of one HGPrompt weight-search epoch over K sources, against one forward pass over the same data.

The search (``vprompt.transfer.search_weights``) copies the ensemble prompt P(w) into a per-sample
leaf, so one forward pass and two backward passes per batch (the search head's losses for GAR's
per-source gradients, the H-score for the weights) serve every source: nothing runs once per
source. Counted here with hooks on the backbone (images through its first block, forward and
backward) and timed against a plain no-grad forward epoch with the ensemble prompt, interleaved.
The issue's bound: at most K + 1 forward passes' worth per epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from _common import base_parser, interleaved_timings, markdown_table, paired_ratios, quartiles, setup, write_outputs
from vprompt.backbones import BackboneSpec
from vprompt.model import create_model
from vprompt.prompts.ensemble import ensemble_prompt
from vprompt.transfer import SearchConfig, prompt_features, search_weights

TINY = BackboneSpec("vit_tiny_patch16_224", kwargs=dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2))


class PassCounter:
    """Images that went forward and backward through the backbone's first block."""

    def __init__(self, block: torch.nn.Module) -> None:
        self.forward = self.backward = 0
        block.register_forward_hook(lambda m, i, o: self._add("forward", o))
        block.register_full_backward_hook(lambda m, gi, go: self._add("backward", go[0]))

    def _add(self, kind: str, tensor: torch.Tensor) -> None:
        setattr(self, kind, getattr(self, kind) + len(tensor))

    def reset(self) -> None:
        self.forward = self.backward = 0


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:fractal-vit", help="backbone (default: the zoo ViT of the offline recipes)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup(args)
    spec = TINY if args.quick else BackboneSpec(args.model)
    sizes = (2, 4) if args.quick else (2, 4, 6, 12)
    images = 256 if args.quick else 1024
    model = create_model(spec, "vpt-deep", 10, prompt_len=10).eval()
    side = model.image_size
    data = TensorDataset(torch.rand(images, 3, *side), torch.arange(images) % 10)
    counter = PassCounter(model.backbone.blocks[0])
    config = SearchConfig(search_epochs=1, search_batch_size=128)
    bank = torch.randn(max(sizes), *model.token_prompt.prompts.shape) * 0.05
    steps = {"forward": lambda: prompt_features(model, ensemble_prompt(torch.full((2,), 0.5), bank[:2]), data, 128)}
    for k in sizes:
        steps[f"search K={k}"] = lambda k=k: search_weights(model, bank[:k], data, config)
    times = interleaved_timings(steps, rounds=1 if args.quick else args.rounds)
    rows = []
    for k in sizes:
        counter.reset()
        search_weights(model, bank[:k], data, config)
        q1, median, q3 = quartiles(paired_ratios(times[f"search K={k}"], times["forward"]))
        rows.append({"model": spec.name if args.quick else args.model, "sources": k, "images": images,
                     "forward_passes": counter.forward / images, "backward_passes": counter.backward / images,
                     "time_ratio_vs_forward": median, "time_ratio_q1": q1, "time_ratio_q3": q3,
                     "bound_forward_passes": k + 1, "within_bound": median <= k + 1, "threads": args.threads})
    columns = [
        ("model", lambda r: r["model"]), ("K sources", lambda r: str(r["sources"])),
        ("forward passes / epoch", lambda r: f"{r['forward_passes']:.2f}"),
        ("backward passes / epoch", lambda r: f"{r['backward_passes']:.2f}"),
        ("epoch time ÷ one forward pass (IQR)",
         lambda r: f"{r['time_ratio_vs_forward']:.2f} ({r['time_ratio_q1']:.2f}–{r['time_ratio_q3']:.2f})"),
        ("bound K + 1", lambda r: str(r["bound_forward_passes"])),
    ]
    header = (f"HGPrompt weight-search epoch vs one no-grad forward pass over the same {images} images "
              f"(batch 128, VPT-deep p = 10, {args.threads} threads, {args.rounds if not args.quick else 1} interleaved "
              "rounds after a warm-up; median per-round ratio).\n\n")
    write_outputs(rows, header + markdown_table(rows, columns), args.out, args.quick)


if __name__ == "__main__":
    main()
