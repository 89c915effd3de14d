"""mmr1.tracking.quiet: each filter hides exactly the warning mmr1 causes, nothing next to it."""

from __future__ import annotations

import logging
import warnings

import pytest

from mmr1.tracking import quiet


def _emit(message: str, category: type[Warning], module: str) -> list[str]:
    """Raise ``message`` as if from ``module`` under the filters quiet.install() sets; what gets through."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn_explicit(message, category, filename=f"/site-packages/{module.replace('.', '/')}.py",
                               lineno=1, module=module)
    return [str(w.message) for w in seen]


@pytest.mark.parametrize(("message", "category", "module", "source"), quiet.MMR1_FILTERS)
def test_each_filter_hides_its_exact_warning(message, category, module, source):
    assert source  # every filter names where its warning comes from
    assert _emit(message, category, module) == []


@pytest.mark.parametrize(("message", "category", "module", "source"), quiet.MMR1_FILTERS)
def test_each_filter_lets_its_neighbours_through(message, category, module, source):
    # A longer message, another category, another module: all still shown.
    assert _emit(message + " Also something else.", category, module) != []
    assert _emit(message, UserWarning if category is not UserWarning else DeprecationWarning, module) != []
    assert _emit(message, category, "mmr1.somewhere") != []
    # The other deprecation transformers raises from the same module, and the one mmr1 fixes at its cause.
    assert _emit("`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` "
                 "instead.", FutureWarning, "transformers.training_args") != []
    assert _emit("'pin_memory' argument is set as true but no accelerator is found, then device pinned memory "
                 "won't be used.", UserWarning, "torch.utils.data.dataloader") != []


def test_the_real_trl_call_is_silenced_and_the_property_still_works():
    """The warning as transformers raises it, through the property TRL reads (trl/models/utils.py:136). Older
    transformers (5.17, the floor environment's) had not renamed the property yet, and raise nothing to filter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=32))
    renamed = hasattr(type(model), "is_activation_checkpointing")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert model.is_gradient_checkpointing is False  # unfiltered: it warns where the property was renamed
        assert [w.category for w in seen] == ([FutureWarning] if renamed else [])
        seen.clear()
        quiet.install()
        assert model.is_gradient_checkpointing is False
        assert seen == []


def test_install_twice_adds_each_filter_once():
    with warnings.catch_warnings():
        quiet.install()
        n = len(warnings.filters)
        quiet.install()
        assert len(warnings.filters) == n


def test_other_ranks_keep_warnings_but_not_info():
    logger = logging.getLogger("mmr1")
    level = logger.level
    try:
        quiet._quiet_other_ranks({"RANK": "0"})
        assert logger.level == level
        quiet._quiet_other_ranks({"RANK": "1"})
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(level)


def test_weight_bars_off_restores_the_setting():
    from transformers.utils import logging as hf_logging

    initially = hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.enable_progress_bar()
        with quiet.weight_bars_off():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        with quiet.weight_bars_off():
            pass
        assert not hf_logging.is_progress_bar_enabled()  # left off: the user had turned them off
    finally:
        (hf_logging.enable_progress_bar if initially else hf_logging.disable_progress_bar)()
