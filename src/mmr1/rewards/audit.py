"""The reward audit: ``python -m mmr1.rewards.audit +experiment=NAME [key=value ...]`` (also ``mmr1-audit``).

Which wrong or degenerate completions do the experiment's rewards pay? The config is composed as training
composes it (``conf/audit.yaml`` is ``train.yaml`` with its own output directory; ``+preset=rehearsal`` applies
as in training); ``audit.rows`` real rows of the experiment's dataset (for a hub dataset its offline stand-in,
``dataset.generator``, swapped in as ``+preset=rehearsal`` swaps it, when the hub cannot be reached or with
``audit.stand_in=true``) give the gold solutions the probes are built from (mmr1.rewards.probes); every
reward function of ``reward.funcs`` scores them through the sandbox training uses. Prints the table probe ->
reward per function, writes ``audit.json`` (one record per row, probe and function: ``probe``, ``reward``,
``value``, ``flagged``, ...) in its output directory and exits 0; with ``audit.strict=true`` it exits 1 when
anything is flagged.

An entry point (listed in tests/test_architecture.py's ENTRY_POINTS, like ``data/__main__.py``): it composes
configs and builds data, which the ``rewards`` layer below ``config`` and beside ``data`` may not; the probes
and their scoring stay in ``mmr1.rewards.probes``, which training uses too (``audit_at_start``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mmr1.config import CONF_DIR
from mmr1.config.rehearsal import HUB_SOURCES, apply_rehearsal
from mmr1.config.schema import register_configs
from mmr1.config.typed import container
from mmr1.data import build_datasets, resolve_pixel_limits
from mmr1.rewards import build_reward_funcs, shutdown
from mmr1.rewards.config import AuditConfig, as_audit_config
from mmr1.rewards.overlong import NAME as OVERLONG
from mmr1.rewards.probes import flagged, score_probes, table
from mmr1.tracking.run_dir import write_json

log = logging.getLogger("mmr1.rewards.audit")
AUDIT_FILE = "audit.json"

register_configs()  # conf/audit.yaml extends conf/train.yaml, which extends the typed schema


def audit_rows(cfg: DictConfig, audit: AuditConfig) -> tuple[list[dict], str]:
    """``audit.rows`` rows of the experiment's dataset as training builds them, and where they came from."""
    limits = resolve_pixel_limits(cfg.model.max_pixels, cfg.model.min_pixels)
    # Only the rows probed are built: no held-out split, and a generator makes just those rows.
    dataset = {**container(cfg.dataset, enum_to_str=True), "eval_size": 0, "limit": audit.rows}
    source = dataset["source"]
    stand_in = {"source": "synthetic", "num_samples": audit.rows}  # the rehearsal's swap (mmr1.config.rehearsal)
    if source == "synthetic":
        dataset["num_samples"] = min(dataset["num_samples"], audit.rows)
    elif source in HUB_SOURCES and audit.stand_in:
        dataset.update(stand_in)

    def build(node: dict) -> list[dict]:
        bundle = build_datasets(node, min_pixels=limits.min_pixels, max_pixels=limits.max_pixels,
                                seed=cfg.trainer.seed, video=cfg.model.video)
        return [bundle.train[i] for i in range(min(audit.rows, len(bundle.train)))]

    origin = f"{dataset['name']} ({dataset['source']})"
    try:
        return build(dataset), origin
    except ConnectionError as err:  # datasets' "Couldn't reach ... on the Hub" (offline, HF_HUB_OFFLINE=1)
        if source not in HUB_SOURCES or audit.stand_in is not None:
            raise
        log.warning("reward audit: %s; using the offline stand-in %r instead (audit.stand_in=false to refuse)",
                    err, dataset["generator"])
        return build({**dataset, **stand_in}), f"{dataset['name']} (offline stand-in {dataset['generator']})"


