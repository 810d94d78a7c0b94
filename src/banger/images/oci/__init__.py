"""OCI images: references, skopeo transport, the shared layer cache, flatten.

``ref`` validates what the user typed, ``skopeo`` builds the command lines,
``layers`` fetches an image into ``cache_dir/oci`` (blobs shared, one pull
per image at a time), ``flatten`` applies the layers safely into a root tree,
``config`` reads manifests and the image config, and ``pull`` is the entry
the daemon's helper calls (:func:`banger.images.oci.pull.pull_image`).
"""
