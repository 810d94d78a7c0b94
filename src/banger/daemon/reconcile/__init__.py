"""bangerd's startup reconciliation: the store compared with the host, repaired, reported.

- :mod:`.startup`: the two passes, :func:`~.startup.before_serving` (operations
  and files, before the socket answers) and :func:`~.startup.after_stack` (VMs,
  VMM processes, taps, leases, once the VM stack exists), and their report;
- :mod:`.files`: temp builds, half-published artifacts, per-VM leftovers;
- :mod:`.probe`: this owner's VMM processes, read from ``/proc``.

The report they write is :mod:`banger.doctor.reconcile_report` (``banger
doctor`` reads it).
"""
