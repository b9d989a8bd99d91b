import logging

import pytest

from fptq.study.runlog import LoggerSpec, NullLogger, WandbLogger, make_logger


def test_none_and_disabled_give_null_logger(tmp_path):
    assert isinstance(make_logger(LoggerSpec(name="none"), {}, "g", "n", str(tmp_path)), NullLogger)
    assert isinstance(
        make_logger(LoggerSpec(name="wandb", mode="disabled"), {}, "g", "n", str(tmp_path)), NullLogger
    )


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key: mode auto -> offline
    lg = make_logger(LoggerSpec(name="wandb", mode="auto"), {"a": 1}, "grp", "model/scheme", str(tmp_path))
    assert isinstance(lg, WandbLogger) and lg.run is not None
    lg.log({"ppl/wikitext2": 12.5})
    lg.log_table("quant_report", [{"name": "l0", "v": 3.0}])
    lg.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_failure_is_a_warning(tmp_path, monkeypatch, caplog):
    import wandb

    def boom(**kw):
        raise RuntimeError("no W&B today")

    monkeypatch.setattr(wandb, "init", boom)
    with caplog.at_level(logging.WARNING):
        lg = make_logger(LoggerSpec(name="wandb", mode="offline"), {}, "g", "n", str(tmp_path))
    lg.log({"x": 1})
    lg.finish()
    assert any("W&B init failed" in r.message for r in caplog.records)


def test_bad_logger_spec():
    with pytest.raises(ValueError):
        LoggerSpec(name="mlflow")
