"""Disk images without mounting and without root.

- :mod:`banger.disk.debugfs_script` — pure builder of debugfs batches (quoting,
  planning against the image's state, per-command error attribution);
- :mod:`banger.disk.ext4` — applies a batch in one ``debugfs -w`` run and reads
  images back (``ls -p``, ``cat``);
- :mod:`banger.disk.workdisk` — the per-VM work disk (``/root`` in the guest):
  created from the image's seed, grown, provisioned;
- :mod:`banger.disk.cow` — copy-on-write root disks and the choice of strategy;
- :mod:`banger.disk.sync_plan` — ``[[file_sync]]`` planned into work-disk items
  (host side read and checked before any write), and
  :mod:`banger.disk.gitidentity` — the owner's git identity merged into the
  guest's ``/root/.gitconfig``: what the work disk's provisioning batch writes;
- :mod:`banger.disk.durable` — publish by rename after fsync.
"""
