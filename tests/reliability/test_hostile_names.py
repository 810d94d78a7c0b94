"""Every name check that guards a file name, an argv element, a kernel command line,
a device-mapper table or a known_hosts line refuses shell, nft and newline injection.

Property-based: for each checker, (1) whatever it accepts is plain — nothing a
shell, nft, dmsetup, the kernel command line or known_hosts would split or
interpret, no path separator, no leading '-' (option injection), bounded
length; (2) a valid name with any injection fragment spliced in anywhere is
refused. The second property found ``match`` + ``$`` validators that accepted
a trailing newline (``$`` matches before one); they now use ``fullmatch``.

The helper's own validators have the same properties in
tests/unit/test_helper_validate.py; config ``file_sync`` paths in
tests/unit/test_config_file_sync_props.py. Not repeated here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from banger.daemon.vms.names import check_name as check_vm_name
from banger.disk.cow import dm_name, dmsetup_create_argv, snapshot_table
from banger.errors import InvalidArgument
from banger.guest.sshkeys import _check_names as check_known_host_names
from banger.images.common import check_image_name
from banger.images.distro import parse_distro_ref
from banger.kernels.pull import parse_source
from banger.kernels.store import check_kernel_name
from tests.reliability.budget import fuzz_settings
from tests.reliability_counts import ReliabilityCounts
from tests.support import Branches

#: Fragments that mean something to a shell, nft, the kernel command line,
#: dmsetup tables, known_hosts or a path: each must make any name invalid.
INJECTIONS = [
    "\n", "\r", "\x00", "\t", " ", ";", "|", "&", "$(id)", "`id`", "${IFS}", ">", "<",
    "'", '"', "\\", "/", "../", "*", "?", "[", "]", "{", "}", "#", "!", "=", ",", "%",
    "\u200b", "\u2028", "\x85", "\x1b[31m", "é", "ﬁ", "０",
]  # fmt: skip
#: What any accepted name may contain at most (the union of the checkers' alphabets;
#: ':' only where a version or an address needs it, '/' only in device paths).
PLAIN = re.compile(r"[A-Za-z0-9._+~:\[\]/-]+")


@dataclass(frozen=True)
class Checker:
    label: str
    check: Callable[[str], object]
    valid: str
    #: None: no length limit of its own (one argv element or one known_hosts token;
    #: the kernel's argument limits and the file are the bound, and both fail cleanly).
    max_len: int | None
    #: Characters this checker legitimately allows beyond [A-Za-z0-9._-].
    extra: str = ""

    def accepts(self, value: str) -> bool:
        try:
            self.check(value)
        except InvalidArgument:
            return False
        return True


def _dev(value: str) -> None:
    snapshot_table(value, "/dev/loop1", 8)


def _dm(value: str) -> None:
    dmsetup_create_argv(value, "0 8 zero")


def _known_host(value: str) -> None:
    check_known_host_names([value])


def _kernel_source(value: str) -> None:
    parse_source(f"debian:{value}")


def _distro(value: str) -> None:
    parse_distro_ref(f"debian:{value}")


CHECKERS = [
    Checker("vm name", check_vm_name, "dev-1", 63),
    Checker("image name", check_image_name, "debian-bookworm", 63),
    Checker("kernel name", check_kernel_name, "debian-6.1+b1", 64, "+"),
    Checker("vm id as dm name", dm_name, "0123abcd", 64),
    Checker("dm name", _dm, "banger-0123abcd", 71),
    Checker("dm table device", _dev, "/dev/loop7", 80, "/:"),
    Checker("known_hosts name", _known_host, "[172.30.0.5]:22", None, ":[]"),
    Checker("kernel source version", _kernel_source, "6.1.192-2", None, "+~:"),
    Checker("distro suite", _distro, "bookworm", 32),
]
IDS = [c.label for c in CHECKERS]


def assert_plain(checker: Checker, value: str) -> None:
    assert PLAIN.fullmatch(value), (checker.label, value)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") | set(
        checker.extra
    )
    assert set(value) <= allowed, (checker.label, value)
    assert not value.startswith("-"), (checker.label, value)  # never an option
    assert value not in (".", ".."), (checker.label, value)
    if checker.max_len is not None:
        assert len(value) <= checker.max_len, (checker.label, len(value))


def test_every_valid_example_is_accepted() -> None:
    for checker in CHECKERS:
        assert checker.accepts(checker.valid), checker.label


hostile_text = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda a, inj, b: a + inj + b,
        st.text(alphabet="abcz09.-_+:/", max_size=12),
        st.sampled_from(INJECTIONS),
        st.text(alphabet="abcz09.-_+:/", max_size=12),
    ),
)


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_whatever_is_accepted_is_plain(
    checker: Checker, reliability_counts: ReliabilityCounts
) -> None:
    branches = Branches()

    @fuzz_settings(scale=10)
    @given(hostile_text)
    @example(checker.valid)  # accepted: the plain-ness checks run at least here
    @example("a" * 500)
    @example(checker.valid + "\n")
    def run(value: str) -> None:
        reliability_counts.hostile()
        if checker.accepts(value):
            branches.took("accepted")
            assert_plain(checker, value)
        else:
            branches.took("refused")

    run()
    branches.require("accepted", "refused")


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_injection_anywhere_is_refused(
    checker: Checker, reliability_counts: ReliabilityCounts
) -> None:
    @fuzz_settings(scale=10)
    @given(st.sampled_from(INJECTIONS), st.integers(min_value=0, max_value=len(checker.valid)))
    def run(injection: str, at: int) -> None:
        reliability_counts.hostile()
        value = checker.valid[:at] + injection + checker.valid[at:]
        assert not checker.accepts(value), (checker.label, value)

    run()


BOUNDED = [c for c in CHECKERS if c.max_len is not None]


@pytest.mark.parametrize("checker", BOUNDED, ids=[c.label for c in BOUNDED])
def test_overlong_names_are_refused(
    checker: Checker, reliability_counts: ReliabilityCounts
) -> None:
    assert checker.max_len is not None
    reliability_counts.hostile()
    assert not checker.accepts(checker.valid + "a" * (checker.max_len + 1))
