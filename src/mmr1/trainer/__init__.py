"""The trainer step of a run: TRL's GRPOTrainer with mmr1's hooks (``grpo.py``), dynamic sampling
(``dynamic_sampling.py``), the steps ``mmr1.train`` calls in order (``setup.py`` without torch, ``steps.py``
with it) and the run loop around ``trainer.train`` (``loop.py``: resume, the guard's rollbacks, Ctrl-C).

Nothing is imported here: ``setup`` is imported by the entry point, which loads no torch or TRL.
"""
