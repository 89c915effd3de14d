"""``python tests/rollout/train_without_sync.py OVERRIDES``: ``mmr1.train`` with vLLM's weight sync disabled.

The control of the log-prob agreement test: vLLM keeps sampling from the weights it started with while the trainer
moves on. Not collected by pytest (no ``test_`` prefix)."""

import mmr1.rollout.colocate as engine


def _no_sync(trainer, on_cpu):
    trainer.vllm_generation.sync_weights = lambda: None


engine.sync_colocate_weights = _no_sync

if __name__ == "__main__":
    from mmr1.train import main

    main()
