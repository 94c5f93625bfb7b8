"""Pull and push images over the OCI distribution protocol (the Docker registry HTTP API v2).

`RegistrySource` and `RegistryDestination` make a registry repository an
`ImageSource` / `ImageDestination`, so the image store loads from and saves
to a registry the way it does with archives.  Underneath: `client` (HTTP over
urllib3, TLS, retries), `auth` (challenges, tokens), `credentials` (the
auth.json / config.json files), `manifests`, `blobs` (verified, resumable
downloads; monolithic and chunked uploads; cross-repository mounts) and
`spool` (parallel downloads ahead of the reader).
"""

from __future__ import annotations

from .client import RegistryClient, RegistryOptions
from .credentials import Credentials, find_credentials, remove_credentials, store_credentials
from .destination import RegistryDestination
from .source import RegistrySource

__all__ = [
    "Credentials",
    "RegistryClient",
    "RegistryDestination",
    "RegistryOptions",
    "RegistrySource",
    "find_credentials",
    "remove_credentials",
    "store_credentials",
]
