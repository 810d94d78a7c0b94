"""The helper's request validation: table-driven cases and hostile property tests."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings, target
from hypothesis import strategies as st

from banger.helper.validate import (
    NETWORK_SPECS,
    AttachTapArgs,
    Context,
    EnsureBridgeArgs,
    OpenTapArgs,
    OpenTapDetachedArgs,
    RequestInvalid,
    check_bridge,
    check_gateway,
    check_ifname,
    check_subnet,
    check_tap,
    checked_path,
    validate_request,
)
from tests.support import Branches

CTX = Context()

#: One valid argument set per op; every property test starts from these.
VALID: dict[str, dict[str, Any]] = {
    "ping": {},
    "version": {},
    "ensure_bridge": {"name": "bgbr0", "cidr": "172.30.0.1/24"},
    "open_tap": {"name": "bt-1a2b", "bridge": "bgbr0"},
    "open_tap_detached": {"name": "bt-1a2b"},
    "attach_tap": {"name": "bt-1a2b", "bridge": "bgbr0"},
    "delete_tap": {"name": "bt-1a2b"},
    "ensure_nat": {"cidr": "172.30.0.0/24", "bridge": "bgbr0"},
    "teardown_network": {"bridge": "bgbr0"},
    "bind_dns": {"cidr": "172.30.0.1/24"},
    "resolver_link": {"bridge": "bgbr0", "cidr": "172.30.0.1/24", "domain": "banger"},
}
#: The domain is left out: "banger" + "a" * 16 is a fine domain, not an injection.
#: tests/unit/test_dns_helper_validate.py fuzzes it on its own terms.
STRING_FIELDS = [
    (op, f) for op, args in VALID.items() for f in args if (op, f) != ("resolver_link", "domain")
]

INJECTIONS = [
    "br0; rm -rf /",
    "$(x)",
    "`id`",
    "br0 && reboot",
    "br0|x",
    "br 0",
    "br0\n",
    "\nbr0",
    "br0\x00",
    "../br0",
    "br0/..",
    "bgbr0é",
    "bgbr\u202e0",
    "BR0",
    " ",
    "a" * 16,
    "bt-" + "a" * 13,
    "172.30.0.1/24; rm -rf /",
    "172.30.0.1/24\n",
    "172.030.0.1/24",
    "172.30.0.1/255.255.255.0",
    "172.30.0.1",
    "::1/64",
    "fd00::1/64",
    "8.8.8.1/24",
    "172.30.0.1/8",
    "172.30.0.1/31",
    "１７２.30.0.1/24",
]


#: Bad on their own, harmless as a prefix or suffix of a good value ("bgbr0-br0").
REPLACE_ONLY = ["-br0", "", "0"]


def request(op: str, args: object, **extra: object) -> dict[str, object]:
    return {"id": 1, "op": op, "args": args, **extra}


def refused(message: dict[str, Any], ctx: Context = CTX) -> RequestInvalid:
    with pytest.raises(RequestInvalid) as info:
        validate_request(ctx, message)
    return info.value


# -- table-driven ------------------------------------------------------------


@pytest.mark.parametrize("op", sorted(VALID))
def test_every_op_accepts_its_valid_arguments(op: str) -> None:
    req = validate_request(CTX, request(op, VALID[op]))
    assert req.op == op and req.id == 1


def test_every_op_has_a_valid_example() -> None:
    assert set(VALID) == set(NETWORK_SPECS)


def test_arguments_are_typed() -> None:
    req = validate_request(CTX, request("ensure_bridge", VALID["ensure_bridge"]))
    assert req.args == EnsureBridgeArgs("bgbr0", ipaddress.IPv4Interface("172.30.0.1/24"))
    req = validate_request(CTX, request("open_tap", VALID["open_tap"]))
    assert req.args == OpenTapArgs("bt-1a2b", "bgbr0")


def test_detached_tap_ops_take_only_banger_taps_and_bridges() -> None:
    """open_tap_detached / attach_tap (issue #18 item 2): a bt- tap, a non-bt- bridge,
    strings only, every field required, no other field (no path, no flag)."""
    req = validate_request(CTX, request("attach_tap", VALID["attach_tap"]))
    assert req.args == AttachTapArgs("bt-1a2b", "bgbr0")
    req = validate_request(CTX, request("open_tap_detached", VALID["open_tap_detached"]))
    assert req.args == OpenTapDetachedArgs("bt-1a2b")
    assert refused(request("attach_tap", {"name": "eth0", "bridge": "bgbr0"})).problems == [
        "attach_tap.args.name: must match bt-[a-z0-9-]{1,12}"
    ]
    assert refused(request("attach_tap", {"name": "bt-1", "bridge": "bt-2"})).problems == [
        "attach_tap.args.bridge: bridge names may not start with 'bt-' (reserved for taps)"
    ]
    assert refused(request("attach_tap", {"name": True, "bridge": 5})).problems == [
        "attach_tap.args.name: must be a string, got bool",
        "attach_tap.args.bridge: must be a string, got int",
    ]
    assert refused(request("attach_tap", {"name": "bt-1"})).problems == [
        "attach_tap.args.bridge: required"
    ]
    assert refused(
        request("open_tap_detached", {"name": "bt-1", "bridge": "bgbr0", "detached": True})
    ).problems == [
        "open_tap_detached.args.bridge: unknown field",
        "open_tap_detached.args.detached: unknown field",
    ]
    assert refused(request("open_tap_detached", {"name": "lo"})).problems == [
        "open_tap_detached.args.name: must match bt-[a-z0-9-]{1,12}"
    ]


def test_errors_name_the_field() -> None:
    exc = refused(request("open_tap", {"name": "br0; rm -rf /", "bridge": "bgbr0"}))
    assert str(exc) == "open_tap.args.name: must match bt-[a-z0-9-]{1,12}"
    assert exc.hint


def test_all_problems_are_reported_at_once() -> None:
    exc = refused(request("ensure_nat", {"cidr": 5, "extra": 1}, junk=True))
    assert exc.problems == [
        "junk: unknown field",
        "ensure_nat.args.extra: unknown field",
        "ensure_nat.args.cidr: must be a string, got int",
        "ensure_nat.args.bridge: required",
    ]


def test_unknown_op_refused() -> None:
    assert "op: unknown op 'rm -rf'" in str(refused(request("rm -rf", {})))
    assert "op: unknown op" in str(refused(request("__class__", {})))


@pytest.mark.parametrize(
    "message, expected",
    [
        ({"op": "ping", "args": {}}, "id: required"),
        ({"id": True, "op": "ping", "args": {}}, "id: must be an integer or a string, got bool"),
        ({"id": 1.5, "op": "ping", "args": {}}, "id: must be an integer or a string, got float"),
        ({"id": 2**60, "op": "ping", "args": {}}, "id: integer out of range"),
        ({"id": "x\n", "op": "ping", "args": {}}, "id: must be printable"),
        ({"id": 1, "args": {}}, "op: required string"),
        ({"id": 1, "op": 3, "args": {}}, "op: must be a string, got int"),
        ({"id": 1, "op": "ping"}, "ping.args: must be an object, got null"),
        ({"id": 1, "op": "ping", "args": []}, "ping.args: must be an object, got list"),
        ({"id": 1, "op": "ping", "args": {"x": 1}}, "ping.args.x: unknown field"),
    ],
)
def test_envelope_errors(message: dict[str, Any], expected: str) -> None:
    assert expected in str(refused(message))


@pytest.mark.parametrize(
    "value, error",
    [
        ("172.30.0.0/24", "network or broadcast"),
        ("172.30.0.255/24", "network or broadcast"),
        ("8.8.8.1/24", "must be inside 10.0.0.0/8"),
        ("172.30.0.1/8", "prefix must be /16 to /30"),
        ("172.30.0.1/31", "prefix must be /16 to /30"),
        ("172.30.0.1", "with a prefix length"),
        ("172.030.0.1/24", "with a prefix length"),
        ("300.30.0.1/24", "not an IPv4 address"),
        (True, "must be a string, got bool"),
    ],
)
def test_gateway_errors(value: object, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        check_gateway(CTX, value)


def test_subnet_host_bits_are_explicit() -> None:
    assert check_subnet(CTX, "10.9.0.0/16") == ipaddress.IPv4Network("10.9.0.0/16")
    with pytest.raises(ValueError, match=re.escape("host bits set; the subnet is 172.30.0.0/24")):
        check_subnet(CTX, "172.30.0.1/24")


def test_bridge_names_may_not_look_like_taps() -> None:
    with pytest.raises(ValueError, match="reserved for taps"):
        check_bridge(CTX, "bt-x")


# -- hypothesis: hostile requests are never accepted -------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(op=st.sampled_from(sorted(VALID)), args=st.dictionaries(st.text(), json_values, min_size=1))
def test_random_argument_dicts_refused(op: str, args: dict[str, Any]) -> None:
    # Valid keys with valid values by chance would be a real (astronomically unlikely) pass.
    if args == VALID[op]:
        return
    refused(request(op, args))


@given(op=st.sampled_from(sorted(VALID)), key=st.text(), value=json_values)
def test_extra_fields_refused(op: str, key: str, value: object) -> None:
    if key in VALID[op]:
        return
    refused(request(op, {**VALID[op], key: value}))


@given(
    field=st.sampled_from(STRING_FIELDS),
    value=json_values.filter(lambda v: not isinstance(v, str)),
)
def test_wrong_types_refused(field: tuple[str, str], value: object) -> None:
    op, name = field
    exc = refused(request(op, {**VALID[op], name: value}))
    assert str(exc).startswith(f"{op}.args.{name}: must be a string")


@given(field=st.sampled_from(STRING_FIELDS))
def test_missing_fields_refused(field: tuple[str, str]) -> None:
    op, name = field
    args = dict(VALID[op])
    del args[name]
    assert str(refused(request(op, args))) == f"{op}.args.{name}: required"


@given(
    field=st.sampled_from(STRING_FIELDS),
    injection=st.sampled_from(INJECTIONS + REPLACE_ONLY),
    where=st.sampled_from(["replace", "prefix", "suffix"]),
)
def test_injection_strings_refused(field: tuple[str, str], injection: str, where: str) -> None:
    op, name = field
    good = VALID[op][name]
    if injection in REPLACE_ONLY:
        where = "replace"
    value = {"replace": injection, "prefix": injection + good, "suffix": good + injection}[where]
    refused(request(op, {**VALID[op], name: value}))


#: Plain text (nearly always refused) or text shaped like an interface name
#: (often accepted): both branches of the properties below get examples.
interface_names = st.text() | st.from_regex(r"(bt-)?[a-z0-9-]{1,16}", fullmatch=True)

#: Mostly private addresses (public ones are one refusal among many).
ipv4_addresses = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="172.16.0.0/12"),
    st.ip_addresses(network="192.168.0.0/16"),
)


def test_accepted_interface_names_are_plain() -> None:
    branches = Branches()

    @example("bgbr0")  # an interface and a bridge
    @example("bt-1a2b")  # an interface and a tap, not a bridge
    @example("a" * 15)  # the longest name IFNAMSIZ allows
    @example("a" * 16)  # one too long: refused by all three
    @example("eth0; rm -rf /")
    @given(interface_names)
    def accepted_names_are_plain(text: str) -> None:
        accepted = 0
        for check in (check_ifname, check_bridge, check_tap):
            try:
                name = check(CTX, text)
            except ValueError:
                branches.took(f"{check.__name__} refused")
                continue
            branches.took(f"{check.__name__} accepted")
            accepted += 1
            assert name == text
            assert 1 <= len(name) <= 15  # IFNAMSIZ - 1
            assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
            assert name[0].isalpha()
        target(accepted, label="checks that accepted the name")

    accepted_names_are_plain()
    branches.require(*(f"{c.__name__} {b}" for c in (check_ifname, check_bridge, check_tap)
                       for b in ("accepted", "refused")))  # fmt: skip


def test_accepted_addresses_are_private_and_sized() -> None:
    branches = Branches()

    @example(ipaddress.IPv4Address("172.30.0.1"), 24, "")  # a gateway, not a subnet
    @example(ipaddress.IPv4Address("10.1.0.0"), 16, "")  # a subnet; as a gateway, the network
    @example(ipaddress.IPv4Address("8.8.8.1"), 24, "")  # public: refused by both
    @example(ipaddress.IPv4Address("192.168.1.1"), 31, "")  # too small: refused by both
    @given(ipv4_addresses, st.integers(min_value=0, max_value=32), st.text(max_size=3))
    def accepted_addresses_are_private_and_sized(
        ip: ipaddress.IPv4Address, prefix: int, noise: str
    ) -> None:
        # The network's own address too, else a subnet (host bits zero) is rare.
        network = ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False).network_address
        accepted = 0
        texts = (f"{ip}/{prefix}", f"{network}/{prefix}")
        for text in (*texts, f"{ip}/{prefix}{noise}", f"{noise}{ip}/{prefix}"):
            try:
                gw = check_gateway(CTX, text)
            except ValueError:
                branches.took("gateway refused")
            else:
                branches.took("gateway accepted")
                accepted += 1
                assert str(gw) == text
                assert gw.ip not in (gw.network.network_address, gw.network.broadcast_address)
                assert 16 <= gw.network.prefixlen <= 30 and gw.network.is_private
            try:
                net = check_subnet(CTX, text)
            except ValueError:
                branches.took("subnet refused")
            else:
                branches.took("subnet accepted")
                accepted += 1
                assert str(net) == text and 16 <= net.prefixlen <= 30 and net.is_private
        target(accepted, label="accepted gateway and subnet texts")

    accepted_addresses_are_private_and_sized()
    branches.require("gateway accepted", "gateway refused", "subnet accepted", "subnet refused")


# -- paths ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Context, Path]]:
    """root/{d/f, d/link->/etc, flink->d/f, file} plus an outside directory."""
    base = tmp_path_factory.mktemp("paths")
    root = base / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("x")
    (root / "file").write_text("x")
    (root / "d" / "link").symlink_to("/etc")
    (root / "flink").symlink_to(root / "d" / "f")
    (root / "rootlink").symlink_to(root)
    (base / "outside").mkdir()
    (base / "outside" / "f").write_text("x")
    yield Context.from_dirs([root]), root


def test_paths_inside_root_accepted(tree: tuple[Context, Path]) -> None:
    ctx, root = tree
    assert checked_path(ctx, str(root / "d" / "f")) == root / "d" / "f"
    assert checked_path(ctx, str(root / "d" / "new"), must_exist=False) == root / "d" / "new"


@pytest.mark.parametrize(
    "relative, error",
    [
        ("d/link", "is a symlink"),
        ("d/link/passwd", "is a symlink"),
        ("flink", "is a symlink"),
        ("rootlink/d/f", "is a symlink"),
        ("file/x", "is not a directory"),
        ("d/missing", "does not exist"),
        ("missing/new", "does not exist"),
        ("d/../d/f", "must be normalised"),
        ("d/./f", "must be normalised"),
        ("d//f", "must be normalised"),
        ("d/", "must be normalised"),
        ("../outside/f", "must be normalised"),
        ("d/f\x00", "NUL"),
    ],
)
def test_bad_paths_refused(tree: tuple[Context, Path], relative: str, error: str) -> None:
    ctx, root = tree
    with pytest.raises(ValueError, match=re.escape(error)):
        checked_path(ctx, f"{root}/{relative}")


@pytest.mark.parametrize("value", ["relative/path", "", "/etc/passwd", "/"])
def test_paths_outside_roots_refused(tree: tuple[Context, Path], value: str) -> None:
    ctx, _ = tree
    with pytest.raises(ValueError):
        checked_path(ctx, value)


def test_the_root_itself_is_refused(tree: tuple[Context, Path]) -> None:
    ctx, root = tree
    with pytest.raises(ValueError, match="inside an allowed root"):
        checked_path(ctx, str(root))


def test_allow_roots_must_be_absolute_directories(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="absolute"):
        Context.from_dirs([Path("relative")])
    with pytest.raises(Exception, match="not a directory"):
        Context.from_dirs([tmp_path / "nope"])


components = st.sampled_from(
    ["d", "f", "new", "link", "flink", "rootlink", "..", ".", "", "x\x00", "新"]
)


def test_accepted_paths_never_escape(tree: tuple[Context, Path]) -> None:
    ctx, root = tree
    branches = Branches()

    @settings(max_examples=300)
    @example(["d", "f"], True)  # an existing file: accepted
    @example(["d", "new"], False)  # a new name in a real directory: accepted
    @example(["d", "link", "passwd"], False)  # through a symlink: refused
    @given(parts=st.lists(components, min_size=1, max_size=5), must_exist=st.booleans())
    def accepted_paths_never_escape(parts: list[str], must_exist: bool) -> None:
        text = str(root) + "/" + "/".join(parts)
        try:
            path = checked_path(ctx, text, must_exist=must_exist)
        except ValueError:
            branches.took("refused")
            return
        branches.took("accepted")
        # Accepted: resolving symlinks changes nothing, and it is strictly inside the root.
        parent = os.path.realpath(path.parent)
        assert Path(parent) / path.name == path
        assert path.is_relative_to(root) and path != root
        assert not path.is_symlink()

    accepted_paths_never_escape()
    branches.require("accepted", "refused")
