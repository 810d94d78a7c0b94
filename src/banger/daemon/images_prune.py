"""``POST /v1/images/prune`` on the daemon's side: the OCI cache's unneeded blobs go.

What is kept is decided by :mod:`banger.images.oci.prune` from the digests of
the images in the store. A pull's blobs are referenced by no image until its
row exists, so a prune holds :class:`banger.daemon.cache_gate.CacheGate`
alone (pulls hold it shared) and the publication lock while it works.
"""

from __future__ import annotations

import asyncio

from banger.api_models import ImagePruneResult, PrunedBlobInfo
from banger.daemon.images_svc import ImageService
from banger.images.oci.layers import OciCache
from banger.images.oci.prune import apply_prune, plan_prune

#: At most this many blobs are listed one by one in a result.
LISTED = 1000


async def prune(images: ImageService, *, dry_run: bool) -> ImagePruneResult:
    """Plan (and unless ``dry_run`` apply) the removal of blobs no image needs."""
    cache = OciCache(images.paths.cache_dir)
    async with images.cache_gate.exclusive(), images.publish_lock:

        def work() -> ImagePruneResult:
            digests = [r.digest for r in images.store.list_images() if r.digest]
            plan = plan_prune(cache, digests)
            freed = 0 if dry_run else apply_prune(cache, plan)
            return ImagePruneResult(
                dry_run=dry_run,
                blobs=len(plan.blobs),
                bytes=plan.bytes,
                freed=freed,
                refs=len(plan.refs),
                kept_blobs=plan.kept_blobs,
                kept_bytes=plan.kept_bytes,
                images=len(digests),
                removed=[PrunedBlobInfo(digest=b.digest, size=b.size) for b in plan.blobs[:LISTED]],
            )

        return await asyncio.to_thread(work)
