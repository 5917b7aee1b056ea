"""Fine-tuning tasks (VQA, GQA, NLVR2): data, heads, losses, metrics and submission files."""
