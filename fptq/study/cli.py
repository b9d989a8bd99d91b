"""`fptq-run`: the Hydra application. Composes conf/, validates it, runs one job per config."""

import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fptq.study.config import register_configs, to_run_spec

log = logging.getLogger("fptq")
register_configs()


def conf_dir() -> str:
    """The Hydra configs: the package's own `fptq.conf` in an installed wheel (Hydra's pkg://
    search path), else the source tree's conf/ (editable install, plain checkout)."""
    here = Path(__file__).resolve().parents[1]  # the fptq package
    if (here / "conf" / "config.yaml").is_file() and importlib.util.find_spec("fptq.conf") is not None:
        return "pkg://fptq.conf"
    for d in (here / "conf", here.parent / "conf"):
        if (d / "config.yaml").is_file():
            return str(d)
    raise FileNotFoundError(
        f"fptq's Hydra configs are missing (looked in {here / 'conf'} and {here.parent / 'conf'})"
    )


CONF_DIR = conf_dir()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    try:
        spec = to_run_spec(cfg)  # fails here, before any work, on a bad value
    except ValueError as e:
        _user_error(e, hc)
    from fptq.files import DataError
    from fptq.models.checkpoint import CheckpointError
    from fptq.study.preflight import PreflightError
    from fptq.study.record import format_table
    from fptq.study.runner import run
    from fptq.study.store import StoreError

    out_dir = hc.runtime.output_dir
    config = OmegaConf.to_container(cfg, resolve=True)
    overrides = " ".join(hc.overrides.task)
    log.info("run %s/%s -> %s", spec.model.name, spec.quant.name, out_dir)
    try:
        result = run(spec, out_dir, config, overrides)
    except (
        PreflightError,
        CheckpointError,
        DataError,
        StoreError,
        FileExistsError,
    ) as e:  # FileExistsError: save.dir
        _user_error(e, hc)
    if result.get("skipped"):
        _drop_run_folder(out_dir)  # the job did not run: no folder that looks like a run
        result = _recorded_result(result["row"])
        if result is None:
            return
    table = format_table(result)
    print("\n" + table + "\n", flush=True)
    log.info(
        "result: %s (store: %s, job %s)",
        os.path.join(result["output_dir"], "result.json"),
        spec.paths.results_dir,
        result.get("job_key"),
    )


def _recorded_result(row) -> Optional[dict]:
    """A skipped job's result document (its run folder's result.json), to print its table again."""
    f = Path(str(row.get("output_dir"))) / "result.json"
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        log.info("(the run folder of that row, %s, is gone: see its row in the store)", f.parent)
        return None


def _user_error(e: Exception, hc) -> None:
    """A problem with the user's input, not a bug: the message without a traceback (exit 2). In a
    sweep, re-raised: the launcher records the job as failed and runs the others (its folder and
    log stay, as the sweep's record of the failure)."""
    if hc.mode == RunMode.MULTIRUN:
        raise e
    log.error("%s", e)
    _drop_run_folder(hc.runtime.output_dir)
    sys.exit(2)


RUN_FOLDER_CLUTTER = {".hydra", "cli.log", "fptq-run.log"}  # what Hydra writes before the job runs


def _drop_run_folder(out_dir: str) -> None:
    """Remove a run folder that holds only what Hydra wrote when the job started (its config copy
    and log), and the empty folders above it under outputs/: a skipped job or a refused config
    leaves no folder behind. A folder with anything else in it is kept."""
    import shutil

    folder = Path(out_dir)
    try:
        if not folder.is_dir() or any(p.name not in RUN_FOLDER_CLUTTER for p in folder.iterdir()):
            return
        shutil.rmtree(folder)
        if "outputs" not in folder.parts[:-1]:
            return  # a folder the user named: its parents are theirs
        for parent in folder.parents:  # outputs/<experiment>/<model>/<scheme>/<stamp>
            if any(parent.iterdir()):
                break
            parent.rmdir()
            if parent.name == "outputs":
                break
    except OSError:
        pass


if __name__ == "__main__":
    main()
