"""Data tools: download, synthetic data."""
