"""mmr1: Hydra-configured multimodal GRPO on TRL."""

import os
import sys
from typing import Any

# No background thread of the Hugging Face hub while a run sets itself up. TRL's trainers send usage
# telemetry from a thread they start in `__init__` (trl/trainer/base_trainer.py `_send_telemetry` ->
# huggingface_hub/utils/_telemetry.py); that thread resolves huggingface.co, and glibc's resolver calls
# getenv() (LOCALDOMAIN, RES_OPTIONS) on it while the main thread goes on into accelerate/Trainer set-up,
# which rewrites os.environ. glibc's getenv is not safe against a concurrent setenv: the README's first
# command died once in eight with SIGSEGV in getenv on a non-main thread (the gdb trace is in
# tests/test_startup.py). Offline runs gain nothing from it either. Set here, before huggingface_hub
# reads its constants at import; an explicit HF_HUB_DISABLE_TELEMETRY=0 from the user is kept.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if "huggingface_hub.constants" in sys.modules:  # imported before mmr1: its constant is already read
    flag = os.environ["HF_HUB_DISABLE_TELEMETRY"].upper() in {"1", "ON", "YES", "TRUE"}
    hub_constants: Any = sys.modules["huggingface_hub.constants"]
    hub_constants.HF_HUB_DISABLE_TELEMETRY = flag
