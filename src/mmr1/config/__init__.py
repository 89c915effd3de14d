"""Compose and validate: the typed schema (``schema.py``, the domain schemas gathered), the one validation idiom
(``typed.py``), the mapping to TRL's GRPOConfig (``grpo_args.py``), the rehearsal's swaps (``rehearsal.py``) and
the dry run's checks of what a real run would fail on later (``checks.py``).

Nothing is imported here: the domain schemas (``data/config.py``, ...) import ``mmr1.config.typed``, and the
schema imports them.
"""

from pathlib import Path

# The configs ship inside the package (Hydra's app-packaging pattern), so a wheel runs as the repo does;
# the repository's top-level `conf` is a link to this folder.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
