"""bangerd's HTTP API on its Unix socket: the app, its routers, errors, and how it is served.

- :mod:`.app`: the FastAPI app built from :class:`~banger.daemon.services.Services`;
- one module of thin handlers per area: :mod:`.meta` (``/v1/version``,
  ``/dns``, ``/config``, ``/ops``), :mod:`.vms` (``/v1/vms``, ``/images``,
  ``/kernels``), :mod:`.vm_control` (pause/resume), :mod:`.stats` (stats,
  ``vm set``), :mod:`.workspace`, :mod:`.sessions`, :mod:`.snapshots`,
  :mod:`.images` (pull, export, promote, prune), :mod:`.network`
  (cleanup), :mod:`.exec` (the exec WebSocket), :mod:`.files` (SFTP);
- :mod:`.errors`: every error as ``{"error", "hint", "kind"}``;
- :mod:`.listener` (the socket, owner-only from the first instant),
  :mod:`.peer` (``SO_PEERCRED``: the owner and root only) and :mod:`.server`
  (uvicorn on the bound socket; drain, then force).
"""
