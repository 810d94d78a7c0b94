"""SSH keys and pinned known_hosts, with the real ssh-keygen."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.guest.sshkeys import (
    ensure_owner_key,
    generate_host_key,
    pin_host_key,
    read_public_key,
    unpin,
)
from banger.paths import Paths


def keygen_find(known_hosts: Path, name: str) -> str:
    """``ssh-keygen -F``: the line OpenSSH itself would match for ``name``."""
    result = subprocess.run(
        ["ssh-keygen", "-F", name, "-f", str(known_hosts)], capture_output=True, text=True
    )
    lines = [ln for ln in result.stdout.splitlines() if ln and not ln.startswith("#")]
    return lines[0] if result.returncode == 0 and lines else ""


def test_owner_key_is_generated_once(banger_home: Path) -> None:
    paths = Paths.from_env()
    first = ensure_owner_key(paths)
    assert first.private == paths.ssh_key
    assert first.private.stat().st_mode & 0o777 == 0o600
    assert first.public_key.startswith("ssh-ed25519 ") and first.public_key.endswith(" banger")
    # the public key really belongs to the private key
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(first.private)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    assert derived == first.public_key.split()[:2]
    again = ensure_owner_key(paths)
    assert again == first
    assert not list(paths.ssh_dir.glob(".keygen-*"))  # no temp leftovers


def test_owner_key_public_half_is_repaired(banger_home: Path) -> None:
    paths = Paths.from_env()
    first = ensure_owner_key(paths)
    first.public.unlink()
    repaired = ensure_owner_key(paths)
    assert repaired.public_key.split()[:2] == first.public_key.split()[:2]


def test_host_key_per_vm(tmp_path: Path) -> None:
    a = generate_host_key(tmp_path / "vm-a", "vm-a")
    b = generate_host_key(tmp_path / "vm-b", "vm-b")
    assert a.private.name == "ssh_host_ed25519_key"
    assert a.public.name == "ssh_host_ed25519_key.pub"
    assert a.public_key != b.public_key
    assert a.private.stat().st_mode & 0o777 == 0o600
    assert a.public.stat().st_mode & 0o777 == 0o644
    assert read_public_key(a.private) == a
    with pytest.raises(InvalidArgument):
        generate_host_key(tmp_path / "vm-c", "two words")


def test_pin_and_unpin_are_seen_by_openssh(tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    old = generate_host_key(tmp_path / "old", "old")
    new = generate_host_key(tmp_path / "new", "new")
    other = generate_host_key(tmp_path / "other", "other")
    pin_host_key(known, ["devbox", "172.30.0.2"], old.public_key)
    pin_host_key(known, ["other", "172.30.0.3"], other.public_key)
    assert old.public_key.split()[1] in keygen_find(known, "devbox")
    # re-pinning a name (VM recreated, IP reused) replaces the old line
    pin_host_key(known, ["devbox", "172.30.0.2"], new.public_key)
    text = known.read_text()
    assert old.public_key.split()[1] not in text
    assert new.public_key.split()[1] in keygen_find(known, "172.30.0.2")
    assert text.count("\n") == 2
    assert known.stat().st_mode & 0o777 == 0o600
    # lines are "names type key", without the key comment
    assert f"devbox,172.30.0.2 {' '.join(new.public_key.split()[:2])}\n" in text

    unpin(known, ["devbox"])
    assert keygen_find(known, "devbox") == ""
    assert keygen_find(known, "172.30.0.2") == ""  # the whole line went
    assert other.public_key.split()[1] in keygen_find(known, "other")
    unpin(known, ["never-pinned"])  # a no-op
    assert not list(known.parent.glob(".known_hosts.*"))


def test_unpin_without_a_file_is_a_noop(tmp_path: Path) -> None:
    unpin(tmp_path / "known_hosts", ["x"])
    assert not (tmp_path / "known_hosts").exists()


@pytest.mark.parametrize("name", ["", "a b", "a,b", "*.example", "!x", "|1|hashed", "#c"])
def test_names_that_cannot_be_pinned(tmp_path: Path, name: str) -> None:
    key = generate_host_key(tmp_path / "k", "k")
    with pytest.raises(InvalidArgument):
        pin_host_key(tmp_path / "known_hosts", [name], key.public_key)


def test_bracketed_port_names_and_bad_keys(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    key = generate_host_key(tmp_path / "k", "k")
    pin_host_key(known, ["[127.0.0.1]:2222"], key.public_key)
    assert key.public_key.split()[1] in keygen_find(known, "[127.0.0.1]:2222")
    with pytest.raises(InvalidArgument, match="not an OpenSSH public key"):
        pin_host_key(known, ["x"], "garbage")
    with pytest.raises(InvalidArgument):
        pin_host_key(known, [], key.public_key)
