"""How the CLI shows one image: its fields, or its JSON with ``--json``.

Its own module because ``image show``/``register``/``build``/``default``
(:mod:`banger.cli.image_cmd`) and ``image pull``/``promote``
(:mod:`banger.cli.image_transfer`) all end by showing the image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from banger.cli.output import print_fields, print_json

if TYPE_CHECKING:
    from banger.api_models import ImageInfo
    from banger.cli.state import CliState

MIB = 1024 * 1024


def print_image(state: CliState, info: ImageInfo) -> None:
    if state.json:
        print_json(info.model_dump(mode="json"))
        return
    print_fields(
        [
            ("name", info.name + (" (default)" if info.default else "")),
            ("id", info.id),
            ("source", info.source),
            ("description", info.description or None),
            ("digest", info.digest),
            ("created", info.created_at.isoformat(timespec="seconds") if info.created_at else None),
            (
                "size",
                f"{info.size // MIB} MiB on disk, rootfs {info.rootfs_size // MIB} MiB,"
                f" work seed {info.work_seed_size // MIB} MiB",
            ),
            ("init modes", ", ".join(info.init_modes)),
            *config_fields(info),
            ("rootfs", info.rootfs),
            ("work seed", info.work_seed),
            ("used by", ", ".join(info.used_by) or None),
        ]
    )


def config_fields(info: ImageInfo) -> list[tuple[str, str | None]]:
    """The OCI process config an image author set (recorded, shown, not enforced)."""
    config = info.config
    if not config:
        return []
    env = config.get("Env") or []
    return [
        ("user", str(config.get("User") or "") or None),
        ("working dir", str(config.get("WorkingDir") or "") or None),
        ("env", " ".join(str(e) for e in env) or None),
    ]
