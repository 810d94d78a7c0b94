"""``banger system uninstall`` and the helper's runtime directory (against a --prefix tree).

systemd keeps the runtime directory after the units stop (the helper unit's
RuntimeDirectoryPreserve=) and never removes it once they are gone, so
uninstall does: when it is empty, it is no data. Found by running the install
under a real systemd (tests/e2e/test_system_install_guest.py, which checks the
same with the real units).
"""

from __future__ import annotations

from pathlib import Path

from banger.system.install import install, resolve_owner, uninstall


def test_uninstall_removes_the_empty_runtime_dir(short_tmp: Path) -> None:
    install(resolve_owner(None), short_tmp, runtime_dir=Path("/run/banger-t1"))
    runtime = short_tmp / "run/banger-t1"
    runtime.mkdir(parents=True)  # as systemd leaves it once the services stopped
    removed = uninstall(short_tmp)
    assert runtime in removed and not runtime.exists()
    assert (short_tmp / "run").is_dir()  # only the directory banger's units own


def test_uninstall_keeps_a_runtime_dir_that_still_holds_something(short_tmp: Path) -> None:
    install(resolve_owner(None), short_tmp, runtime_dir=Path("/run/banger-t2"))
    runtime = short_tmp / "run/banger-t2"
    runtime.mkdir(parents=True)
    (runtime / "bangerd.sock").write_text("")  # a service that did not stop
    removed = uninstall(short_tmp)
    assert runtime not in removed and (runtime / "bangerd.sock").exists()
