"""sync_paths: an fsync each for a few paths, one syncfs for many; each failure goes to its own path."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spool.sync import SYNCFS_FROM, sync_paths, trusts_syncfs


def _files(directory: Path, count: int) -> list[Path]:
    paths = [directory / f"f{n}" for n in range(count)]
    for path in paths:
        path.write_bytes(b"x" * 1024)
    return paths


@pytest.mark.parametrize("count", [3, SYNCFS_FROM + 8])
def test_sync_paths_fails_only_a_path_that_cannot_be_synced(tmp_path: Path, count: int) -> None:
    paths = [*_files(tmp_path, count), tmp_path]
    gone = tmp_path / "gone"
    failed = sync_paths([*paths, gone, paths[0]])
    assert list(failed) == [gone]
    assert isinstance(failed[gone], FileNotFoundError)


needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (CI installs it)")
_SYNC_CALLS = re.compile(r"^\d+ +(syncfs|fsync|fdatasync)\(", re.MULTILINE)


def _traced_sync_calls(tmp_path: Path, count: int) -> list[str]:
    """The sync system calls of one ``sync_paths`` over ``count`` files and their directory, as the
    kernel saw them (strace)."""
    _files(tmp_path, count)
    trace = tmp_path / "trace"
    script = (
        "import sys; from pathlib import Path; from spool.sync import sync_paths; "
        "root = Path(sys.argv[1]); "
        "assert not sync_paths([*sorted(root.glob('f*')), root])"
    )
    strace = ["strace", "-f", "-o", str(trace), "-e", "trace=syncfs,fsync,fdatasync"]
    subprocess.run(
        [*strace, sys.executable, "-c", script, str(tmp_path)],
        check=True,
        cwd=Path(__file__).parents[2],
    )
    return _SYNC_CALLS.findall(trace.read_text())


@needs_strace
def test_a_few_paths_are_fsynced_each(tmp_path: Path) -> None:
    assert _traced_sync_calls(tmp_path, 5) == ["fsync"] * 6


@needs_strace
def test_many_paths_on_one_filesystem_are_one_syncfs(tmp_path: Path) -> None:
    """Where syncfs is not trusted (an old kernel, an overlay filesystem), an fsync each."""
    calls = _traced_sync_calls(tmp_path, SYNCFS_FROM + 8)
    assert calls == (["syncfs"] if trusts_syncfs(tmp_path) else ["fsync"] * (SYNCFS_FROM + 9))
