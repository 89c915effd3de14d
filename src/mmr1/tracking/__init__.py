"""What a run leaves behind and who writes it: the run directory and run_info.json, metrics.jsonl, curves.png,
the end-of-run summary, wandb, redacted configs and logs, which rank writes."""
