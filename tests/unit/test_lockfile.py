"""requirements.lock: in step with pyproject.toml, hash-pinned, no index URLs (issue #15).

The real lock is checked as committed; the failure paths run `scripts/lockfile.py`
and `make deps` on a copy of the repository's build files with one thing changed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    return tmp_path


def check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(repo / "scripts" / "lockfile.py"), "check"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_committed_lock_is_current() -> None:
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_every_package_is_pinned_with_hashes_and_no_url() -> None:
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.M)
    assert len(entries) > 20
    names = {name.lower() for name, _ in entries}
    # pyproject's direct dependencies (runtime and dev) are all in it, and uv itself.
    for name in ("asyncssh", "cryptography", "fastapi", "pytest", "mypy", "ruff", "uv"):
        assert name in names, name
    blocks = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.M)[1:]
    assert len(blocks) == len(entries)
    for block in blocks:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    assert not re.search(r"(?i)https?://|file://|index-url|find-links", text)


def test_a_changed_range_makes_the_lock_stale(repo: Path) -> None:
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"click>=8.1"', '"click>=8.2"'))
    result = check(repo)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("requirements.lock is stale")
    assert "make lock" in lines[0]


def test_a_hand_edited_lock_is_refused(repo: Path) -> None:
    lock = repo / "requirements.lock"
    text = lock.read_text()
    # A pin whose hash lines were dropped, and an index URL slipped in.
    text = re.sub(r"(^click==\S+) \\\n(    --hash=\S+( \\)?\n)+", r"\1\n", text, flags=re.M)
    lock.write_text("--index-url https://example.invalid/simple\n" + text)
    result = check(repo)
    assert result.returncode == 1
    assert "click has no hash" in result.stderr
    assert "index or download URL" in result.stderr


def test_make_deps_stops_on_a_stale_lock_with_one_line(repo: Path) -> None:
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"rich>=13"', '"rich>=13.1"'))
    result = subprocess.run(
        ["make", "-s", "-C", str(repo), "deps", f"PYTHON={PYTHON}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith("requirements.lock is stale") and "make lock" in ours[0]
    assert not (repo / ".venv").exists()  # nothing installed from a stale lock
