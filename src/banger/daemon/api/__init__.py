"""bangerd's HTTP API on its Unix socket: the app, its routers, errors, and how it is served.

- :mod:`.app`: the FastAPI app built from :class:`~banger.daemon.services.Services`,
  one router per URL prefix, each built in the module named for it:
  :mod:`.meta` (``/v1``: version, dns, config), :mod:`.ops` (``/v1/ops``),
  :mod:`.vms` (``/v1/vms``: a package, one module per concern),
  :mod:`.images` (``/v1/images``), :mod:`.kernels` (``/v1/kernels``),
  :mod:`.sessions` (``/v1/sessions``), :mod:`.snapshots` (``/v1/snapshots``),
  :mod:`.network` (``/v1/network``); :mod:`.exec` (the exec WebSocket) and
  :mod:`.files` (SFTP) serve ``/v1/vms/{ref}/exec`` and ``…/files`` with routers
  of their own for now;
- :mod:`.errors`: every error as ``{"error", "hint", "kind"}``;
- :mod:`.listener` (the socket, owner-only from the first instant),
  :mod:`.peer` (``SO_PEERCRED``: the owner and root only) and :mod:`.server`
  (uvicorn on the bound socket; drain, then force).
"""
