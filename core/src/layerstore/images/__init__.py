"""Container images in the store: references, descriptors, and the transports images move through.

`reference` parses and normalises names (``alpine`` is
``docker.io/library/alpine:latest``), `descriptor` holds the media types,
descriptors and platforms of the OCI image spec, and `transport` defines the
`ImageSource` / `ImageDestination` protocols that archives, OCI layouts and
registries implement.  `ImageStore` (`store`) keeps images (manifest, config,
layer chain) and their names on top of a `Graph`: its files on disk are
`records`, loading from a source is `load`, saving to a destination is
`save`.  `layers` has the chain IDs and the recorded blob forms of each
layer; `oci_layout` and `docker_archive` are the two archive formats
(`archives` opens either), and `v1config` builds a config for content that
has only Docker's v1 image JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyimport import lazy_attributes

if TYPE_CHECKING:
    from .descriptor import Descriptor, Platform
    from .layers import LayerBlob, chain_id, chain_ids
    from .oci_layout import OciLayoutDestination, OciLayoutSource
    from .reference import Reference, parse_reference
    from .store import ImageStore, StoredImage
    from .transport import ImageDestination, ImageSource, TransferProgress

__all__ = [
    "Descriptor",
    "ImageDestination",
    "ImageSource",
    "ImageStore",
    "LayerBlob",
    "OciLayoutDestination",
    "OciLayoutSource",
    "Platform",
    "Reference",
    "StoredImage",
    "TransferProgress",
    "chain_id",
    "chain_ids",
    "parse_reference",
]

# Each name is imported on first use: `import` only asks `archives.is_image_archive` whether a
# file is an image archive, and must not pay for the store, the records and the archive formats.
_HOMES = {
    "Descriptor": "descriptor", "Platform": "descriptor",
    "LayerBlob": "layers", "chain_id": "layers", "chain_ids": "layers",
    "OciLayoutDestination": "oci_layout", "OciLayoutSource": "oci_layout",
    "Reference": "reference", "parse_reference": "reference",
    "ImageStore": "store", "StoredImage": "store",
    "ImageDestination": "transport", "ImageSource": "transport", "TransferProgress": "transport",
}


__getattr__ = lazy_attributes(__name__, {name: f".{module}" for name, module in _HOMES.items()}, globals())
