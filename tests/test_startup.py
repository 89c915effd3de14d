"""Start-up must not race the environment.

What was found: `pip install -e . && python -m mmr1.train` died once in eight launches with SIGSEGV inside
glibc's getenv on a non-main thread, right after GRPOTrainer was built. Under gdb (breakpoints on getenv
off the main thread, setenv/unsetenv on it) a whole default run showed which threads read the
environment: the reward sandbox's spawner thread made no getenv call at all; tokenizers' rayon workers
did, but only inside a batch encode the main thread waits for; and huggingface_hub's telemetry thread,
started by TRL's trainer `__init__` (trl/trainer/base_trainer.py `_send_telemetry`), called getenv
(LOCALDOMAIN, RES_OPTIONS, RESOLV_*) from getaddrinfo("huggingface.co") while the main thread went on
into set-up that rewrites os.environ. mmr1 turns that thread off before the hub is imported
(src/mmr1/__init__.py). These tests fail on the code before that change: the thread was started.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

THREADS = """
import threading
{first}
import mmr1.train  # what `python -m mmr1.train` imports first
from huggingface_hub.utils import send_telemetry
send_telemetry("mmr1-startup-test")  # what TRL's trainers call in __init__
print(sorted(t.name for t in threading.enumerate()))
"""


def _threads_after_telemetry(first: str = "", env_extra: dict | None = None) -> str:
    import os

    # DO_NOT_TRACK (honoured by the hub) would keep the thread from starting when the test wants it started; the
    # endpoint is a closed local port, so a telemetry thread that does start never reaches the network.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "HF_HUB_OFFLINE",
                                                            "DO_NOT_TRACK")}
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", **(env_extra or {})})
    out = subprocess.run([sys.executable, "-c", THREADS.format(first=first)], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_no_telemetry_thread_is_started():
    assert _threads_after_telemetry() == "['MainThread']"


def test_no_telemetry_thread_when_the_hub_was_imported_first():
    # A user's script may import transformers before mmr1: the hub's constant is already read then.
    assert _threads_after_telemetry(first="import huggingface_hub.constants") == "['MainThread']"


def test_an_explicit_user_setting_is_kept():
    # The check above is only meaningful if the thread does start when telemetry is on.
    assert "_telemetry_worker" in _threads_after_telemetry(env_extra={"HF_HUB_DISABLE_TELEMETRY": "0"})


def test_trl_still_sends_telemetry_through_the_hub_helper():
    # If TRL moves to another mechanism, the guard above would silently stop covering it.
    from trl.trainer import base_trainer

    assert "send_telemetry" in inspect.getsource(base_trainer)


def test_the_entry_point_imports_no_torch_or_trl():
    """`python -m mmr1.train` composes, checks and (for a launching process) only starts ranks before it trains:
    torch and TRL are imported with the training steps (train.py's one lazy import), not with the entry point."""
    code = "import sys, mmr1.train; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
