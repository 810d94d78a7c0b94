"""banger-helper: the only part of banger that runs as root.

It serves one owner uid over a Unix socket (JSON lines, ``SO_PEERCRED``
checked, see :mod:`.protocol`) and knows a fixed list of operations: one
immutable table built at start (:mod:`.optable`: each op's argument spec,
handler and lock). Every argument is re-validated (:mod:`.validate`); no shell
is ever run; every command goes through :mod:`banger.proc`.

What it imports: at start only the standard library, pyroute2 (which brings
psutil) and banger's stdlib-only modules (``proc``, ``errors``, ``paths``,
``delay_spec``; ``tests/unit/test_helper_main.py`` checks this). The image ops
load the image builder and the OCI flattener (:mod:`banger.images`, with
zstandard) when first run, the jailer ops :mod:`banger.vmm.firecracker.jailer`.
It never imports the daemon, the store or the owner's config
(``tests/unit/test_import_rules.py``).

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
``image_build(suite, name, out_dir, mirror)`` / ``image_pull(out_dir, name, source, …)``
    Build ``debian:<suite>`` with mmdebstrap, or flatten fetched OCI layers,
    into a root-only stage and publish the finalized image into the owner's
    empty ``out_dir`` (chroots, device nodes and file ownership need root;
    :mod:`.image_build`, :mod:`.image_pull`, :mod:`.rootstage`).
``remove_staging(path)``
    Remove a ``tmp/register-…`` or ``tmp/pull-…`` stage an interrupted image op
    left with root's files in it (:mod:`.staging`).
``dm_snapshot_create(vm_id, origin, cow)`` / ``dm_snapshot_remove(vm_id)``
    A VM's raw root disk as a device-mapper snapshot ``banger-<vm_id>``: the
    image rootfs on a read-only loop device, the VM's cow file on a read-write
    one, both attached to descriptors the helper opened and checked; the node
    is given to the owner. Loop devices and ``dmsetup`` need ``CAP_SYS_ADMIN``
    (:mod:`.dm_ops`, builders in :mod:`banger.disk.dmsnap`).
``start_jailer(…)`` / ``teardown_jail(vm_id)``
    Start Firecracker under its jailer (which must start as root), with the
    binaries, uid and chroot base fixed by the helper's own flags, and remove
    a VM's jail (:mod:`.jailer_ops`).

Path arguments (for future ops: loop/dm devices, image mounts) are checked by
:func:`.validate.checked_path` against the ``--allow-root`` directories.
"""
