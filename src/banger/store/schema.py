"""The SQL of each schema version. Append new versions; never edit a shipped one.

Conventions: ids are short random hex (``secrets.token_hex(6)``); timestamps
are UTC ISO-8601 text with microseconds (text order is time order); JSON
columns are checked with ``json_valid``; sizes are bytes, memory is MiB.
"""

from __future__ import annotations

V1 = """
CREATE TABLE images (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,                -- e.g. "oci:docker.io/library/debian:12"
    digest      TEXT,                         -- content digest of the source, when known
    size        INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),   -- rootfs bytes
    created_at  TEXT NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta))
);

CREATE TABLE kernels (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    source      TEXT NOT NULL,
    version     TEXT,
    sha256      TEXT,                         -- of the kernel image file
    created_at  TEXT NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta))
);

CREATE TABLE vms (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL CHECK (state IN
                    ('creating', 'stopped', 'starting', 'running', 'stopping', 'failed',
                     'deleting')),
    -- RESTRICT: a VM's root disk is a copy-on-write view of its image.
    image_id        TEXT REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id       TEXT REFERENCES kernels (id) ON DELETE RESTRICT,
    vmm             TEXT NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
    init_mode       TEXT NOT NULL CHECK (init_mode IN ('systemd', 'fast')),
    vcpus           INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib      INTEGER NOT NULL CHECK (memory_mib >= 1),
    work_disk_size  INTEGER NOT NULL CHECK (work_disk_size > 0),
    root_strategy   TEXT,                     -- dm-snapshot | qcow2 | reflink | copy
    ip              TEXT UNIQUE,              -- mirrors ip_leases while leased
    mac             TEXT UNIQUE,
    tap             TEXT UNIQUE,
    pid             INTEGER,
    pid_start_time  INTEGER,                  -- /proc/<pid>/stat starttime (clock ticks)
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    last_error      TEXT,
    config          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config))
);
CREATE INDEX vms_by_image ON vms (image_id);
CREATE INDEX vms_by_kernel ON vms (kernel_id);

CREATE TABLE ip_leases (
    ip            TEXT PRIMARY KEY,
    vm_id         TEXT NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
    allocated_at  TEXT NOT NULL
);

CREATE TABLE operations (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,               -- e.g. "vm.start", "image.pull"
    target       TEXT,                        -- the object it acts on (id or name)
    stage        TEXT,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    error        TEXT,
    hint         TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT,
    CHECK ((state IN ('succeeded', 'failed')) = (finished_at IS NOT NULL))
);
CREATE INDEX operations_by_created ON operations (created_at);

CREATE TABLE op_events (
    op_id    TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL CHECK (seq >= 1),
    at       TEXT NOT NULL,
    kind     TEXT NOT NULL,                   -- "stage", "progress", "log", "result"...
    stage    TEXT,
    message  TEXT NOT NULL DEFAULT '',
    data     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data)),
    PRIMARY KEY (op_id, seq)
) WITHOUT ROWID;

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    vm_id        TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    command      TEXT NOT NULL CHECK (json_valid(command) AND json_type(command) = 'array'),
    state        TEXT NOT NULL CHECK (state IN ('starting', 'running', 'exited', 'failed')),
    exit_status  INTEGER,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    UNIQUE (vm_id, name)
);
"""

# v2: free-form labels on VMs (`banger vm create --label k=v`), and an index for
# the two questions asked of operations most: "what is unfinished" and "what is
# old enough to prune".
V2 = """
ALTER TABLE vms ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'
    CHECK (json_valid(labels) AND json_type(labels) = 'object');
CREATE INDEX operations_by_finished ON operations (finished_at, created_at);
"""

# v5: VM snapshots (`banger vm snapshot`, `vm create --from-snapshot`). A snapshot
# outlives the VM it was taken from, so vm_id is not a foreign key; the image and
# kernel its disks and memory depend on are (RESTRICT: not deletable under it).
# ip and mac are the guest's own, kept in its memory: a restore takes that lease.
V5 = """
CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    vm_id           TEXT NOT NULL,
    vm_name         TEXT NOT NULL,
    vmm             TEXT NOT NULL CHECK (vmm IN ('firecracker', 'qemu')),
    image_id        TEXT REFERENCES images (id) ON DELETE RESTRICT,
    kernel_id       TEXT REFERENCES kernels (id) ON DELETE RESTRICT,
    init_mode       TEXT NOT NULL CHECK (init_mode IN ('systemd', 'fast')),
    vcpus           INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib      INTEGER NOT NULL CHECK (memory_mib >= 1),
    work_disk_size  INTEGER NOT NULL CHECK (work_disk_size > 0),
    ip              TEXT NOT NULL,
    mac             TEXT NOT NULL,
    size            INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    created_at      TEXT NOT NULL,
    meta            TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta))
);
CREATE INDEX snapshots_by_vm ON snapshots (vm_id);
CREATE INDEX snapshots_by_image ON snapshots (image_id);
CREATE INDEX snapshots_by_kernel ON snapshots (kernel_id);
"""

# v6: pools of ready guests (`banger pool set`). A pool names its image and kernel
# by the ref it was given (NULL: the default, followed as it changes); the template
# snapshot and the key it was made under are the pool service's to replace, so
# template_id is not a foreign key. A VM that is a pool's ready guest names the
# pool in vms.pool; taking it clears the column (the VM is then the user's).
V6 = """
CREATE TABLE pools (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    image           TEXT,
    kernel          TEXT,
    init_mode       TEXT NOT NULL CHECK (init_mode IN ('systemd', 'fast')),
    vcpus           INTEGER NOT NULL CHECK (vcpus >= 1),
    memory_mib      INTEGER NOT NULL CHECK (memory_mib >= 1),
    work_disk_size  INTEGER NOT NULL CHECK (work_disk_size > 0),
    size            INTEGER NOT NULL CHECK (size >= 0),
    template_id     TEXT,
    template_key    TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
ALTER TABLE vms ADD COLUMN pool TEXT;
CREATE INDEX vms_by_pool ON vms (pool);
"""
