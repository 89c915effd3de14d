"""Which checkpoint a run continues from (no torch: the launching process resolves it too).

``resume=auto`` (default) continues from the run directory's newest *complete* checkpoint, skipping
broken newer ones with a warning that names the bad file; a run directory whose checkpoints are all
broken stops with an error instead of silently training from scratch. ``resume=never`` starts fresh
(old checkpoints are set aside, never overwritten in place). ``resume=PATH`` continues from PATH.

What Trainer itself does not restore from the chosen checkpoint is ``mmr1.reliability.restore``'s.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from mmr1.reliability.checkpoints import CheckpointError, clear_after, select_checkpoint, set_aside, verify
from mmr1.tracking.ranks import is_main_process
from mmr1.tracking.secrets import redact_override

log = logging.getLogger("mmr1.reliability")

WANDB_ID_FILE = "wandb_run_id"  # mmr1.tracking.wandb_run keeps the run id there


def resolve_resume(resume: str, run_dir: str | Path) -> str | None:
    """The checkpoint to resume from (None = fresh start), after setting aside what must not be reused."""
    run_dir = Path(run_dir)
    main = is_main_process()
    chosen = _resolve(resume, run_dir, main)
    if chosen is None and main:
        # A fresh start is a new wandb run: continuing the old one would log steps 1..N twice.
        (run_dir / WANDB_ID_FILE).unlink(missing_ok=True)
    return chosen


def _resolve(resume: str, run_dir: Path, main: bool) -> str | None:
    if resume == "never":
        if main:
            for p in clear_after(run_dir, -1, "abandoned"):
                log.warning("resume=never: set aside the earlier run's %s", p)
        return None
    return _resolve_auto(run_dir, main) if resume == "auto" else _resolve_path(resume, run_dir, main)


def _resolve_path(resume: str, run_dir: Path, main: bool) -> str:
    path = Path(resume).expanduser()
    v = verify(path, require_marker=False)
    if not v.ok:
        raise CheckpointError(f"resume={resume}: cannot resume: {v.problem}")
    if main and path.resolve().parent == run_dir.resolve():
        # Later checkpoints of this run belong to the trajectory being replaced.
        for p in clear_after(run_dir, v.step, "abandoned"):
            log.warning("resume=%s: set aside the later %s", resume, p)
    return str(path)


def _resolve_auto(run_dir: Path, main: bool) -> str | None:
    chosen, rejected = select_checkpoint(run_dir)
    for v in rejected:
        log.warning("resume=auto: skipping %s: %s", v.path.name, v.problem)
    if chosen is None:
        if rejected:
            names = "; ".join(f"{v.path.name}: {v.problem}" for v in rejected)
            raise CheckpointError(
                f"{run_dir} has checkpoints but none is complete ({names}). Not training from scratch "
                "silently: pass resume=never to start over (they are set aside), or resume=PATH.")
        return None
    if main:
        for v in rejected:  # out of the way of the saves that will reuse their names
            if v.incomplete:  # a crashed save: nothing to learn from it, and it may be what filled the disk
                shutil.rmtree(v.path, ignore_errors=True)
                log.warning("resume=auto: deleted the unfinished %s", v.path.name)
            else:
                log.warning("resume=auto: set aside the damaged %s as %s", v.path.name,
                            set_aside(v.path, "corrupt").name)
    log.warning("resume=auto: continuing from %s", chosen)
    return str(chosen)


def resume_command(run_dir: str | Path) -> str:
    """The command that continues this run: the same overrides, this run directory, resume=auto."""
    overrides: list[str] = []
    try:
        if HydraConfig.initialized():
            overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - no Hydra (train(cfg) from Python): only the run directory is known
        overrides = []
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("hydra.run.dir", "resume", "run_dir")]
    args = [redact_override(o) for o in keep] + [f"hydra.run.dir={Path(run_dir).resolve()}"]
    return "python -m mmr1.train " + " ".join(shlex.quote(a) for a in args)
