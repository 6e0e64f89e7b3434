"""`modelapi predict`: against the real server (--url) and in process; a failed job prints why and exits 1."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from modelapi.cli import main

from .jobs_helpers import SCORER, expected_csv, server_env, write_input
from .server import RunningServer, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("jobs-cli")
    args = (SCORER, "--state-dir", str(tmp / "state"))
    with serve(*args, env=server_env(MODELAPI_JOB_CHUNK_ROWS="50"), tmp_dir=tmp, timeout=120) as running:
        yield running


def test_predict_through_the_server_writes_the_result(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_input(tmp_path / "in.csv", 120)
    out = tmp_path / "preds.parquet"
    args = ["--model", "scorer", "--input", str(tmp_path / "in.csv"), "--output", str(out), "--url", server.url]
    code = main(["predict", *args])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "100.0% 120/120 rows" in err and "wrote 120 predictions" in err
    assert "\r" not in err  # captured stderr is no terminal: progress comes as lines of their own
    assert pq.read_table(out).equals(pacsv.read_csv(io.BytesIO(expected_csv(records, 50))))
    assert not out.with_name(out.name + ".part").exists()


def test_predict_in_process_matches_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = write_input(tmp_path / "in.csv", 30)
    out = tmp_path / "preds.csv"
    code = main(["predict", SCORER, "--model", "scorer", "--input", str(tmp_path / "in.csv"), "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    assert out.read_bytes() == expected_csv(records, 10_000)

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,tag\n1,2,x\n1,zz,x\n")
    code = main(["predict", SCORER, "--model", "scorer", "--input", str(bad), "--output", str(out)])
    assert code == 1
    assert "row 2, column 'b'" in capsys.readouterr().err


def test_a_failed_job_prints_the_reason_and_exits_non_zero(server: RunningServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,tag\n1,2,x\n3,4,y\nnot-a-number,5,z\n")
    out = tmp_path / "preds.csv"
    cmd = [sys.executable, "-m", "modelapi", "predict", "--model", "scorer", "--input", str(bad), "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--url", server.url], capture_output=True, text=True, timeout=60, env={**os.environ, **server_env()}
    )
    assert proc.returncode == 1, proc.stderr
    assert "failed: row 3, column 'a' expected a number, got string 'not-a-number'" in proc.stderr
    assert not out.exists()

    proc = subprocess.run([*cmd, "--url", server.url, "--model", "nope"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "404" in proc.stderr and "nope" in proc.stderr
