"""Who generates the completions, and what they may hold: the vLLM engine settings, the vision-token ban."""
