"""fptq.files: atomic writes that honour the umask."""

import os
import stat

import pytest

from fptq.files import current_umask, honour_umask, write_json_atomic


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    # mkstemp creates 0600 whatever the umask: rows and result.json were unreadable to a shared
    # filesystem's other users
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        write_json_atomic(tmp_path / "row.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "row.json").stat().st_mode) == mode


def test_honour_umask_on_a_folder_written_through_temporary_names(tmp_path):
    d = tmp_path / "ck"
    (d / "sub").mkdir(parents=True)
    for p in (d, d / "sub"):
        os.chmod(p, 0o700)
    (d / "sub" / "w.safetensors").write_bytes(b"x")
    os.chmod(d / "sub" / "w.safetensors", 0o600)
    old = os.umask(0o022)
    try:
        honour_umask(d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((d / "sub" / "w.safetensors").stat().st_mode) == 0o644
