"""The one door to library internals: every private name of TRL, transformers, torch and vLLM that mmr1 touches.

Everything else in mmr1 uses the libraries' public API; what they do not offer is reached here and only here
(``tests/test_internals.py`` fails on a private access anywhere else). Each access names the upstream file it
relies on (TRL 1.16, transformers 5.x, torch 2.13-2.14, vLLM 0.31) and is pinned by a test of its *behaviour*
in ``tests/test_internals.py``: when an upgrade moves or fixes what an access relies on, that test fails and
says which accessor to rewrite, instead of a run that silently trains on something else.

Three kinds of access:

- ``GRPOHooks``: TRL's ``GRPOTrainer`` with the private rollout steps mmr1 changes routed to named hooks
  (``generate_turn``, ``completions_made``, ``score``, ``generate_and_score``, ``tokenize``, ``logps_context``) and
  its private state behind properties; mmr1's trainer (``mmr1.trainer.grpo``) subclasses it and overrides only public
  names.
- Functions on a built trainer: the generation-cycle state a resume restores, the checkpoint save/load hooks,
  the callback order, arguments changed after construction, TRL's sampler, torch's scheduler.
- TRL's vLLM integration: the colocate engine's constructor, the weight-sync iterator and whether it merges LoRA.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from trl import GRPOTrainer

# trl/chat_template_utils.py: TRL's reading of a generated turn (tool calls parsed, a malformed one kept as text) and
# its response template for Qwen's tool-call format; mmr1.rollout.tools reads turns outside GRPO the same way.
from trl.chat_template_utils import parse_response  # noqa: F401 - re-exported

# trl/trainer/utils.py: helpers TRL does not export from its top level. Re-exported here so that a move upstream
# breaks one import, not several (mmr1.trainer.dynamic_sampling uses them on TRL's own batch layout).
from trl.trainer.utils import (  # noqa: F401 - re-exported
    RepeatSampler,
    nanstd,
    split_pixel_values_by_grid,
    unsplit_pixel_values_by_grid,
)


def qwen_response_template() -> dict[str, Any]:
    """A copy of TRL's response template for Qwen's ``<tool_call>`` format (``qwen3_template``)."""
    import copy

    from trl.chat_template_utils import qwen3_template

    return copy.deepcopy(qwen3_template)


# --- GRPOTrainer -----------------------------------------------------------------------------------------------


class GRPOHooks(GRPOTrainer):
    """TRL's GRPOTrainer, unchanged, with its private rollout steps routed to overridable hooks.

    Each override keeps TRL 1.16's exact signature (trl/trainer/grpo_trainer.py; tests/test_internals.py compares
    them with the installed TRL) and, through the default hooks, TRL's exact behaviour.
    """

    # -- hooks a subclass overrides (defaults: TRL's behaviour) --

    def generate_turn(self, generate: Callable[[], tuple[list, list | None]],
                      prompt_ids: list[list[int]]) -> tuple[list, list | None]:
        """One generation call: ``generate()`` runs TRL's and returns ``(completion_ids, logprobs)``."""
        return generate()

    def score(self, calculate: Callable[[], torch.Tensor], inputs: list[dict]) -> torch.Tensor:
        """The rewards of a batch, gathered from every rank: ``calculate()`` runs TRL's ``_calculate_rewards``."""
        return calculate()

    def completions_made(self, completions: list) -> None:
        """A batch's completions as TRL parsed them (messages: several turns with tools), just before scoring."""

    def generate_and_score(self, run: Callable[[list], dict[str, Any]], inputs: list) -> dict[str, Any]:
        """One generation round (``_prepare_inputs`` calls it once per round): ``run(rows)`` is TRL's whole
        generate-score-advantage step for ``rows``, callable again for refill rows."""
        return run(inputs)

    def tokenize(self, tokenize: Callable[[], tuple], prompts: list) -> tuple:
        """The generation prompts' ids, images and multimodal fields: ``tokenize()`` runs TRL's."""
        return tokenize()

    def logps_context(self, model: Any) -> contextlib.AbstractContextManager:
        """Entered around each of TRL's log-prob computations (old, reference, the loss's) on ``model``."""
        return contextlib.nullcontext()

    # -- TRL's private methods, routed to the hooks --

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        def generate() -> tuple[list, list | None]:
            return super(GRPOHooks, self)._generate_single_turn(prompt_ids, images, multimodal_fields,
                                                                 num_generations, has_tool_images)

        return self.generate_turn(generate, prompt_ids)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        def calculate() -> torch.Tensor:
            return super(GRPOHooks, self)._calculate_rewards(inputs, prompts, completions, completion_ids_list)

        self.completions_made(completions)
        return self.score(calculate, inputs)

    def _generate_and_score_completions(self, inputs):
        return self.generate_and_score(super()._generate_and_score_completions, inputs)

    def _tokenize_prompts(self, prompts):
        return self.tokenize(lambda: super(GRPOHooks, self)._tokenize_prompts(prompts), prompts)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, pixel_values=None,
                                           image_grid_thw=None, num_images=None, pixel_attention_mask=None,
                                           spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None,
                                           mm_token_type_ids=None, image_position_ids=None):
        with self.logps_context(model):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss,
                pixel_values, image_grid_thw, num_images, pixel_attention_mask, spatial_shapes, num_tiles,
                image_sizes, token_type_ids, mm_token_type_ids, image_position_ids)

    @property
    def chat_template_override(self) -> Any:
        """The chat template TRL renders prompts with (``self.chat_template``; None: the processor's)."""
        return getattr(self, "chat_template", None)

    # -- private state, by name --

    @property
    def micro_step(self) -> int:
        """TRL's micro-step counter (``self._step``): generation happens when it is a multiple of
        ``steps_per_generation * num_iterations``; Trainer's resume does not restore it (TRL PR 3148)."""
        return int(self._step)

    @property
    def text_tokenizer(self) -> Any:
        """The processor's tokenizer TRL decodes with (``self._tokenizer``)."""
        return self._tokenizer

    def log_metric(self, mode: str, key: str, value: float) -> None:
        """Add a value to TRL's per-step metric lists (``self._metrics``): averaged and logged with TRL's own."""
        self._metrics[mode][key].append(value)

    def logged_prompts(self) -> list | None:
        """The prompts TRL has buffered for ``log_completions`` (``self._logs["prompt"]``), mutable in place."""
        return getattr(self, "_logs", {}).get("prompt")

    def logged_completions(self) -> list | None:
        """The completions TRL has buffered for ``log_completions`` (``self._logs["completion"]``), mutable."""
        return getattr(self, "_logs", {}).get("completion")


