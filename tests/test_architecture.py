"""The layering the README's Architecture section states: a package imports only those below it.

A rank per top-level module or package of mmr1; an import of a higher (or equal, other) rank fails here,
and so does a new module without a rank (give it one, and a line in the README's table).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmr1

RANK = {
    "config.typed": 0, "data.prompts": 0, "tracking": 1, "tracking.run_dir": 2,
    # The one door to library internals imports libraries only.
    "internals": 1.5,
    # The typed schemas of the domain packages sit low: the spine's schema (config/) gathers them.
    "data.config": 2.5, "rewards.config": 2.5, "reliability.config": 2.5,
    "data": 3, "rewards": 3, "models": 4,
    "config": 5, "trainer": 5.5, "trainer.dynamic_sampling": 5.5, "rollout": 5.8,
    "models.warmstart": 6, "trainer.grpo": 6, "models.policy": 6.5,
    "launch": 7, "reliability": 8, "trainer.loop": 8.5,
    "sweep": 9, "config.rehearsal": 9, "config.checks": 9,
    "launch.dry_run": 9.5, "trainer.setup": 9.5, "trainer.steps": 9.6,
    "train": 10, "evaluate": 10, "sweep.report": 10,
}
# Command-line entry points sit on top, whatever folder they live in (they compose configs and build data);
# what else uses their logic imports it from the layer it belongs to (rewards/audit.py: rewards/probes.py).
ENTRY_POINTS = {"data/__main__.py", "rewards/audit.py"}


def _unit(dotted: str) -> str:
    """The ranked unit of ``mmr1.<dotted>``: ``pkg.module`` when it has a rank of its own, else ``pkg``."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in RANK else parts[0]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        # `from mmr1.pkg import module` names the module: "pkg.module" is ranked when it has a rank of its own.
        names = [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module \
            else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
        out |= {_unit(n.removeprefix("mmr1.")) for n in names if n.startswith("mmr1.")}
    return out


def test_packages_import_only_lower_layers():
    root = Path(mmr1.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.name == "__init__.py" and len(rel.parts) == 1 or str(rel) in ENTRY_POINTS:
            continue
        own = _unit(".".join(rel.with_suffix("").parts))
        assert own in RANK, f"{rel}: give the module a layer in tests/test_architecture.py and the README"
        for dep in _imports(path) - {own}:
            assert dep in RANK, f"{rel} imports unknown mmr1.{dep}"
            if RANK[dep] >= RANK[own]:
                wrong.append(f"{rel} (layer {RANK[own]}) imports mmr1.{dep} (layer {RANK[dep]})")
    assert not wrong, "\n".join(wrong)
