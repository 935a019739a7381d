#!/usr/bin/env bash
# The GPU run, prepared: step_cost at bf16, the lean forward against the full one, vs_official at ViT-B/16 (when VPT_OFFICIAL names a
# checkout of KMnP/vpt), data_path and the demo, then one table. Sized to fit 8 minutes on one GPU;
# not yet run on one (no GPU was lent when it was written).
#
#   VPT_OFFICIAL=/path/to/vpt benchmarks/gpu.sh [OUT_DIR]      # OUT_DIR: docs/results/gpu
#
# PYTHON picks the interpreter (default: the checkout's .venv, else python3); vprompt must be
# installed in it. Every benchmark writes its JSON (and table) under OUT_DIR, gpu_summary.py
# prints the one table and writes summary.json + summary.md beside them. Nothing else in vprompt
# depends on a GPU: this script is the only place one is used.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="$(realpath -m "${1:-$root/docs/results/gpu}")"
python="${PYTHON:-$([ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3)}"
mkdir -p "$out"
cd "$here"
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: no CUDA device')"

"$python" step_cost.py --amp --with-base --device cuda --out "$out/step_cost_bf16.json"
"$python" lean_forward.py --device cuda --rounds 10 --eval-images 512 --attack-batch 32 --out "$out/lean_forward.json"
if [ -n "${VPT_OFFICIAL:-}" ]; then
  "$python" vs_official.py --official-vpt "$VPT_OFFICIAL" --device cuda --out "$out/vs_official.json"
fi
"$python" data_path.py --device cuda --out "$out/data_path.json"
demo="$(mktemp -d)"
started=$(date +%s.%N)
"$python" -c "from vprompt.cli import main; main()" demo --out "$demo" > "$demo/log.txt"
"$python" - "$demo" "$started" "$out/demo.json" <<'PY'
import json, sys, time
from pathlib import Path
demo, started, out = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
rows = json.loads((demo / "results.json").read_text())
out.write_text(json.dumps({"seconds": round(time.time() - started, 1), "rows": rows}, indent=2) + "\n")
PY
rm -rf "$demo"
"$python" gpu_summary.py "$out"
