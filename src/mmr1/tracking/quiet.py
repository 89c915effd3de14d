"""Start-up quieting: only the noise mmr1 itself causes, never a warning about the user's setup.

What a default run printed, and where each line is handled:

- transformers ``training_args.py`` "`gradient_checkpointing` is deprecated ... Use
  `activation_checkpointing`": mmr1 passed the old name. Fixed at the cause: ``build_grpo_kwargs``
  passes ``activation_checkpointing`` (and the warm-start's SFTConfig too), so nothing is filtered.
- torch ``utils/data/dataloader.py`` "'pin_memory' argument is set as true but no accelerator is
  found": Trainer's ``dataloader_pin_memory`` defaults to True. Fixed at the cause: mmr1 passes
  ``dataloader_pin_memory=False`` when there is no accelerator.
- torch ``reducer.cpp`` "find_unused_parameters=True was specified in DDP constructor, but did not
  find any unused parameters" (once per rank, a C++ warning no Python filter can reach): TRL 1.16
  ``grpo_trainer.py:389-398`` turns the flag on for every VLM in case of text-only batches. Every
  mmr1 row has an image (``mmr1.data.images`` raises ``BadImage`` "no image"), so mmr1 passes
  ``ddp_find_unused_parameters=False``.
- transformers ``modeling_utils.py:3312`` "`is_gradient_checkpointing` is deprecated ... Use
  `is_activation_checkpointing`": raised at every generation because TRL 1.16 itself reads the old
  property (``trl/models/utils.py:136``, ``_unwrap_model_for_generation``). mmr1 cannot pass a newer
  name, so this one is filtered: ``MMR1_FILTERS`` below, exact text, category and module.
- "Run directory: ..." once per rank: printed once, by the process that speaks for the run
  (``mmr1.tracking.summary.print_ending``); the other ranks' INFO lines are raised to WARNING here.
- transformers' "Writing model shards" bar at every checkpoint breaks the training bar into a second
  copy: ``weight_bars_off`` around training (no download happens there, so no download bar is lost).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator, Mapping

from mmr1.tracking.ranks import is_main_process

# (exact message, category, module the warning is attributed to, where it comes from). Matched whole
# (re.escape + \Z), so a reworded or different warning from the same place still shows.
MMR1_FILTERS: list[tuple[str, type[Warning], str, str]] = [
    (
        "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` "
        "instead.",
        FutureWarning,
        "transformers.modeling_utils",
        # transformers 5.24 modeling_utils.py:3312 (PreTrainedModel.is_gradient_checkpointing), read by TRL 1.16
        # trl/models/utils.py:136 (_unwrap_model_for_generation) before every rollout; remove once TRL reads
        # is_activation_checkpointing.
        "TRL 1.16 trl/models/utils.py:136 reads PreTrainedModel.is_gradient_checkpointing",
    ),
]


def install() -> None:
    """Call once at start-up, in every process (each rank runs it too). Idempotent."""
    for message, category, module, _source in MMR1_FILTERS:
        warnings.filterwarnings("ignore", message=re.escape(message) + r"\Z", category=category,
                                module=re.escape(module) + r"\Z")
    _quiet_other_ranks()


def _quiet_other_ranks(env: Mapping[str, str] | None = None) -> None:
    """In a multi-process run, rank 0 alone logs mmr1's INFO lines; the others keep warnings and errors."""
    if not is_main_process(env):
        logging.getLogger("mmr1").setLevel(logging.WARNING)


@contextlib.contextmanager
def weight_bars_off() -> Iterator[None]:
    """transformers' own progress bars (its ``logging.tqdm``: "Writing model shards" at each checkpoint,
    "Loading weights" at a rollback) off inside the block, as they were after it. mmr1's training bar is
    plain tqdm and unaffected. This also silences huggingface_hub's download bars, so keep downloads
    (model loading from the hub) outside the block."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
