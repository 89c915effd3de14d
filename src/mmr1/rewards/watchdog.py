"""What `build_reward_funcs` hands to TRL: a reward behind its sandbox, counted and watched.

A failed item (timeout, exception, dead worker) gets `reward.failure_reward` and is counted; the
first few are written to `run_dir/reward_failures.jsonl`; counts reach TRL's logs through its
`log_metric` kwarg as `rewards/<name>/timeouts` and `rewards/<name>/errors`. A reward that gives
nothing but zeros or failures for `all_zero_patience` consecutive calls trips the watchdog.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
import types
from pathlib import Path
from typing import Any

from mmr1.rewards.config import OnAllZero, RewardConfig
from mmr1.rewards.registry import RewardSpec
from mmr1.rewards.sandbox import Outcome, WorkerPool
from mmr1.rewards.text import completion_text
from mmr1.tracking.ranks import global_rank

logger = logging.getLogger(__name__)

# TRL's helpers and objects, not data: never shipped to workers.
_NOT_COLUMNS = ("log_metric", "log_extra", "trainer_state", "environments")


class RewardWatchdogError(RuntimeError):
    """`reward.on_all_zero=stop` and a reward returned only zeros/failures for too long."""


class FailureLog:
    """The first `limit` failed items of a run, one JSON line each (shared by a run's rewards)."""

    def __init__(self, path: Path | None, limit: int):
        self.path, self.limit, self.written = path, limit, 0
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self._lock:
            if self.path is None or self.written >= self.limit:
                return
            self.written += 1
            record = {"rank": global_rank(), "time": time.time(), **record}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:  # one write per line: ranks may share it
                f.write(json.dumps(record, default=repr, ensure_ascii=False) + "\n")


class Watchdog:
    """Counts consecutive all-zero/all-failed calls; warns (or stops) every `patience` of them."""

    def __init__(self, name: str, patience: int, action: OnAllZero):
        self.name, self.patience, self.action, self.streak = name, patience, action, 0

    def update(self, values: list, failed: list[bool]) -> None:
        scored = [v for v, f in zip(values, failed) if not f and v is not None]
        dead = any(failed) or 0.0 in scored
        dead = dead and all(v == 0.0 for v in scored)
        self.streak = self.streak + 1 if dead else 0
        if self.patience and self.streak and self.streak % self.patience == 0:
            msg = (
                f"reward {self.name!r} returned only zeros or failures for {self.streak} consecutive calls: "
                "the policy is learning nothing from it (broken reward? missing dataset column? wrong "
                "answer format?). See rewards/<name>/errors|timeouts and reward_failures.jsonl; "
                "tune reward.all_zero_patience / reward.on_all_zero."
            )
            if self.action is OnAllZero.stop:
                raise RewardWatchdogError(msg + " Stopping (reward.on_all_zero=stop).")
            logger.warning("\n%s\n!! %s\n%s", "!" * 100, msg, "!" * 100)


class WatchedReward:
    """A TRL reward function (`__name__` = the configured name) running `spec` behind the sandbox."""

    def __init__(
        self, name: str, spec: RewardSpec, cfg: RewardConfig, pool: WorkerPool | None, failures: FailureLog
    ):
        self.__name__ = name
        self.spec, self.cfg, self.pool, self.failures = spec, cfg, pool, failures
        self.watchdog = Watchdog(name, cfg.all_zero_patience, cfg.on_all_zero)
        self.stats = {"calls": 0, "items": 0, "scored_in_workers": 0, "errors": 0, "timeouts": 0}
        self.last_seconds: list[float] = []  # per item, last call: wall time to its outcome

    def __repr__(self) -> str:
        return f"WatchedReward({self.__name__!r}, isolate={self.spec.isolate})"

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def __call__(self, completions: list, **kwargs: Any) -> list[float | None]:
        log_metric = kwargs.get("log_metric")
        state = kwargs.get("trainer_state")
        columns = self._columns(kwargs, len(completions))
        t0 = time.monotonic()
        if self.spec.isolate:
            outcomes = self._isolated(completions, columns, state)
        else:
            outcomes = self._inline(completions, kwargs, t0)
        values, failed = [], []
        counts = {"errors": 0, "timeouts": 0}
        for i, out in enumerate(outcomes):
            if out.status == "ok":
                values.append(out.value)
                failed.append(False)
                continue
            counts["timeouts" if out.status == "timeout" else "errors"] += 1
            values.append(self.cfg.failure_reward)
            failed.append(True)
            self.failures.write(
                {
                    "reward": self.__name__,
                    "kind": out.status,
                    "error": out.error,
                    "seconds": round(out.seconds, 3),
                    "step": getattr(state, "global_step", None),
                    "completion": _clip(completions[i]),
                    "columns": {k: _clip(v[i]) for k, v in columns.items()},
                }
            )
        self.stats["calls"] += 1
        self.stats["items"] += len(values)
        for key, count in counts.items():
            self.stats[key] += count
            if callable(log_metric):  # logged every call, zeros included, so TRL's average is per call
                log_metric(f"rewards/{self.__name__}/{key}", float(count))
        if any(failed):
            logger.warning(
                "reward %r: %d error(s), %d timeout(s) in %d items (given %r)",
                self.__name__,
                counts["errors"],
                counts["timeouts"],
                len(values),
                self.cfg.failure_reward,
            )
        self.last_seconds = [o.seconds for o in outcomes]
        self.watchdog.update(values, failed)
        return values

    def _columns(self, kwargs: dict, n: int) -> dict[str, list]:
        wanted = self.spec.columns
        if wanted is None:
            wanted = tuple(k for k in kwargs if k not in _NOT_COLUMNS)
        missing = [c for c in wanted if c not in kwargs]
        if missing:
            # A dataset without the column is a config error, not a flaky item: fail loudly, once.
            raise KeyError(
                f"reward {self.__name__!r} needs dataset column(s) {missing}; "
                f"this batch has {sorted(k for k in kwargs if k not in _NOT_COLUMNS)}"
            )
        cols = {}
        for key in wanted:
            value = kwargs[key]
            if not isinstance(value, (list, tuple)) or len(value) != n:
                raise ValueError(f"reward {self.__name__!r}: column {key!r} must be a list of {n} values")
            cols[key] = list(value)
        return cols

    def _inline(self, completions: list, kwargs: dict, t0: float) -> list[Outcome]:
        # Trusted, bounded rewards (see RewardSpec.isolate): one call for the batch with TRL's own
        # kwargs; failures are still counted.
        try:
            out = list(self.spec.fn(completions=completions, **kwargs))
            if len(out) != len(completions):
                raise ValueError(f"returned {len(out)} values for {len(completions)} completions")
            seconds = (time.monotonic() - t0) / max(1, len(out))
            return [Outcome("ok", None if v is None else float(v), seconds=seconds) for v in out]
        except Exception as exc:  # noqa: BLE001 - any failure of a reward is counted, never fatal
            error = f"{type(exc).__name__}: {exc}"
            return [Outcome("error", error=error, seconds=time.monotonic() - t0) for _ in completions]

    def _isolated(self, completions: list, columns: dict, state: Any) -> list[Outcome]:
        n = len(completions)
        outcomes: list[Outcome | None] = [None] * n
        extras = {"trainer_state": _slim_state(state)} if self.spec.columns is None else {}
        tasks: list[tuple[str, bytes]] = []
        first: dict[bytes, int] = {}  # payload -> task index, for pure rewards
        task_of: dict[int, int] = {}  # item -> task index
        for i in range(n):
            item = {k: v[i] for k, v in columns.items()}
            if self.spec.shortcut is not None:
                quick = self._shortcut(completions[i], item)
                if quick is not None:
                    outcomes[i] = Outcome("ok", quick)
                    continue
            try:
                payload = pickle.dumps(
                    {"completions": [completions[i]], **{k: [v] for k, v in item.items()}, **extras}
                )
            except Exception as exc:  # noqa: BLE001 - pickling can raise anything
                outcomes[i] = Outcome("error", error=f"inputs cannot be pickled: {type(exc).__name__}: {exc}")
                continue
            if self.spec.pure and payload in first:
                task_of[i] = first[payload]
                continue
            first[payload] = task_of[i] = len(tasks)
            tasks.append((self.spec.name, payload))
        if tasks:
            assert self.pool is not None  # isolated rewards always get a pool (mmr1.rewards.funcs)
            results = self.pool.run(tasks, self.cfg.timeout_s, self.cfg.batch_timeout_s)
            self.stats["scored_in_workers"] += len(tasks)
            for i, t in task_of.items():
                outcomes[i] = results[t] if t < len(results) else None
        # Every item gets an Outcome, whatever happened in the sandbox: a missing one once crashed
        # training here (AttributeError on None) when SIGTERM killed workers mid-call.
        lost = Outcome("error", error="no outcome came back from the reward sandbox")
        return [lost if o is None else o for o in outcomes]

    def _shortcut(self, completion: Any, item: dict) -> float | None:
        if self.spec.shortcut is None:
            return None
        try:
            return self.spec.shortcut(completion_text(completion), item)
        except Exception:  # noqa: BLE001 - the worker will score it (and report a real error if there is one)
            return None


_STATE_FIELDS = (
    "global_step",
    "max_steps",
    "epoch",
    "num_train_epochs",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "train_batch_size",
    "is_world_process_zero",
    "is_local_process_zero",
)


def _slim_state(state: Any) -> Any:
    # Plugins may shape rewards on progress (trainer_state.global_step, .epoch, ...). A plain
    # namespace of those fields, not TrainerState itself: unpickling that would import transformers
    # and torch in the worker, seconds charged to the item's budget.
    if state is None:
        return None
    return types.SimpleNamespace(**{k: getattr(state, k, None) for k in _STATE_FIELDS})


def _clip(value: Any, limit: int = 4000) -> Any:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"
