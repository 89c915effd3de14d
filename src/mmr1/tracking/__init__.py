"""What a run leaves behind: metrics.jsonl, curves.png, redacted configs."""
