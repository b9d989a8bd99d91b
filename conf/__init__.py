"""fptq's Hydra configs. Installed as the package `fptq.conf` (pyproject's package-dir mapping), which fptq-run searches as pkg://fptq.conf; Hydra needs this file to accept the package."""
