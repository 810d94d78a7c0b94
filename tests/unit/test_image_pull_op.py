"""The helper's ``image_pull`` op refuses anything but exactly what the daemon sends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from banger.helper.optable import op_specs, op_table
from banger.helper.validate import Context, RequestInvalid, validate_request

DIGEST = "sha256:" + "ab" * 32


#: The helper's op table, as banger-helper builds it.
SPECS = op_specs(op_table(None))


def args(root: Path, **changes: Any) -> dict[str, Any]:
    out = root / "tmp" / "pull-1"
    out.mkdir(parents=True, exist_ok=True)
    base = {
        "out_dir": str(out),
        "name": "app-1.2",
        "source": f"127.0.0.1:5000/team/app:1.2@{DIGEST}",
        "layers": [DIGEST],
        "config": {"Env": ["A=1"], "WorkingDir": "/srv", "User": "app"},
        "max_unpacked": 64 << 30,
    }
    return {**base, **changes}


def check(root: Path, a: dict[str, Any]) -> Any:
    request = {"id": 1, "op": "image_pull", "args": a}
    return validate_request(Context((root,)), request, SPECS).args


def test_the_daemons_request_is_accepted(tmp_path: Path) -> None:
    got = check(tmp_path, args(tmp_path))
    assert got.layers == (DIGEST,) and got.name == "app-1.2"
    archive = check(tmp_path, args(tmp_path, source=f"oci-archive:/srv/a.tar@{DIGEST}"))
    assert archive.source.startswith("oci-archive:")


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("source", "--authfile=/etc/shadow@" + DIGEST, "starts with '-'"),
        ("source", "dir:/etc@" + DIGEST, "not supported"),
        ("source", "debian:bookworm", "@sha256"),
        ("source", "a\nb@" + DIGEST, "printable"),
        ("layers", [], "1-256"),
        ("layers", ["sha256:../../etc/passwd"], "sha256"),
        ("layers", "sha256:" + "ab" * 32, "list"),
        ("config", {"Env": [], "WorkingDir": "/", "User": "", "Cmd": ["x"]}, "exactly"),
        ("config", {"Env": ["A=\x00"], "WorkingDir": "/", "User": ""}, "printable"),
        ("config", {"Env": "A=1", "WorkingDir": "/", "User": ""}, "list"),
        ("max_unpacked", 0, "between"),
        ("max_unpacked", 1 << 50, "between"),
        ("max_unpacked", "64G", "number of bytes"),
        ("max_unpacked", True, "number of bytes"),
        ("name", "../x", "match"),
        ("out_dir", "/etc", "allowed root"),
    ],
)
def test_bad_fields_are_refused_by_name(tmp_path: Path, field: str, value: Any, why: str) -> None:
    with pytest.raises(RequestInvalid) as err:
        check(tmp_path, args(tmp_path, **{field: value}))
    assert f"image_pull.args.{field}" in str(err.value) and why in str(err.value)


def test_a_symlinked_out_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(RequestInvalid, match="symlink"):
        check(tmp_path, args(tmp_path, out_dir=str(tmp_path / "link")))
