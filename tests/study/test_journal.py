"""fairl.study.journal: appends are all of their records or none, and never cut whole ones."""

from __future__ import annotations

import json

import pytest

from fairl.study import journal


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("written", ["all", "half"])
def test_an_append_stopped_midway_keeps_whole_records_only(tmp_path, monkeypatch, written):
    path = tmp_path / "optuna.journal"
    backend = journal.journal_file(str(path))
    backend.append_logs([{"op_code": 0, "n": 1}])
    real_write = journal._write_all

    def write_then_stop(fd: int, data: bytes) -> None:
        # A signal taken after the last write (all) or a write cut short (half).
        real_write(fd, data if written == "all" else data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(journal, "_write_all", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        backend.append_logs([{"op_code": 0, "n": 2}, {"op_code": 0, "n": 3}])
    assert journal.bad_records(path)[0] == []
    expected = [1, 2, 3] if written == "all" else [1]  # others may have read 2 and 3 already
    assert [record["n"] for record in _records(path)] == expected
