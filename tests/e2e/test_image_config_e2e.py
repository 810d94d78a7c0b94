"""An OCI image's Env, WorkingDir and User reach the guest, as ``docker run`` applies them
(issue #22 item 6) — one real guest.

The image is the cached test image's tree as its base layer (bootable) plus a config
setting all three, built here as an OCI layout, pushed to a docker-registry inside
the harness's namespace, pulled through bangerd and the helper, and booted.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Banger
from tests.e2e.oci_images import base_layer_tar, push, registry_in
from tests.registry import write_layout
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

CONFIG = {
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_MODE=from-image",
            "GREETING=hello world"],
    "WorkingDir": "/srv/app",
    "User": "nobody",
}  # fmt: skip


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bgc-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--", str(path)], check=False)


def test_env_working_dir_and_user_apply_in_the_guest(b: Banger, work: Path) -> None:
    layout = work / "layout"
    write_layout(layout, [], tag="v1", config=CONFIG, base_tar=base_layer_tar(work / "base.tar"))
    with registry_in(b, work / "registry") as registry:
        ref = push(b, registry, layout, "test/config")
        info = json.loads(b.banger("image", "pull", ref, "--name", "cfg", "--json").stdout)
    assert info["config"] == CONFIG
    b.banger("vm", "create", "--name", "cfg", "--image", "cfg", "--init", "fast", "--start")
    try:
        # A command: the image's Env, in its WorkingDir, as its User.
        out = b.banger("vm", "ssh", "cfg", "--", "sh", "-c",
                       'echo "$APP_MODE|$GREETING|$PWD|$(id -un)|$PATH"').stdout  # fmt: skip
        assert out.strip() == "from-image|hello world|/srv/app|nobody|/usr/local/bin:/usr/bin:/bin"
        # banger's own variables win over the image's (set after sshd's SetEnv).
        mine = b.banger("vm", "ssh", "cfg", "--", "env", "APP_MODE=mine", "sh", "-c",
                        'echo "$APP_MODE"').stdout  # fmt: skip
        assert mine.strip() == "mine"
        # A login shell reads the profile: the same Env after /etc/profile reset PATH.
        login = b.banger("vm", "ssh", "cfg", "--", "bash", "-lc",
                         'echo "$GREETING|$PATH"').stdout  # fmt: skip
        assert login.strip().startswith("hello world|/usr/local/bin:/usr/bin:/bin")
        # exec (vm exec, vm run -- CMD, the SDK's run): the same defaults, as docker exec.
        assert b.banger("vm", "exec", "cfg", "--", "pwd").stdout.strip() == "/srv/app"
        assert b.banger("vm", "exec", "cfg", "--", "id", "-un").stdout.strip() == "nobody"
        env = b.banger("vm", "exec", "cfg", "--", "sh", "-c", 'echo "$APP_MODE"').stdout
        assert env.strip() == "from-image"
        # An explicit -w / -u wins (root too).
        given = b.banger("vm", "exec", "-w", "/tmp", "-u", "root", "cfg", "--", "sh", "-c",
                         'echo "$PWD|$(id -un)"').stdout  # fmt: skip
        assert given.strip() == "/tmp|root"
        # A session: in WorkingDir as User by default; an explicit --cwd wins.
        b.banger("session", "start", "cfg", "--name", "where", "--", "sh", "-c",
                 'echo "$PWD|$(id -un)"')  # fmt: skip
        where = b.banger("session", "logs", "-f", "cfg", "where", timeout=300).stdout
        assert where.replace("\r\n", "\n").strip() == "/srv/app|nobody"
        b.banger("session", "start", "cfg", "--name", "there", "--cwd", "/tmp", "--", "pwd")
        there = b.banger("session", "logs", "-f", "cfg", "there", timeout=300).stdout
        assert there.replace("\r\n", "\n").strip() == "/tmp"
    finally:
        b.banger("vm", "rm", "--force", "cfg")
    b.banger("image", "rm", "cfg")
