"""The `vm dns` doctor check's decision table, row by row."""

from __future__ import annotations

from typing import Any

import pytest

from banger.doctor.dns import DNSFacts, decide, manual_fix

GW, BRIDGE, DOMAIN = "10.9.0.1", "bng9", "vms"


def report(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "serving": True,
        "address": GW,
        "bridge": BRIDGE,
        "domain": DOMAIN,
        "upstreams": ["192.0.2.53"],
        "host_link": {"configured": True, "bridge": BRIDGE, "dns": GW, "domain": f"~{DOMAIN}"},
        "error": None,
    }
    body.update(overrides)
    return body


def facts(
    body: dict[str, Any] | None, *, up: bool = True, resolved: bool = False, detail: str = ""
) -> DNSFacts:
    # config values differ from the report's: the report must win when present
    return DNSFacts(up, detail, body, resolved, "172.30.0.1", "banger0", "banger")


NOT_CONFIGURED = {"configured": False, "reason": "systemd-resolved is not running"}


@pytest.mark.parametrize(
    ("case", "status", "in_detail", "has_fix"),
    [
        (facts(report()), "pass", f"routes ~{DOMAIN} there via {BRIDGE}", False),
        (facts(report(), resolved=True), "pass", "systemd-resolved routes", False),
        (facts(report(host_link=NOT_CONFIGURED)), "warn", "systemd-resolved is not running", True),
        (facts(report(host_link=None)), "warn", "did not report why", True),
        (facts(report(serving=False, host_link=None)), "warn", "not started yet", True),
        (facts(report(serving=False, host_link=None), resolved=True), "pass", "not started", False),
        (facts(report(serving=False, error="bind_dns refused")), "warn", "bind_dns refused", True),
        (facts(None, detail="GET /v1/dns answered 404"), "warn", "answered 404", True),
        (facts(None, up=False, detail="bangerd is not running"), "warn", "not running", True),
        (
            facts(None, up=False, detail="bangerd is not running", resolved=True),
            "pass",
            "skip",
            False,
        ),
    ],
    ids=[
        "serving+routed",
        "serving+routed+resolved",
        "serving, host not routed",
        "serving, link unknown",
        "not started, no resolved",
        "not started, resolved",
        "failed to start",
        "old daemon",
        "no daemon, no resolved",
        "no daemon, resolved",
    ],
)
def test_decision_table(case: DNSFacts, status: str, in_detail: str, has_fix: bool) -> None:
    result = decide(case)
    assert result.name == "vm dns"
    assert result.status == status
    assert in_detail in result.detail
    assert bool(result.fix) == has_fix


def test_the_fix_names_what_to_configure_with_the_reported_address() -> None:
    result = decide(facts(report(host_link=NOT_CONFIGURED)))
    assert f"server=/{DOMAIN}/{GW}" in result.fix  # dnsmasq / NetworkManager
    assert f"resolvectl dns {BRIDGE} {GW}" in result.fix
    assert "banger vm ssh NAME" in result.fix
    assert result.fix == manual_fix(GW, BRIDGE, DOMAIN)


def test_without_a_report_the_fix_uses_the_configured_network() -> None:
    result = decide(facts(None, up=False, detail="bangerd is not running"))
    assert "server=/banger/172.30.0.1" in result.fix
    assert "<vm>.banger" in result.detail


def test_an_empty_report_field_falls_back_to_the_config() -> None:
    result = decide(facts(report(address="", host_link=NOT_CONFIGURED)))
    assert f"server=/{DOMAIN}/172.30.0.1" in result.fix
