"""What another local user can do to banger's sockets and files: run as that user.

:data:`PROBE` is a self-contained script (stdlib only, so it runs under any
uid) that tries each target and prints one JSON object: for a socket, the
connect errno or what came back (reply bytes and how many descriptors rode
along); for a file, the open errno or the byte count it could read.
:func:`probe_as` runs it with ``setpriv`` as the given user, no supplementary
groups, a clean environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import User

PYTHON = Path(sys.executable)

PROBE = r"""
import array, json, os, socket, sys

def talk(path, payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
    except OSError as e:
        return {"errno": e.errno}
    fds, data = 0, b""
    try:
        s.sendall(payload)
        while True:
            msg, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i", blob[: len(blob) - len(blob) % 4])
                    fds += len(got)
                    for fd in got:
                        os.close(fd)
            if not msg:
                break
            data += msg
    except OSError as e:
        err = e.errno
    else:
        err = None
    finally:
        s.close()
    return {"connected": True, "errno": err, "reply": data.decode("utf-8", "replace"), "fds": fds}

def read(path):
    try:
        with open(path, "rb") as f:
            return {"read": len(f.read())}
    except OSError as e:
        return {"errno": e.errno}

out = {}
for spec in json.loads(sys.argv[1]):
    kind, key, path = spec[0], spec[1], spec[2]
    if kind == "socket":
        out[key] = talk(path, spec[3].encode())
    else:
        out[key] = read(path)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Target:
    key: str
    path: Path
    #: Bytes to send after connecting (sockets only); None means "read the file".
    payload: str | None = None

    def spec(self) -> list[str]:
        if self.payload is None:
            return ["file", self.key, str(self.path)]
        return ["socket", self.key, str(self.path), self.payload]


def http_get(path: str) -> str:
    return f"GET {path} HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n\r\n"


def helper_request(op: str, **args: Any) -> str:
    return json.dumps({"id": 1, "op": op, "args": args}) + "\n"


def probe_as(
    user: User, targets: list[Target], *, prefix: list[str] | None = None
) -> dict[str, Any]:
    """Run :data:`PROBE` as ``user`` (optionally inside ``prefix``, e.g. a netns)."""
    argv = [
        *(prefix or []),
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "env",
        "-i",
        f"HOME={user.home}",
        "PATH=/usr/bin:/bin",
        str(PYTHON),
        "-I",
        "-c",
        PROBE,
        json.dumps([t.spec() for t in targets]),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result