# --- TRL's generation cycle, on a built trainer (a resume restores it) --------------------------------------------

def generation_state(trainer: Any) -> tuple[int, Any] | None:
    """``(micro_step, buffered_inputs)`` of a GRPOTrainer (trl/trainer/grpo_trainer.py ``_step``,
    ``_buffered_inputs``); None for a trainer without TRL's generation cycle."""
    if not hasattr(trainer, "_step"):
        return None
    return int(trainer._step), getattr(trainer, "_buffered_inputs", None)


def set_generation_state(trainer: Any, micro_step: int, buffered_inputs: Any) -> None:
    """Put TRL's cycle where a straight run had it: the next micro-step generates iff ``micro_step`` is a multiple
    of ``steps_per_generation * num_iterations``, else it trains on ``buffered_inputs``."""
    trainer._step = int(micro_step)
    trainer._buffered_inputs = buffered_inputs


def resync_vllm(trainer: Any) -> None:
    """Make the next generation push the weights to vLLM first (``_last_loaded_step``, compared with the global
    step in ``_generate``): after a resume the engine still holds the weights it started with."""
    if hasattr(trainer, "_last_loaded_step"):
        trainer._last_loaded_step = -1


# --- Trainer's checkpoint save and load (transformers/trainer.py) --------------------------------------------------

