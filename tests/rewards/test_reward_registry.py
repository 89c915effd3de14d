"""Registry, name resolution, plugin files and config validation: bad configs fail at startup, naming it."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mmr1.rewards import RewardConfig, RewardConfigError, build_reward_funcs, get, names, register
from mmr1.rewards.config import OnAllZero, as_reward_config

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(__file__).with_name("fault_plugin.py")


def test_builtins_are_registered():
    assert {"external_r1v_acc", "format"} <= set(names())


def test_duplicate_names_are_refused():
    @register("test_dup_reward", isolate=False)
    def first(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="test_dup_reward"):

        @register("test_dup_reward")
        def second(completions, **kwargs):
            return [1.0] * len(completions)

    assert get("test_dup_reward") is first


def test_dotted_paths_resolve():
    assert get("mmr1.rewards.accuracy:external_r1v_acc") is get("external_r1v_acc")
    assert get("mmr1.rewards.format.format_reward") is get("format")


def test_a_plugin_file_registers_a_reward_used_by_name_from_config():
    funcs = build_reward_funcs(
        {"funcs": ["format", "plugin_len"], "plugins": [str(PLUGIN)], "num_workers": 1}
    )
    try:
        assert [f.__name__ for f in funcs] == ["format", "plugin_len"]
        assert funcs[1](completions=["x" * 50, [{"role": "assistant", "content": "y" * 200}]]) == [0.5, 2.0]
    finally:
        funcs[0].close()
        funcs[1].close()


def test_unknown_reward_fails_at_startup_naming_it():
    with pytest.raises(RewardConfigError, match=r"'no_such_reward'.*reward\.funcs"):
        build_reward_funcs({"funcs": ["format", "no_such_reward"]})


def test_missing_plugin_file_fails_at_startup_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "plugin.py"
    with pytest.raises(RewardConfigError, match=r"reward\.plugins.*nowhere/plugin\.py"):
        build_reward_funcs({"funcs": ["format"], "plugins": [str(missing)]})


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise ImportError('needs a package that is not installed')\n")
    with pytest.raises(RewardConfigError, match="broken_plugin.py.*not installed"):
        build_reward_funcs({"funcs": ["format"], "plugins": [str(broken)]})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"weights": [1.0]}, "reward.weights"),
        ({"timeout_s": 0}, "reward.timeout_s"),
        ({"num_workers": 0}, "reward.num_workers"),
        ({"on_all_zero": "explode"}, "reward.on_all_zero"),
        ({"funcs": []}, "reward.funcs"),
        ({"funcs": ["format", "format"]}, "reward.funcs"),
        ({"timeuot_s": 3}, "timeuot_s"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, key):
    with pytest.raises(RewardConfigError, match=key.replace(".", r"\.")):
        as_reward_config({"funcs": ["external_r1v_acc", "format"], **override})


def test_typed_and_plain_configs_are_accepted():
    typed = OmegaConf.merge(OmegaConf.structured(RewardConfig), {"on_all_zero": "stop", "weights": [1, 0.5]})
    cfg = as_reward_config(typed)
    assert cfg.on_all_zero is OnAllZero.stop and cfg.weights == [1.0, 0.5]
    assert as_reward_config(RewardConfig()) == RewardConfig()
