"""A pool's checks, the names it gives, and when its template is stale."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from banger.daemon.pools import spec
from banger.daemon.vms.names import check_name
from banger.errors import InvalidArgument


@pytest.mark.parametrize("name", ["a", "agents", "x" * spec.MAX_NAME, "a-1"])
def test_pool_names_that_are_accepted(name: str) -> None:
    assert spec.check_pool_name(name) == name
    # Its guests' names are VM names (DNS labels) too.
    check_name(spec.member_name(name))


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("Agents", "not a DNS label"),
        ("-a", "not a DNS label"),
        ("a.b", "not a DNS label"),
        ("x" * (spec.MAX_NAME + 1), f"at most {spec.MAX_NAME} characters"),
    ],
)
def test_pool_names_that_are_refused(name: str, said: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^name: .*{said}"):
        spec.check_pool_name(name)


@pytest.mark.parametrize("size", [0, 1, spec.MAX_SIZE])
def test_sizes_accepted(size: int) -> None:
    assert spec.check_size(size) == size


@pytest.mark.parametrize("size", [-1, spec.MAX_SIZE + 1, True])
def test_sizes_refused(size: int) -> None:
    with pytest.raises(InvalidArgument, match=r"^size: must be 0-16"):
        spec.check_size(size)


def test_member_and_template_names_differ_each_time_and_template_names_are_no_labels() -> None:
    assert spec.member_name("p") != spec.member_name("p")
    template = spec.template_name("p")
    assert template.startswith("pool.p.")
    # A snapshot name no user can give (user snapshot names are DNS labels).
    with pytest.raises(InvalidArgument):
        check_name(template)


def test_the_template_key_changes_with_every_input() -> None:
    base = spec.TemplateInputs("img1", "k1", "fast", 1, 256, 1 << 30)
    assert base.key() == spec.TemplateInputs("img1", "k1", "fast", 1, 256, 1 << 30).key()
    changes: dict[str, Any] = {
        "image_id": "img2",
        "kernel_id": "k2",
        "init_mode": "systemd",
        "vcpus": 2,
        "memory_mib": 512,
        "work_disk_size": 2 << 30,
        "vmm": "firecracker",
        "banger": "9.9.9",
        "format": spec.TEMPLATE_FORMAT + 1,
    }
    assert set(changes) == {f.name for f in dataclasses.fields(base)}
    keys = {base.key()} | {dataclasses.replace(base, **{k: v}).key() for k, v in changes.items()}
    assert len(keys) == len(changes) + 1
