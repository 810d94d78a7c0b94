"""banger-helper: the only part of banger that runs as root.

It serves one owner uid over a Unix socket (JSON lines, ``SO_PEERCRED``
checked, see :mod:`.protocol`) and knows a short, fixed list of operations.
Every argument is re-validated (:mod:`.validate`); no shell is ever run; every
command goes through :mod:`banger.proc`. It imports only the standard library,
pyroute2 and banger's stdlib-only modules (``proc``, ``errors``, ``paths``).

Operations, and why each needs root:

``ping`` / ``version``
    Liveness and version (no privilege; lets ``banger doctor`` check the helper).
``ensure_bridge(name, cidr)``
    Create the bridge (marked with the alias ``banger-managed``), give it the
    gateway address ``cidr`` (e.g. ``172.30.0.1/24``), bring it up.
    Creating links and addresses needs ``CAP_NET_ADMIN``.
``open_tap(name, bridge)``
    Create or reopen the persistent tap ``bt-…`` (``IFF_TAP|IFF_NO_PI|
    IFF_VNET_HDR``, owned by the owner uid), attach it to the bridge, bring it
    up and hand back an open descriptor with ``SCM_RIGHTS``. ``/dev/net/tun``
    is root-only on these machines, so the owner's VMM cannot open it; QEMU
    takes the descriptor as ``-netdev tap,fd=N`` (libvirt's model).
``delete_tap(name)``
    Remove a ``bt-…`` tap (``CAP_NET_ADMIN``).
``ensure_nat(cidr, bridge)``
    Masquerade the bridge subnet ``cidr`` (e.g. ``172.30.0.0/24``) in the nft
    table ``ip banger`` (rewritten atomically in one transaction) and enable
    ``net.ipv4.ip_forward``: netfilter and sysctls need ``CAP_NET_ADMIN``.
    Only for an existing banger bridge (``lo``, an uplink or a missing name is
    refused before anything changes).
``teardown_network(bridge)``
    Delete the bridge's ``bt-…`` taps, the bridge, and its NAT entries (the
    table goes with the last entry); idempotent. The daemon asks for it in
    ``banger system cleanup-network``.
``bind_dns(cidr)``
    Bind UDP and TCP sockets on ``<gateway>:53`` (the exact address of a
    banger bridge, nothing else) and hand both back with ``SCM_RIGHTS``; the
    daemon serves the VM resolver on them. Ports below 1024 need
    ``CAP_NET_BIND_SERVICE``. (:mod:`.ops_dns`)
``resolver_link(bridge, cidr, domain)``
    Where the host runs systemd-resolved: ``resolvectl dns/domain/default-route``
    on the bridge so the host resolves ``~domain`` through the VM resolver;
    elsewhere ``{"configured": false, "reason": ...}`` for ``doctor``.

Path arguments (for future ops: loop/dm devices, image mounts) are checked by
:func:`.validate.checked_path` against the ``--allow-root`` directories.
"""
