"""Results: one `result.json` per run and a shared append-only JSONL store for `analysis/`.

Writes are atomic: result.json goes through a temp file and os.replace; a store row is one
complete line appended with a single write under an exclusive lock, so a crash or Ctrl-C never
leaves a half row. Readers skip a torn last line if one ever appears.
"""

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List

from fptq.files import clean_json

log = logging.getLogger(__name__)
STORE_NAME = "results.jsonl"


class ResultStore:
    def __init__(self, results_dir: str):
        self.dir = Path(results_dir)
        self.path = self.dir / STORE_NAME

    def append(self, row: Dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(clean_json(row), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        with open(self.path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s:%d is not a complete row; skipped", self.path, i + 1)
        return rows
