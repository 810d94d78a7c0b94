"""The test image and kernel caches are keyed on every input of their build."""

from __future__ import annotations

from tests.image_cache import keyed_sources
from tests.support import package_sources


def test_image_key_covers_the_whole_image_package_and_the_modules_that_run_the_build() -> None:
    labels = {label for label, _ in keyed_sources()}
    # Files a hand-picked list once missed, and the root/daemon side of the build.
    for needed in (
        "banger.images/common.py",
        "banger.images/aptsources.py",
        "banger.images/tether.py",
        "banger.images/build.py",
        "banger.images/publish.py",
        "banger.images/finalize.py",
        "banger.images/banger-fast-init.sh",
        "banger.helper/image_build.py",
        "banger.helper/rootstage.py",
        "banger.helper/bindexec.py",
        "banger.daemon/images_svc.py",
    ):
        assert needed in labels
    # The rule, not a list: every file of banger.images is in.
    assert {label for label, _ in package_sources("banger.images")} <= labels
    assert not any("__pycache__" in label for label in labels)


def test_kernel_sources_are_every_file_of_the_kernels_package() -> None:
    labels = {label for label, _ in package_sources("banger.kernels")}
    assert {"banger.kernels/init.sh", "banger.kernels/pull.py", "banger.kernels/deb.py"} <= labels
