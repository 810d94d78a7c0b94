"""An exec or a session without cwd/user gets the image's WorkingDir and User, as
``docker exec`` does; an explicit cwd or user wins (issue #22 item 6). The guest side
is tested in tests/e2e/test_image_config_e2e.py."""

from __future__ import annotations

import pytest

from banger.daemon.guestexec import ExecSpec, with_image_defaults
from banger.errors import InvalidArgument
from banger.guest.session_scripts import GuestLayout, run_file
from banger.images.oci.guestenv import GuestEnv

IMAGE = GuestEnv(env=(), skipped=(), working_dir="/srv/app", user="nobody")
NUMERIC = GuestEnv(env=(), skipped=(), working_dir="", user="1000:50")
PLAIN = GuestEnv(env=(), skipped=(), working_dir="", user="")


def test_a_request_without_cwd_or_user_gets_the_images() -> None:
    spec = with_image_defaults(ExecSpec(["pwd"]), IMAGE)
    assert (spec.cwd, spec.user, spec.image_user) == ("/srv/app", None, "nobody")
    assert spec.script("id1") == (
        "export BANGER_EXEC_ID=id1\ncd -- /srv/app || exit 1\n"
        "exec /usr/sbin/runuser -u nobody -- pwd"
    )


@pytest.mark.parametrize("user", ["root", "alice"])
def test_an_explicit_cwd_and_user_win(user: str) -> None:
    spec = with_image_defaults(ExecSpec("echo $PWD", cwd="/tmp", user=user), IMAGE)
    assert (spec.cwd, spec.user, spec.image_user) == ("/tmp", user, None)
    script = spec.script("id1")
    assert "cd -- /tmp || exit 1" in script and "nobody" not in script
    assert ("runuser -u alice --" in script) == (user == "alice")


def test_one_default_each() -> None:
    only_cwd = with_image_defaults(ExecSpec(["id"], cwd="/w"), IMAGE)
    assert (only_cwd.cwd, only_cwd.image_user) == ("/w", "nobody")
    only_user = with_image_defaults(ExecSpec(["id"], user="root"), IMAGE)
    assert (only_user.cwd, only_user.image_user) == ("/srv/app", None)


def test_a_numeric_user_and_an_image_without_config() -> None:
    spec = with_image_defaults(ExecSpec(["id"]), NUMERIC)
    assert spec.cwd is None
    assert spec.script("x").endswith(
        "exec /usr/bin/setpriv --reuid=1000 --regid=50 --clear-groups -- id"
    )
    for image in (PLAIN, None):
        same = with_image_defaults(ExecSpec(["id"]), image)
        assert (same.cwd, same.user, same.image_user) == (None, None, None)
        assert same.script("x") == "export BANGER_EXEC_ID=x\nexec id"


def test_a_sessions_run_file_runs_the_command_as_the_user() -> None:
    layout = GuestLayout()
    text = run_file(layout, "s", ["sh", "-c", "pwd"], "/srv/app", None, "nobody")
    assert "cd -- /srv/app ||" in text
    assert text.endswith("\nexec /usr/sbin/runuser -u nobody -- sh -c pwd\n")
    numeric = run_file(layout, "s", ["id"], user="0:0")
    assert numeric.endswith("exec /usr/bin/setpriv --reuid=0 --regid=0 --clear-groups -- id\n")
    assert run_file(layout, "s", ["id"]).endswith("\nexec id\n")
    with pytest.raises(InvalidArgument, match="user"):
        run_file(layout, "s", ["id"], user="")
