"""The wheel: built from this tree, installed into a fresh venv (no editable link, no source tree
on the path), `fptq-run debug=tiny` runs from an unrelated git repository and finds its configs in
the package (pkg://fptq.conf) and records the installed version, not that repository's commit."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = out.glob("fptq-*.whl")
    return whl


def test_wheel_ships_configs_and_kernels_not_top_level_names(wheel):
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "fptq/conf/config.yaml" in names and "fptq/conf/hydra/launcher/slurm.yaml" in names
    assert "fptq/kernels/gemm.py" in names
    assert not [n for n in names if n.split("/")[0] in ("kernels", "analysis", "experiments", "conf")]


def test_wheel_in_a_fresh_venv_runs_fptq_run(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # the dependencies come from this environment's site-packages (a path line, so its editable
    # fptq finder .pth is not processed); fptq itself only from the wheel
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    repo = tmp_path / "someone_elses_repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "wiki.txt").write_text("The quick brown fox jumps over the lazy dog. " * 200)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FPTQ_", "PYTHON"))}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        FPTQ_CACHE_DIR=str(tmp_path / "cache"),
    )
    where = subprocess.run(
        [str(py), "-c", "import fptq, fptq.study.cli; print(fptq.__file__); print(fptq.study.cli.CONF_DIR)"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "pkg://fptq.conf"
    proc = subprocess.run(
        [
            str(venv / "bin" / "fptq-run"),
            "debug=tiny",
            "data.wikitext2=wiki.txt",
            "eval.progress=false",
            "hydra.run.dir=out",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((repo / "out" / "result.json").read_text())
    assert result["git_commit"] == "fptq 0.1.0"  # not the enclosing repository's commit
    rows = list((repo / "results" / "rows").glob("*.json"))
    assert rows
    # the wheel's code version is the checkout's (kernels/ sits elsewhere, the digest is the same):
    # a study can mix jobs run from either without recomputing
    from fptq.study.identity import code_version

    assert json.loads(rows[0].read_text())["code_version"] == code_version()