def run(cfg: DictConfig) -> int:
    """The command: table on stdout, ``audit.json`` in the run directory; the exit status."""
    apply_rehearsal(cfg)  # +preset=rehearsal: the same swaps as in training
    audit = as_audit_config(cfg.get("audit"))
    out = Path(cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, origin = audit_rows(cfg, audit)
    t0 = time.monotonic()
    funcs = build_reward_funcs(cfg.reward, out)  # the training sandbox; reward_failures.jsonl lands in `out`
    try:
        records = score_probes(funcs, rows, cfg.trainer.max_completion_length, tools=bool(cfg.rollout.get("tools")))
    finally:
        shutdown()
    write_json(out / AUDIT_FILE, records)
    found = flagged(records)
    print(f"mmr1 reward audit: rewards {list(cfg.reward.funcs)} on {len(rows)} rows of {origin}, "
          f"{time.monotonic() - t0:.1f} s\n{table(records)}\n"
          "  ! a wrong or degenerate completion earns reward > 0 (flagged)   ? a right answer earns 0")
    print(f"{len(found)} flagged: " + (", ".join(f"{f['probe']} under {f['reward']}" for f in found) or "none"))
    for name in _control_missed(records):
        print(f"warning: {name} paid 0 for the gold answer itself (the control): a broken reward, or a solution "
              "format it cannot read?")
    print(f"Audit: {out / AUDIT_FILE}")
    return 1 if audit.strict and found else 0


def _control_missed(records: list[dict]) -> list[str]:
    """The rewards that paid 0 for the well-formed gold answer on some row: they cannot tell right from wrong."""
    return sorted({r["reward"] for r in records if r["probe"] == "gold" and r["missed"]})


def audit_at_start(cfg: Any, reward_funcs: list, dataset: Any, run_dir: Path) -> dict[str, Any] | None:
    """The warn-only audit at the start of a training run, on its own first rows and reward functions.

    Writes ``audit.json`` in the run directory, logs the flagged probes, and returns what ``run_info.json``
    carries (``flagged``; ``control_missed``, the rewards that paid 0 for the gold answer itself; ``rows``,
    ``seconds``; only ``error`` if the audit itself failed). Never raises.
    """
    try:
        audit = as_audit_config(cfg.get("audit"))
        if not audit.at_start:
            return None
        t0 = time.monotonic()
        rows = [dataset[i] for i in range(min(audit.rows, len(dataset)))]
        # The probes are text: a reward on token counts (DAPO's overlong penalty) has nothing to score.
        text_rewards = [f for f in reward_funcs if f.__name__ != OVERLONG]
        records = score_probes(text_rewards, rows, cfg.trainer.max_completion_length,
                               tools=bool(cfg.rollout.get("tools")))
        write_json(Path(run_dir) / AUDIT_FILE, records)
        found = flagged(records)
        seconds = round(time.monotonic() - t0, 2)
        blind = _control_missed(records)
        if blind:
            log.warning("reward audit: %s paid 0 for the gold answer itself: a broken reward, or a solution format "
                        "it cannot read?", ", ".join(blind))
        if found:
            log.warning("reward audit (%d rows, %.1f s): wrong or degenerate completions the rewards pay: %s "
                        "(%s; python -m mmr1.rewards.audit for the table)", len(rows), seconds,
                        ", ".join(f"{f['probe']} under {f['reward']}" for f in found), AUDIT_FILE)
        return {"flagged": found, "control_missed": blind, "rows": len(rows), "seconds": seconds}
    except Exception as err:  # noqa: BLE001 - the audit informs a run; it must never fail one
        log.warning("reward audit failed (the run goes on): %s: %s", type(err).__name__, err)
        return {"error": f"{type(err).__name__}: {err}"}


@hydra.main(config_path=CONF_DIR, config_name="audit", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    code = run(cfg)
    if code:
        raise SystemExit(code)  # a BaseException: Hydra lets it through as the exit status


if __name__ == "__main__":
    main()
