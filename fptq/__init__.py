"""fptq: W4A8 post-training quantization of LLMs (FPTQ, arXiv 2308.15987) and baselines."""

__version__ = "0.1.0"
