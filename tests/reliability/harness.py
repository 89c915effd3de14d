"""Helpers for the reliability tests: one tiny run recipe with real gradients, CLI runs, comparisons.

The recipe: TINY (testkit) with 4 synthetic rows (2 prompts per step: 2 steps per epoch, so a
4-step run crosses an epoch boundary), a pseudo-random reward (tests/reliability/plugins.py) so that
advantages and gradients are non-zero, truncated completions kept in the loss (8 tokens truncate
every completion of an untrained model). One thread everywhere: float reductions then happen in one
order, and a resumed run's numbers can be compared bit for bit with a straight run's.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from mmr1.tracking.metrics import read_metrics
from testkit import REPO, TINY, run_cli, run_env

PLUGINS = Path(__file__).with_name("plugins.py")
RECIPE = [o for o in TINY if not o.startswith(("trainer.save_steps=", "dataset.num_samples="))] + [
    "dataset.num_samples=4",
    "trainer.mask_truncated_completions=false",
    "reward.funcs=[hash_reward]",
    f"reward.plugins=[{PLUGINS}]",
    "trainer.max_steps=4",
    "trainer.save_steps=2",
    "trainer.save_total_limit=2",
]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# Wall-clock measurements: the only logged values that may differ between identical runs.
_TIMING = ("step_time", "train_runtime", "per_second")


def with_overrides(*extra: str) -> list[str]:
    """RECIPE with ``extra`` replacing the same keys (Hydra refuses a key given twice)."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [o for o in RECIPE if o.split("=", 1)[0] not in keys] + list(extra)


def cli(overrides: list[str], run_dir: Path, env: dict | None = None, check: bool = True):
    return run_cli([*overrides, f"hydra.run.dir={run_dir}"], env={**ENV, **(env or {})}, timeout=300, check=check)


def start(overrides: list[str], run_dir: Path, env: dict | None = None) -> subprocess.Popen:
    full_env = run_env({**ENV, **(env or {})})
    return subprocess.Popen([sys.executable, "-m", "mmr1.train", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended (rc {proc.returncode}) before {path} appeared\n"
                                 f"{out[-3000:]}\n{err[-6000:]}")
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def rows_by_step(run_dir: Path) -> dict[int, dict]:
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"duplicate step rows in metrics.jsonl: {steps}"
    return {r["step"]: r for r in rows}


def assert_same_rows(a: dict, b: dict, *, rel: float = 0.0) -> None:
    """Every logged value equal (``rel`` = 0: bit for bit), timings aside."""
    assert set(a) == set(b), f"different keys: {sorted(set(a) ^ set(b))}"
    for k, va in a.items():
        if any(t in k for t in _TIMING):
            continue
        vb = b[k]
        if isinstance(va, float) and isinstance(vb, float):
            assert math.isclose(va, vb, rel_tol=rel, abs_tol=0.0) or va == vb, f"step {a['step']} {k}: {va} != {vb}"
        else:
            assert va == vb, f"step {a['step']} {k}: {va!r} != {vb!r}"


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not (wa[k] == wb[k]).all()]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"
