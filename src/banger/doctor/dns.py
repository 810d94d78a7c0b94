"""The ``vm dns`` doctor check: does bangerd answer for ``<vm>.<domain>``, and does the host ask it?

Guests always use bangerd's resolver (the guest contract points them at the
bridge). Host programs only find ``<vm>.banger`` when the host's resolver
routes the domain to the bridge: the helper sets that up where the host uses
systemd-resolved; elsewhere the user has to, and this check says exactly what
to configure.

:func:`decide` is the decision table (pure, over :class:`DNSFacts`);
:func:`check_vm_dns` gathers the facts: bangerd's ``GET /v1/dns``, whether
systemd-resolved runs here, and the configured bridge and domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banger.doctor.model import CheckResult
from banger.system.probes import PROBE_TIMEOUT, probe_daemon

if TYPE_CHECKING:
    from banger.doctor.model import DoctorContext
    from banger.paths import Paths

NAME = "vm dns"
#: Present while systemd-resolved runs (the helper tests the same directory).
RESOLVED_RUN_DIR = Path("/run/systemd/resolve")


@dataclass(frozen=True)
class DNSFacts:
    """What the check knows: ``report`` is bangerd's ``GET /v1/dns`` body, when it answered."""

    daemon_up: bool
    #: Why there is no report (daemon not running, or it did not answer /v1/dns).
    daemon_detail: str
    report: dict[str, Any] | None
    host_uses_resolved: bool
    #: From the config; the report's values win when there is one.
    address: str
    bridge: str
    domain: str


def manual_fix(address: str, bridge: str, domain: str) -> str:
    """What to configure on a host whose resolver banger cannot set up itself."""
    return (
        f"send `{domain}` lookups to {address}: dnsmasq or NetworkManager (dns=dnsmasq) "
        f"`server=/{domain}/{address}` (e.g. /etc/NetworkManager/dnsmasq.d/banger.conf); "
        f'unbound `forward-zone: name: "{domain}." forward-addr: {address}`; '
        f"systemd-resolved `resolvectl dns {bridge} {address}; resolvectl domain {bridge} "
        f"~{domain}`. Otherwise use `banger vm ssh NAME` from the host: `<vm>.{domain}` "
        "resolves inside guests regardless"
    )


def _text(report: dict[str, Any], key: str, default: str) -> str:
    value = report.get(key)
    return value if isinstance(value, str) and value else default


def decide(facts: DNSFacts) -> CheckResult:
    """The check's result for ``facts`` (the decision table, tested row by row)."""
    report = facts.report
    if report is None:
        address, bridge, domain = facts.address, facts.bridge, facts.domain
    else:
        address = _text(report, "address", facts.address)
        bridge = _text(report, "bridge", facts.bridge)
        domain = _text(report, "domain", facts.domain)
    fix = manual_fix(address, bridge, domain)
    host_side = (
        f"systemd-resolved runs here: the helper routes ~{domain} to {address} "
        "when the resolver starts"
    )
    no_resolved = (
        f"this host does not use systemd-resolved, so host programs will not resolve <vm>.{domain}"
    )

    if not facts.daemon_up:
        if facts.host_uses_resolved:
            return CheckResult(NAME, "pass", f"skipped: {facts.daemon_detail}; {host_side}")
        return CheckResult(NAME, "warn", f"{facts.daemon_detail}; {no_resolved}", fix)
    if report is None:
        return CheckResult(
            NAME,
            "warn",
            f"bangerd did not report its resolver: {facts.daemon_detail}",
            "restart bangerd so it runs this version (`banger system restart`, or stop it: "
            "the CLI starts it again)",
        )

    error = report.get("error")
    if isinstance(error, str) and error:
        return CheckResult(
            NAME,
            "warn",
            f"bangerd's resolver is not serving: {error}; guests cannot resolve names",
            "check the helper (see the helper check) and bangerd's log, then restart bangerd "
            "(`banger system restart`, or stop it: the CLI starts it again)",
        )

    if report.get("serving") is not True:
        waiting = (
            f"not started yet: bangerd serves {domain} on {address}:53 from the first VM start"
        )
        if facts.host_uses_resolved:
            return CheckResult(NAME, "pass", f"{waiting}; {host_side}")
        return CheckResult(NAME, "warn", f"{waiting}; {no_resolved}", fix)

    serving = f"bangerd answers for <vm>.{domain} on {address}:53"
    link = report.get("host_link")
    if isinstance(link, dict) and link.get("configured") is True:
        return CheckResult(
            NAME, "pass", f"{serving}; systemd-resolved routes ~{domain} there via {bridge}"
        )
    reason = link.get("reason") if isinstance(link, dict) else None
    why = reason if isinstance(reason, str) and reason else "the helper did not report why"
    return CheckResult(
        NAME,
        "warn",
        f"{serving} (guests use it), but the host resolver does not route {domain} there: {why}",
        fix,
    )


def fetch_report(socket_path: Path) -> tuple[bool, str, dict[str, Any] | None]:
    """(daemon up, why no report, ``GET /v1/dns`` body or None); never starts bangerd."""
    probe = probe_daemon(socket_path)
    if not probe.up:
        return False, f"bangerd is not running ({probe.detail})", None
    import httpx  # lazily, like the daemon probe

    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), timeout=PROBE_TIMEOUT
        ) as client:
            response = client.get("http://bangerd/v1/dns")
    except httpx.HTTPError as exc:
        return True, f"GET /v1/dns failed: {exc}", None
    if response.status_code != 200:
        return True, f"GET /v1/dns answered {response.status_code}", None
    try:
        body = response.json()
    except ValueError:
        return True, "GET /v1/dns did not answer JSON", None
    if not isinstance(body, dict):
        return True, "GET /v1/dns did not answer an object", None
    return True, "", body


def configured_network(paths: Paths) -> tuple[str, str, str]:
    """(gateway, bridge, domain) from the config; defaults when it cannot be read."""
    from banger.config import Config, load_config
    from banger.errors import BangerError

    try:
        config = load_config(paths=paths)
    except BangerError:  # the config check reports the problem
        config = Config()
    net = config.network
    return str(net.gateway), net.bridge, net.dns_domain


def gather_facts(paths: Paths, *, resolved_run_dir: Path = RESOLVED_RUN_DIR) -> DNSFacts:
    up, detail, report = fetch_report(paths.daemon_socket)
    address, bridge, domain = configured_network(paths)
    return DNSFacts(
        daemon_up=up,
        daemon_detail=detail,
        report=report,
        host_uses_resolved=resolved_run_dir.is_dir(),
        address=address,
        bridge=bridge,
        domain=domain,
    )


def check_vm_dns(ctx: DoctorContext) -> CheckResult:
    return decide(gather_facts(ctx.paths))
