"""Forward pre-hooks on the policy, opened around TRL's log-prob forwards (``GRPOHooks.logps_context``): clips fed
to their rows (mmr1.trainer.video), and tool images kept in Qwen2.5-VL's position count (``attend_images``).

Tool images in masked completions: TRL 1.16 zeroes the attention mask of a truncated completion
(``mask_truncated_completions``), tool images included. Qwen2.5-VL's 3-D positions (transformers 5.x
``get_rope_index``) walk the attended tokens of every row with *one* iterator over the batch's image grids: an image
whose tokens are all masked leaves its grid unconsumed, and every later image of the batch takes its neighbour's
grid. With tool images of different sizes the forward then fails ("shape mismatch: value tensor of shape [3, 480]
cannot be broadcast to indexing result of shape [3, 479]", measured at step 10 of tiny_zoom_count), and with equal
sizes it would place them silently wrong. ``attend_images`` attends every image token of a log-prob forward:
positions stay aligned, and a masked completion still adds nothing to the loss (TRL masks the loss with the
completion mask, not the attention mask).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

PreHook = Callable[[torch.nn.Module, tuple, dict], tuple[tuple, dict]]


@contextlib.contextmanager
def forward_pre_hook(model: torch.nn.Module, hook: PreHook) -> Iterator[None]:
    """While open, ``hook(module, args, kwargs)`` runs before each forward of ``model`` and returns its arguments."""
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def attend_images(model: torch.nn.Module, image_token_id: int) -> contextlib.AbstractContextManager:
    """While open, each forward of ``model`` attends its image tokens whatever its attention mask says."""

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        ids, mask = kwargs.get("input_ids", args[0] if args else None), kwargs.get("attention_mask")
        if ids is not None and mask is not None:
            image = ids == image_token_id
            if bool((image & (mask == 0)).any()):
                kwargs["attention_mask"] = torch.where(image, torch.ones_like(mask), mask)
        return args, kwargs

    return forward_pre_hook(model, hook)
