"""`fptq-run`: the Hydra application. Composes conf/, validates it, runs one job per config."""

import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fptq.config import register_configs, to_run_spec

log = logging.getLogger("fptq")
register_configs()
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    spec = to_run_spec(cfg)  # fails here, before any work, on a bad value
    from fptq.record import format_table
    from fptq.runner import run

    hc = HydraConfig.get()
    out_dir = hc.runtime.output_dir
    config = OmegaConf.to_container(cfg, resolve=True)
    overrides = " ".join(hc.overrides.task)
    log.info("run %s/%s -> %s", spec.model.name, spec.quant.name, out_dir)
    result = run(spec, out_dir, config, overrides)
    table = format_table(result)
    print("\n" + table + "\n", flush=True)
    log.info("result: %s (store: %s)", os.path.join(out_dir, "result.json"), spec.paths.results_dir)


if __name__ == "__main__":
    main()
