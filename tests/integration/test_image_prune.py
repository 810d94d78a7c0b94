"""``banger image prune`` (issue #22 item 5): the OCI cache's blobs no image needs go,
a refused pull's included; a pulled image's blobs (shared ones too) stay.

Real images from a local registry, a real pull (flatten as root), a real refused
pull, then the real CLI against a real bangerd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.daemon.images_pull import digest_of_source
from banger.images.oci.flatten import HostileLayer
from banger.images.oci.layers import OciCache
from banger.images.oci.prune import apply_prune, plan_prune
from banger.images.oci.pull import pull_image
from banger.paths import Paths
from banger.store import Store
from tests.integration.bangerd_harness import home_paths, run_cli, running_daemon
from tests.registry import BOOT_FILES, LOWER, LocalRegistry, build, file, local_registry, symlink
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def blob_names(paths: Paths) -> set[str]:
    return OciCache(paths.cache_dir).blob_names()


def pulled_and_refused(short_tmp: Path, registry: LocalRegistry, home: Path) -> tuple[
    str, set[str], set[str]
]:  # fmt: skip
    """A good image pulled and recorded, then a hostile one refused, into ``home``.

    Returns the good image's digest, the blobs after the good pull and the
    blobs the refused pull added (its manifest, config and hostile layers; the
    BOOT_FILES layer it shares with the good image is not new).
    """
    paths = home_paths(home)
    good = build(short_tmp / "good", [BOOT_FILES, LOWER])
    entry = pull_image(registry.push(good, "test/good"), paths=paths, name="good")
    digest = digest_of_source(entry.source)
    assert digest is not None
    with Store.open(paths.db) as store:  # what bangerd's pull records
        store.create_image(id=entry.id, name=entry.name, source=entry.source, digest=digest,
                           size=entry.rootfs_allocated)  # fmt: skip
    after_good = blob_names(paths)
    hostile = build(short_tmp / "bad", [BOOT_FILES, [symlink("etc/x", "/tmp")],
                                        [file("etc/x/pwned", b"x")]])  # fmt: skip
    with pytest.raises(HostileLayer):
        pull_image(registry.push(hostile, "test/hostile"), paths=paths, name="hostile")
    added = blob_names(paths) - after_good
    assert {d.removeprefix("sha256:") for d in hostile.layer_digests[1:]} <= added
    return digest, after_good, added


def test_a_plan_keeps_what_images_need_and_drops_a_refused_pulls_blobs(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    home = short_tmp / "home"
    digest, kept, refused = pulled_and_refused(short_tmp, registry, home)
    cache = OciCache(home_paths(home).cache_dir)
    plan = plan_prune(cache, [digest])
    assert {b.name for b in plan.blobs} == refused
    assert plan.kept_blobs == len(kept)
    assert len(plan.refs) == 1  # the hostile image's record, not the good one's
    assert plan.refs[0].stem != digest.removeprefix("sha256:")
    assert apply_prune(cache, plan) == plan.bytes > 0
    assert blob_names(home_paths(home)) == kept
    # The image's blobs are all there: a re-pull downloads nothing.
    assert cache.cached_manifest(digest.removeprefix("sha256:")) is not None
    # With no image left, everything goes.
    assert apply_prune(cache, plan_prune(cache, [])) > 0
    assert blob_names(home_paths(home)) == set()


def test_the_cli_dry_run_then_prune_through_bangerd(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    home = short_tmp / "home"
    digest, kept, refused = pulled_and_refused(short_tmp, registry, home)
    with running_daemon(home):
        dry = run_cli(home, "image", "prune", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["dry_run"] is True and report["freed"] == 0
        assert report["blobs"] == len(refused) and report["images"] == 1
        assert {b["digest"].removeprefix("sha256:") for b in report["removed"]} == refused
        assert blob_names(home_paths(home)) == kept | refused  # nothing removed

        human = run_cli(home, "image", "prune")
        assert human.returncode == 0, human.stderr
        assert f"removed {len(refused)} blobs from the OCI cache" in human.stdout
        assert f"kept {len(kept)} blobs" in human.stdout and "1 pulled images" in human.stdout
        assert blob_names(home_paths(home)) == kept

        again = json.loads(run_cli(home, "image", "prune", "--json").stdout)
        assert (again["blobs"], again["freed"], again["kept_blobs"]) == (0, 0, len(kept))
        assert digest  # the image the kept blobs belong to
