"""Commands whose work lands later: they say so plainly and exit non-zero."""

from __future__ import annotations

from collections.abc import Sequence

import click

from banger.errors import BangerError

#: Exit status of a command that exists in the CLI but not yet in banger.
NOT_IMPLEMENTED_EXIT = 1


class NotImplementedYet(BangerError):
    exit_code = NOT_IMPLEMENTED_EXIT


def placeholder_command(group: str, name: str, help_text: str) -> click.Command:
    @click.command(
        name=name,
        help=f"{help_text} (not implemented yet)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def command() -> None:
        raise NotImplementedYet(
            f"`banger {group} {name}` is not implemented yet",
            hint="this command is planned; see docs/ARCHITECTURE.md for what exists today",
        )

    return command


def add_placeholders(group: click.Group, commands: Sequence[tuple[str, str]]) -> None:
    for name, help_text in commands:
        group.add_command(placeholder_command(group.name or "?", name, help_text))
