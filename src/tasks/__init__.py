"""Fine-tuning tasks (VQA, GQA, NLVR2, SNLI-VE, ...): data, heads, losses, metrics and submission files."""
