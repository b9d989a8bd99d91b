"""Evaluation: perplexity (GPTQ protocol)."""
