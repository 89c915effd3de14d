"""The sweep's per-point duties, in process (no training): the report rewritten after every point (not only
at the multirun's end), secrets redacted from it, and one wandb group per sweep."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf
from test_sweep_report import make_run, metric_rows, write_multirun

from mmr1.sweep.callback import SweepReport
from mmr1.tracking import wandb_run
from mmr1.tracking.secrets import REDACTED

SECRET = "sk-test-0123456789abcdef"


def _job_config(sweep: Path, point: Path):
    from hydra.types import RunMode

    return OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)},
                                       "runtime": {"output_dir": str(point)}}})


def test_the_report_is_rewritten_after_every_point_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    sweep = tmp_path / "sweep"
    write_multirun(sweep, ["trainer.max_steps=3", "trainer.beta=0,0.04"])
    cb = SweepReport(plots=False)
    done = []
    for i, beta in enumerate(["0", "0.04"]):
        name = f"{i}_beta={beta}"
        # A secret in an override and in an error message: what a user might paste on a command line.
        point = make_run(sweep, name, ["trainer.max_steps=3", f"trainer.beta={beta}", f"+logger.api_key={SECRET}"],
                         metric_rows([0.2, 0.4, 0.6]),
                         {"status": "failed" if i else "finished", "steps": 3, "error": f"token {SECRET} refused"})
        cb.on_job_end(_job_config(sweep, point), job_return=None)
        done.append(name)
        md = (sweep / "report.md").read_text()
        assert all(f"| {n} |" in md for n in done) and f"{len(done)} runs" in md  # current after this point
        for f in ("report.md", "report.csv"):
            assert SECRET not in (sweep / f).read_text(), f
    assert f"token {REDACTED} refused" in (sweep / "report.csv").read_text()  # the error is shown, masked


def test_one_wandb_group_per_sweep_and_one_name_per_point(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep = tmp_path / "multirun" / "2026-12-02" / "01-00-00"
    names = {}
    for point in ("0_beta=0", "1_beta=0.04"):
        hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)},
                               "runtime": {"choices": {"sweep": "beta"}}})
        monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda hc=hc: hc))
        names[point] = wandb_run.sweep_group_and_name(sweep / point)
    assert names == {"0_beta=0": ("beta-01-00-00", "0_beta=0"), "1_beta=0.04": ("beta-01-00-00", "1_beta=0.04")}
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))
    assert wandb_run.sweep_group_and_name(sweep / "x") == (None, None)  # a single run: no group
    json.dumps(names)  # plain strings, as wandb.init wants them
