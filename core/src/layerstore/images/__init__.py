"""Container images in the store: references, descriptors, and the transports images move through.

`reference` parses and normalises names (``alpine`` is
``docker.io/library/alpine:latest``), `descriptor` holds the media types,
descriptors and platforms of the OCI image spec, and `transport` defines the
`ImageSource` / `ImageDestination` protocols that archives, OCI layouts and
registries implement.
"""

from __future__ import annotations

from .descriptor import Descriptor, Platform
from .reference import Reference, parse_reference
from .transport import ImageDestination, ImageSource, TransferProgress

__all__ = [
    "Descriptor",
    "ImageDestination",
    "ImageSource",
    "Platform",
    "Reference",
    "TransferProgress",
    "parse_reference",
]
