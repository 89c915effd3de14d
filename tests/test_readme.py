"""The README's promises that CI relies on (.ci/run names this file)."""

from __future__ import annotations

from testkit import REPO


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text().split("\n")
    blocks = [readme[i + 1] for i, line in enumerate(readme[:12]) if line.startswith("```bash")]
    assert blocks[:2] == ["pip install -e . && python -m mmr1.train",
                          "pip install -e '.[dev]' && ruff check . && mypy && python -m pytest"]
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ci[-1] == blocks[1]
