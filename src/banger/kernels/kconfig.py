"""Kconfig ``.config`` text: parse, merge a fragment into it, check what stuck.

``banger kernel build`` starts from ``make tinyconfig``, merges banger's
fragment (:data:`MICROVM_CONFIG`) over it, lets ``make olddefconfig`` settle
the dependencies, then asks :func:`unmet_options`: Kconfig drops a requested
option silently when a dependency is off (VMGENID without DMI, for one), and a
kernel missing one boots into a panic or a guest without a device. So the
build fails with the list instead. Pure functions: what the unit tests check.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

#: banger's microVM fragment, shipped beside this module.
MICROVM_CONFIG = "microvm.config"

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")

#: An option's value: the text after ``=`` (``y``, ``64``, ``"-banger"``), or None for "is not set".
Options = dict[str, str | None]


def parse_config(text: str) -> Options:
    """Every ``CONFIG_X=v`` and ``# CONFIG_X is not set`` line, in order; later lines win.

    Other comments and blank lines are ignored; so is anything else, as Kconfig does.
    """
    options: Options = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _SET.match(line):
            options[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            options[m.group(1)] = None
    return options


def render_config(options: Options) -> str:
    return "".join(
        f"# {name} is not set\n" if value is None else f"{name}={value}\n"
        for name, value in options.items()
    )


def merge_config(base: str, fragment: str) -> str:
    """``base`` with every option of ``fragment`` set as the fragment says (the fragment wins).

    What ``scripts/kconfig/merge_config.sh -m`` does; ``make olddefconfig`` then
    resolves what the merged options select or depend on.
    """
    merged = parse_config(base)
    merged.update(parse_config(fragment))
    return render_config(merged)


def unmet_options(requested: Options, final: Options) -> list[str]:
    """The requested options the final config does not have as requested, one line each.

    An option absent from the final ``.config`` counts as "not set" (Kconfig does
    not even write an option whose menu is off), so a requested "is not set" is
    met by absence.
    """
    unmet = []
    for name, want in requested.items():
        have = final.get(name)
        if have == want:
            continue
        if want is None:
            unmet.append(f"{name} is not set (got {name}={have})")
        else:
            got = "not set" if have is None else f"{name}={have}"
            unmet.append(f"{name}={want} (got {got})")
    return unmet


def with_additions(base: str, extra: str, where: str) -> str:
    """``base`` with the options of ``extra`` (a user's fragment) added after it.

    Additions only: an option ``base`` sets may be repeated as it is, never changed
    or turned off — every one of banger's is there because its guests need it (a
    disk, the network, the console, PVH, ip=). One :class:`ValueError` naming each
    such option, or when ``extra`` asks for nothing.
    """
    wanted, added = parse_config(base), parse_config(extra)
    if not added:
        raise ValueError(f"{where} has no CONFIG_ option lines")
    changed = [
        f"{name}={'n' if value is None else value} (banger's fragment: "
        f"{'n' if wanted[name] is None else wanted[name]})"
        for name, value in added.items()
        if name in wanted and wanted[name] != value
    ]
    if changed:
        raise ValueError(
            f"{where} changes options banger's microVM guests need: " + "; ".join(changed)
        )
    return base.rstrip("\n") + f"\n\n# --- added from {where} ---\n" + render_config(added)


def fragment_text(name: str = MICROVM_CONFIG) -> str:
    """A fragment shipped with banger (``microvm.config``)."""
    return resources.files("banger.kernels").joinpath(name).read_text()


def config_hash(fragment: str) -> str:
    """What a fragment asks for, hashed: comments and option order do not change a build."""
    options = parse_config(fragment)
    return hashlib.sha256(render_config(dict(sorted(options.items()))).encode()).hexdigest()