def wrap_checkpoint_save(trainer: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Route ``Trainer._save_checkpoint`` (every periodic save, and the interrupt's) through ``wrap(original)``;
    a second call on the same trainer does nothing."""
    if getattr(trainer, "_mmr1_wrapped_save", False):
        return
    trainer._save_checkpoint = wrap(trainer._save_checkpoint)
    trainer._mmr1_wrapped_save = True


def wrap_checkpoint_load(trainer: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Route ``Trainer._load_from_checkpoint(resume_from_checkpoint, model=None)`` (the weights of a resume)
    through ``wrap(original)``."""
    trainer._load_from_checkpoint = wrap(trainer._load_from_checkpoint)


def load_checkpoint_weights(trainer: Any, checkpoint: str) -> None:
    """Load a checkpoint's weights into the live model as a resume would (``Trainer._load_from_checkpoint``,
    with any loader installed by ``wrap_checkpoint_load``)."""
    trainer._load_from_checkpoint(checkpoint)


def insert_callbacks(trainer: Any, before: Any, *callbacks: Any) -> None:
    """Insert callbacks just before ``before`` (or last): ``Trainer.add_callback`` only appends, and the order
    matters (a rollback's state must be restored before the metrics callback logs the step)."""
    cbs = trainer.callback_handler.callbacks
    i = cbs.index(before) if before in cbs else len(cbs)
    cbs[i:i] = callbacks


def set_args(trainer: Any, **values: Any) -> None:
    """Change TrainingArguments after the Trainer was built. Only for fields the Trainer reads again at ``train()``
    time: ``seed`` (the sampler of ``get_train_dataloader``), ``save_total_limit`` (``_rotate_checkpoints``)."""
    for name, value in values.items():
        if name not in ("seed", "save_total_limit"):
            raise ValueError(f"{name} is read when the Trainer is built: changing it afterwards does nothing")
        setattr(trainer.args, name, value)


def rewrap_for_deepspeed(trainer: Any) -> None:
    """Before a second ``train()`` under DeepSpeed: accelerate's ``free_memory()`` destroyed the engine, and
    Trainer, finding ``model_wrapped`` still wrapped, would skip ``accelerator.prepare`` (no new engine:
    "'NoneType' object has no attribute 'backward'"). The bare module gets a fresh engine."""
    if trainer.is_deepspeed_enabled and trainer.model_wrapped is not trainer.model:
        trainer.model_wrapped = trainer.model


def repeat_sampler(dataloader: Any) -> RepeatSampler | None:
    """TRL's ``RepeatSampler`` inside a (possibly accelerate-wrapped) training dataloader, or None."""
    seen = 0
    stack = [dataloader]
    while stack and seen < 16:
        obj = stack.pop()
        seen += 1
        if isinstance(obj, RepeatSampler):
            return obj
        stack.extend(x for x in (getattr(obj, a, None) for a in ("batch_sampler", "sampler", "base_dataloader"))
                     if x is not None)
    return None


def scale_logged_lr(lr_scheduler: Any, factor: float) -> None:
    """Scale the lr a scheduler reports until its next step: Trainer logs ``get_last_lr()``, which returns the
    private ``_last_lr`` (torch/optim/lr_scheduler.py); torch has no setter (pytorch#104361)."""
    if getattr(lr_scheduler, "_last_lr", None):
        lr_scheduler._last_lr = [lr * factor for lr in lr_scheduler._last_lr]


# --- TRL's vLLM integration (trl/generation/vllm_generation.py) ----------------------------------------------------

@contextlib.contextmanager
def colocate_llm_factory(make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """While the trainer is built, TRL constructs its colocate engine through ``make(vllm.LLM)``
    (``VLLMGeneration`` calls the module's ``LLM`` name); restored afterwards."""
    from trl.generation import vllm_generation as trl_vllm

    if not hasattr(trl_vllm, "LLM"):
        raise RuntimeError("trl.generation.vllm_generation has no LLM: this TRL builds its colocate engine "
                           "elsewhere; mmr1.internals.colocate_llm_factory needs updating")
    real = trl_vllm.LLM
    trl_vllm.LLM = make(real)
    try:
        yield
    finally:
        trl_vllm.LLM = real


def vllm_weights(generation: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights TRL pushes to vLLM, under vLLM's names (``VLLMGeneration._iter_named_params``: the DeepSpeed
    gather, the LoRA merge and unmerge, the name fixes). A collective: every rank must iterate."""
    return generation._iter_named_params()


def replace_vllm_sync(generation: Any, sync: Callable[[Callable[[], None]], None]) -> None:
    """Route ``VLLMGeneration.sync_weights`` (called by TRL before each generation with new weights) through
    ``sync(trl_sync)``."""
    for name in ("_iter_named_params", "llm", "sync_weights"):
        if not hasattr(generation, name):
            raise RuntimeError(f"TRL's VLLMGeneration has no {name}: mmr1.internals.replace_vllm_sync needs updating")
    trl_sync = generation.sync_weights
    generation.sync_weights = lambda: sync(trl_sync)


@functools.cache
def vllm_sync_merges_lora() -> bool:
    """Does the installed TRL merge peft adapters into the base weights when it syncs them to vLLM? Found by running
    its sync iterator on a one-layer peft model whose adapter is non-zero: the weight it yields must be the base
    weight plus the adapter's delta, under the base layer's name, and the adapter must be unmerged afterwards. A TRL
    that streamed the bare base weights would have every vLLM rollout ignore the training."""
    import peft
    from trl.generation.vllm_generation import VLLMGeneration

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False))
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=2, target_modules=["0"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layer: Any = base[0]  # now peft's LoRA Linear
    merged = (layer.weight + layer.get_delta_weight("default")).detach()
    assert not torch.allclose(merged, layer.weight), "the probe's adapter must change the weight"

    class _Dist:  # DistributedBackend on one process, no FSDP or DeepSpeed: gathering is a no-op
        is_fsdp = False
        fsdp_version = None

        @staticmethod
        def gather_params(params: Any) -> contextlib.AbstractContextManager:
            return contextlib.nullcontext()

    gen: Any = VLLMGeneration.__new__(VLLMGeneration)
    gen.model, gen._dist = model, _Dist()
    try:
        sent = {name: t.clone() for name, t in gen._iter_named_params()}
    except Exception:  # noqa: BLE001 - an iterator that needs more of TRL's state is a TRL this check cannot read
        return False
    weight = sent.get("0.weight")
    # Unmerging subtracts the delta again: equal up to float rounding, not bit for bit.
    unmerged = all(torch.allclose(p, before[n]) for n, p in model.named_parameters())
    return weight is not None and torch.allclose(weight, merged) and unmerged and len(sent) == 1
