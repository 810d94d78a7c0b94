"""First use, the image half: `vm run` on a home with no image builds the default one by itself.

README's quick start promises that the first ``vm run`` needs nothing but a
kernel: ``vm.image = "debian:bookworm"`` names an image that is not there, so
the daemon's ImageService builds it (the root helper's ``image_build``:
mmdebstrap, then ext4) as a stage of the run, then boots it. Every other guest
test registers the cached image explicitly; this one lets the run build it.

The namespace has no uplink: the helper's apt is given an HTTP proxy on the
namespace's loopback, a relay that leads to the host's mirror only
(tests/e2e/mirror_relay.py); a request for anything else reaches the mirror's
server and fails there.
Slow: a real Debian build (minutes) and a TCG boot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from banger.images.aptsources import resolve_debian_mirror
from tests.e2e.harness import KERNEL_NAME, Banger, banger_env
from tests.e2e.leftovers import assert_nothing_left
from tests.kernel_cache import cached_debian_kernel
from tests.reliability.faults import restart_helper, stop_helper
from tests.support import needs_root, short_tmpdir

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

RELAY = Path(__file__).with_name("mirror_relay.py")
PROXY_PORT = "3128"


def _relay(argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", "the mirror relay did not start"
    return proc


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    mirror = urlsplit(resolve_debian_mirror(None))
    if mirror.scheme != "http" or mirror.port not in (None, 80):
        pytest.skip(f"the relay speaks http on port 80; the host's mirror is {mirror.geturl()}")
    host = mirror.hostname
    assert host is not None
    kernel = cached_debian_kernel()
    with banger_env(seed=False) as env, short_tmpdir("bgm-") as tmp:
        sock = tmp / "relay.sock"
        outside = _relay([sys.executable, str(RELAY), "outside", str(sock), host, "80"])
        inside = _relay(env.ns.argv(sys.executable, str(RELAY), "inside", PROXY_PORT, str(sock)))
        try:
            # apt (run by mmdebstrap, run by the helper) sends its requests to the
            # proxy named here, which is the relay: only the mirror is reachable.
            stop_helper(env)
            restart_helper(env, http_proxy=f"http://127.0.0.1:{PROXY_PORT}")
            env.banger("kernel", "import", str(kernel / "vmlinuz"), "--initrd",
                       str(kernel / "initrd.img"), "--name", KERNEL_NAME)  # fmt: skip
            env.banger("kernel", "default", KERNEL_NAME)
            yield env
        finally:
            for proc in (inside, outside):
                proc.kill()
                proc.communicate()  # reaps it and closes its stdout pipe


def images(b: Banger) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(b.banger("image", "list", "--json").stdout)
    return listed


def test_first_vm_run_builds_the_default_image_then_boots_it(b: Banger) -> None:
    assert images(b) == []
    result = b.banger(
        "vm", "run", "--init", "fast", "--rm", "--", "cat", "/etc/debian_version", timeout=3600
    )
    assert result.stdout.strip().startswith("12."), result.stdout  # bookworm
    # The wait is explained, then shown as its own stage.
    assert "note: image debian:bookworm is not here yet: building it" in result.stderr
    [image] = images(b)
    assert image["name"] == "debian-bookworm" and str(image["source"]).startswith("debian:")
    assert_nothing_left(b)  # --rm: the VM is gone; the built image stays (not a leak)
    # The next run uses it: no second build.
    again = b.banger("vm", "run", "--init", "fast", "--rm", "--", "true", timeout=1200)
    assert "not here yet" not in again.stderr
    assert len(images(b)) == 1
