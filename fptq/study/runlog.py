"""Run loggers: W&B (online / offline / disabled) or none. The local results store is always
written by the runner; a W&B failure is a warning, never a lost result."""

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

LOGGERS = ("wandb", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass(frozen=True)
class LoggerSpec:
    name: str = "none"  # wandb | none
    mode: str = "auto"  # auto: online when an API key is configured, else offline
    project: str = "fptq"
    entity: Optional[str] = None
    dir: Optional[str] = None  # where offline runs go (default: the run's output folder)

    def __post_init__(self):
        if self.name not in LOGGERS:
            raise ValueError(f"logger.name must be one of {LOGGERS}, got {self.name!r}")
        if self.mode not in WANDB_MODES:
            raise ValueError(f"logger.mode must be one of {WANDB_MODES}, got {self.mode!r}")


class NullLogger:
    def log(self, metrics: Dict[str, Any]) -> None:
        pass

    def log_table(self, key: str, rows: List[Dict[str, Any]]) -> None:
        pass

    def finish(self) -> None:
        pass


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


class WandbLogger:
    def __init__(self, spec: LoggerSpec, config: Dict[str, Any], group: str, name: str, out_dir: str):
        self.run = None
        mode = spec.mode if spec.mode != "auto" else ("online" if _has_api_key() else "offline")
        try:
            import wandb

            self.run = wandb.init(
                project=spec.project,
                entity=spec.entity,
                group=group,
                name=name,
                config=config,
                mode=mode,
                dir=spec.dir or out_dir,
                reinit="finish_previous",
            )
            log.info("W&B run %s (mode=%s)", name, mode)
        except Exception as e:  # never lose a result because of W&B
            log.warning("W&B init failed (%s); continuing without W&B", e)

    def log(self, metrics: Dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.log(metrics)
            except Exception as e:
                log.warning("W&B log failed: %s", e)

    def log_table(self, key: str, rows: List[Dict[str, Any]]) -> None:
        if self.run is None or not rows:
            return
        try:
            import wandb

            cols = list(rows[0])
            self.run.log({key: wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
        except Exception as e:
            log.warning("W&B table %s failed: %s", key, e)

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:
                log.warning("W&B finish failed: %s", e)
            self.run = None


def make_logger(spec: LoggerSpec, config: Dict[str, Any], group: str, name: str, out_dir: str):
    if spec.name == "wandb" and spec.mode != "disabled":
        return WandbLogger(spec, config, group, name, out_dir)
    return NullLogger()
