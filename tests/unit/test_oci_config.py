"""OCI manifest and image config parsing."""

from __future__ import annotations

import json

import pytest

from banger.images.oci.config import BadImage, ImageConfig, parse_config, parse_manifest

D = "sha256:" + "cd" * 32


def test_config_keeps_env_workdir_user() -> None:
    process = {"Env": ["A=1", "B=2"], "WorkingDir": "/app", "User": "1000:1000"}
    doc = {"os": "linux", "architecture": "amd64", "config": process}
    config = parse_config(json.dumps(doc).encode())
    assert config == ImageConfig(("A=1", "B=2"), "/app", "1000:1000")
    assert config.summary() == "User=1000:1000; WorkingDir=/app; Env=A=1 B=2"
    assert config.to_json() == {"Env": ["A=1", "B=2"], "WorkingDir": "/app", "User": "1000:1000"}
    assert parse_config(b'{"os": "linux", "architecture": "amd64"}').summary() == (
        "User=root; WorkingDir=/"
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"os": "linux", "architecture": "arm64"},
        {"os": "windows", "architecture": "amd64"},
        {"os": "linux", "architecture": "amd64", "config": {"Env": "A=1"}},
        [],
    ],
)
def test_bad_configs(doc: object) -> None:
    with pytest.raises(BadImage):
        parse_config(json.dumps(doc).encode())


def test_manifest_layers_in_order_and_checked() -> None:
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D, "size": 3}
    doc = {"config": {"digest": D}, "layers": [layer, {**layer, "size": "x"}]}
    manifest = parse_manifest(json.dumps(doc).encode())
    assert manifest.config_digest == D and [x.size for x in manifest.layers] == [3, 0]
    bad_type = {"config": {"digest": D}, "layers": [{**layer, "mediaType": "text/plain"}]}
    with pytest.raises(BadImage, match=r"layers\[0\].mediaType"):
        parse_manifest(json.dumps(bad_type).encode())
    bad_digest = {"config": {"digest": D}, "layers": [{**layer, "digest": "sha256:../x"}]}
    with pytest.raises(BadImage, match=r"layers\[0\].digest"):
        parse_manifest(json.dumps(bad_digest).encode())
