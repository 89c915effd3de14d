"""conf/algorithm/: the seed's GRPO, DAPO, Dr. GRPO and GSPO as one choice each, with their papers' values, refused
when they do not fit together. Each trains 2 steps in the stored algorithm sweep (tests/sweep/test_sweep_cli.py)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from trl import GRPOConfig
from trl.rewards import get_soft_overlong_punishment

from mmr1.config import CONF_DIR
from mmr1.config.grpo_args import LOSS_TYPES, AlgorithmError, build_grpo_kwargs, check_algorithm
from mmr1.rewards import RewardConfigError, build_reward_funcs
from mmr1.rewards.overlong import NAME as OVERLONG
from testkit import EXPERIMENTS, compose_cfg

# What each file sets, as GRPOConfig receives it (the papers' values; the files cite section and equation).
EXPECTED = {
    "grpo_seed": {"loss_type": "bnpo", "epsilon": 0.2, "scale_rewards": "group", "beta": 0.001},
    "dapo": {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0,
             "mask_truncated_completions": False},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
    "gspo": {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4,
             "beta": 0.0},
}
# What they set outside GRPOConfig: mmr1's dynamic sampling and DAPO's overlong penalty.
EXPECTED_MMR1 = {"dapo": {"trainer.dynamic_sampling": True, "reward.overlong_cache": 0.2}}
ALGORITHM_KEYS = ("loss_type", "epsilon", "epsilon_high", "delta", "beta", "scale_rewards",
                  "importance_sampling_level", "top_entropy_quantile", "dynamic_sampling")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_sets_exactly_its_papers_values(name, tmp_path):
    base = build_grpo_kwargs(compose_cfg(["+experiment=tiny_count"]), tmp_path)
    cfg = compose_cfg(["+experiment=tiny_count", f"algorithm={name}"])
    args = build_grpo_kwargs(cfg, tmp_path)
    assert {k: args.get(k) for k in EXPECTED[name]} == EXPECTED[name]
    # Nothing else of GRPOConfig moves: an algorithm is a delta.
    assert {k for k in args.keys() | base.keys() if args.get(k) != base.get(k)} <= set(EXPECTED[name])
    assert cfg.trainer.algorithm == name
    for key, value in EXPECTED_MMR1.get(name, {}).items():
        assert OmegaConf.select(cfg, key) == value
    GRPOConfig(**{**args, "use_cpu": True})  # TRL takes the file's values as they are


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_seed_experiments_default_to_the_seeds_grpo_and_switch_with_one_word(experiment, tmp_path):
    args = build_grpo_kwargs(compose_cfg([f"+experiment={experiment}"]), tmp_path)
    assert {k: args[k] for k in EXPECTED["grpo_seed"]} == EXPECTED["grpo_seed"]
    assert not {"epsilon_high", "delta", "importance_sampling_level", "top_entropy_quantile"} & args.keys()
    dapo = build_grpo_kwargs(compose_cfg([f"+experiment={experiment}", "algorithm=dapo"]), tmp_path)
    assert {k: dapo[k] for k in EXPECTED["dapo"]} == EXPECTED["dapo"]  # the recipe does not override the choice


def test_no_recipe_experiment_or_preset_sets_what_an_algorithm_owns():
    """An algorithm merges before the experiment: a value the experiment set too would silently win over it."""
    from pathlib import Path

    offenders = []
    for group in ("recipe", "experiment", "preset"):
        for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
            trainer = (OmegaConf.to_container(OmegaConf.load(path)).get("trainer") or {})
            offenders += [f"{group}/{path.name}: trainer.{k}" for k in ALGORITHM_KEYS if k in trainer]
    assert not offenders


def test_trl_knows_every_loss_type_mmr1_accepts():
    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    assert all(f"'{loss}'" in help_text for loss in LOSS_TYPES)


@pytest.mark.parametrize(("overrides", "culprits"), [
    (["algorithm=gspo", "trainer.loss_type=dapo"], ["importance_sampling_level=sequence", "loss_type='dapo'"]),
    (["trainer.loss_type=sapo", "trainer.epsilon_high=0.28"], ["epsilon_high=0.28", "loss_type='sapo'"]),
    (["trainer.delta=1.1", "trainer.epsilon=0.2"], ["delta=1.1", "1.2"]),
    (["trainer.loss_type=dapo", "trainer.epsilon_high=0.1"], ["epsilon_high=0.1", "epsilon=0.2"]),
    (["trainer.loss_type=luspo"], ["loss_type=luspo", "importance_sampling_level=sequence"]),
    (["trainer.loss_type=ppo"], ["loss_type='ppo'"]),
    (["trainer.top_entropy_quantile=1.5"], ["top_entropy_quantile=1.5"]),
])
def test_incoherent_combinations_are_refused_naming_the_keys(overrides, culprits, tmp_path):
    with pytest.raises(AlgorithmError) as err:
        build_grpo_kwargs(compose_cfg(overrides), tmp_path)
    assert all(c in str(err.value) for c in culprits), str(err.value)


def test_delta_with_a_loss_that_clips_is_accepted():
    check_algorithm({"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "delta": 1.5, "scale_rewards": "group"})


def test_dapos_overlong_penalty_is_trls_sized_from_the_run(tmp_path):
    cfg = compose_cfg(["algorithm=dapo", "trainer.max_completion_length=20", "reward.weights=[1.0,0.5]"])
    funcs = build_reward_funcs(cfg.reward, tmp_path, max_completion_length=cfg.trainer.max_completion_length)
    assert [f.__name__ for f in funcs] == ["external_r1v_acc", "format", OVERLONG]
    ids = [[1] * n for n in (10, 16, 18, 20, 25)]
    completions = [[{"role": "assistant", "content": "x"}]] * len(ids)
    # 20% of 20 tokens: the last 4 are the soft punish cache (TRL's function, the paper's eq. 13).
    assert funcs[-1](completions=completions, completion_ids=ids) == get_soft_overlong_punishment(20, 4)(ids)
    assert funcs[-1](completions=completions, completion_ids=ids) == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert build_grpo_kwargs(cfg, tmp_path)["reward_weights"] == [1.0, 0.5, 1.0]  # the penalty weighs 1
    # Text-only scorers (audit probes, evaluation) get no token-count reward; naming it in funcs is refused.
    assert OVERLONG not in [f.__name__ for f in build_reward_funcs(cfg.reward, tmp_path)]
    with pytest.raises(RewardConfigError, match="reward.overlong_cache"):
        build_reward_funcs(compose_cfg([f"reward.funcs=[format,{OVERLONG}]"]).reward, tmp_path)
