"""Evaluation on fixed benchmarks under their authors' protocols (``eval.benchmark=NAME``): the test files, the
authors' answer extraction, the generation backends, the published baselines beside a run's score.

``python -m mmr1.evaluate`` (mmr1/evaluate.py) is the entry point; the benchmarks are conf/eval/benchmark/*.yaml.
"""
