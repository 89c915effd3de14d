"""Who generates the completions, and what they may hold: which vLLM is installed and what its engine is given
(``vllm_engine.py``), TRL's colocate engine and its weight sync (``colocate.py``), the vision-token ban."""
