"""``python -m mmr1.sweep.report <sweep_dir> [...]``: (re)write a sweep's report.md, report.csv and overlay PNGs.

For sweeps run elsewhere or still running; a finished ``--multirun`` writes the same files itself
(``mmr1.sweep.callback.SweepReport``). A run directory instead of a sweep directory gives a one-row report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmr1.sweep.table import render_markdown, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmr1.sweep.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep directories (or single run directories)")
    parser.add_argument("--no-plots", action="store_true", help="table only (faster on huge sweeps)")
    args = parser.parse_args(argv)
    status = 0
    for d in args.sweep_dirs:
        try:
            rows = write_report(d, plots=not args.no_plots)
        except FileNotFoundError as err:
            print(f"mmr1.sweep.report: {err}", file=sys.stderr)
            status = 2
            continue
        # The table on stdout as well: the quickest look at a remote sweep.
        print(render_markdown(rows, d, []).rstrip())
        print(f"\nwrote {d / 'report.md'}, {d / 'report.csv'}" + ("" if args.no_plots else " and overlay PNGs"))
    return status


if __name__ == "__main__":
    sys.exit(main())
