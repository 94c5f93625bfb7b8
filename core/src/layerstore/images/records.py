"""The image store's files: one directory per image, the names file, the lock, staging and trash.

Everything that reads or writes under ``<root>/images`` goes through
`ImageRecords` (the model of moby's ``image/fs.go``, with the names file of
its reference store beside it).  Layout, beside ``graph/``::

    <root>/images/<image-hex>/manifest      the manifest bytes, verbatim
    <root>/images/<image-hex>/config        the config bytes, verbatim
    <root>/images/<image-hex>/index         the index it was picked from (multi-platform images), verbatim
    <root>/images/<image-hex>/image.json    digests, media types, the layer chain, load time
    <root>/images/names.json                name -> image ID
    <root>/images/.lock                     flock of every change
    <root>/images/.tmp-*                    staging and trash; swept when a store opens (a live
                                            process's scratch directory, named with its tag, is not)
    <root>/images/.names.json.tmp-*         a names write in progress; swept when its process is gone

The image ID is the config digest, as Docker and Podman have it.  Layers are
graph images whose ID is their chain ID (see `layerstore.images.layers`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from ..errors import CorruptMetadata, ImageNotFound
from ..graph.files import SPACE_ERRNOS
from ..image import format_created, is_valid_id
from ..kit.atomic import atomic_write, is_atomic_temporary, sweep_atomic_temporaries
from ..kit.locks import held_lock
from ..owner import current_owner, owner_alive
from .descriptor import sha256_of

__all__ = ["IMAGES_DIR", "NAMES_FILE", "ImageRecords", "NewImage", "StoredImage"]

IMAGES_DIR = "images"
NAMES_FILE = "names.json"
RECORD_FILE = "image.json"
MANIFEST_FILE = "manifest"
CONFIG_FILE = "config"
INDEX_FILE = "index"
_STAGING_PREFIX = ".tmp-"


def _owner_lives(name: str) -> bool:
    """True when staging entry `name` is a `ImageRecords.scratch_dir` of a process that still runs."""
    parts = name[len(_STAGING_PREFIX):].split(".")
    return len(parts) == 3 and owner_alive(parts[1])


@attrs.frozen(kw_only=True)
class StoredImage:
    """An image in the store: its ID (the config digest), names, manifest, config and layer chain.

    `layers` are the graph IDs (chain IDs without ``sha256:``) from the
    bottom up, `diff_ids` the config's uncompressed layer digests.
    `config_locations` are the places (``registry/repository``) where the
    config blob is known to exist: where it was pulled from or pushed to.
    """

    id: str
    names: tuple[str, ...]
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: tuple[str, ...]
    diff_ids: tuple[str, ...]
    created: str
    loaded: str
    index_digest: str | None = None
    config_locations: tuple[str, ...] = ()

    @property
    def top_layer(self) -> str | None:
        """The graph ID of the top layer (None for an image without layers)."""
        return self.layers[-1] if self.layers else None

    @property
    def digest(self) -> str:
        """The image ID as a digest (``sha256:<id>``)."""
        return "sha256:" + self.id


@attrs.frozen(kw_only=True)
class NewImage:
    """What a load writes for a new image: the blobs verbatim and what the record says about them."""

    manifest: bytes
    manifest_media_type: str
    config: bytes
    created: str
    index: bytes | None
    layers: list[str]
    diff_ids: list[str]
    location: str | None


class ImageRecords:
    """The files under `root` (``<store>/images``); see the module docstring for the layout.

    Reading never creates anything.  Every change happens inside `locked`,
    which the caller holds across a read-modify-write of several files.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``images/.lock`` (made with the directory if missing) for the ``with`` block."""
        self.root.mkdir(mode=0o700, exist_ok=True)
        with held_lock(self.root / ".lock"):
            yield

    def sweep(self, *, records: bool = False) -> list[str]:
        """Remove what killed processes left; return the names removed (relative to the images root).

        Staging and trash (under the lock, so never a live one's) and the
        temporary files of the names file's atomic writes (only those whose
        process is gone).  With `records` (``gc``) also the temporary files
        in every image's directory, which a command opening the store does
        not list.
        """
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        removed: list[str] = []
        staging = [name for name in names if name.startswith(_STAGING_PREFIX) and not _owner_lives(name)]
        if staging:
            with self.locked():
                for name in staging:
                    shutil.rmtree(self.root / name, ignore_errors=True)
            removed += staging
        if any(is_atomic_temporary(name) and not name.startswith(_STAGING_PREFIX) for name in names):
            removed += sweep_atomic_temporaries(self.root)
        if records:
            for name in names:
                if not is_valid_id(name) or not (self.root / name).is_dir():
                    continue
                removed += [f"{name}/{temp}" for temp in sweep_atomic_temporaries(self.root / name)]
                if not self.exists(name):  # a delete in place, cut short (records appear whole, by a rename)
                    with self.locked():
                        if not self.exists(name):
                            shutil.rmtree(self.root / name, ignore_errors=True)
                            removed.append(name)
        return removed

    def scratch_dir(self, purpose: str) -> Path:
        """A new directory under the images root for this process (a pull's downloads, a record being written).

        Its name carries the process's tag (`layerstore.owner`): `sweep`, which
        other commands run as they open the store, leaves it alone while this
        process runs, and removes it once the process is gone.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{_STAGING_PREFIX}{purpose}.{current_owner()}.{secrets.token_hex(6)}"
        path.mkdir()
        return path

    # -- names ---------------------------------------------------------------------

    def names(self) -> dict[str, str]:
        """Every name and the image ID it names."""
        path = self.root / NAMES_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise CorruptMetadata(f"{path}: cannot read the image names ({exc})") from None
        return {str(k): str(v) for k, v in data.items()}

    def write_names(self, names: dict[str, str]) -> None:
        """Replace the names file with `names` (under `locked`), leaving out names of images without a record."""
        live = {name: image_id for name, image_id in sorted(names.items()) if self.exists(image_id)}
        atomic_write(self.root / NAMES_FILE, json.dumps(live, indent=1))

    def add_names(self, names: Iterable[str], image_id: str) -> None:
        """Point each of `names` at `image_id`, taking them from other images (under `locked`)."""
        current = self.names()
        current.update(dict.fromkeys(names, image_id))
        self.write_names(current)

    # -- image records -------------------------------------------------------------

    def ids(self) -> list[str]:
        """The IDs of every image with a record, sorted."""
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in entries if is_valid_id(n) and self.exists(n))

    def exists(self, image_id: str) -> bool:
        """True when the image has a record."""
        return (self.root / image_id / RECORD_FILE).is_file()

    def read(self, image_id: str, names: dict[str, str] | None = None) -> StoredImage:
        """The image's record, named with the entries of `names` (default: the names file) that point at it."""
        path = self.root / image_id / RECORD_FILE
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"no image {image_id}; `layerstore images` lists the images") from None
        except ValueError as exc:
            raise CorruptMetadata(f"{path}: cannot read the image record ({exc})") from None
        names = self.names() if names is None else names
        return StoredImage(
            id=image_id,
            names=tuple(sorted(n for n, i in names.items() if i == image_id)),
            manifest_digest=data["manifest_digest"],
            manifest_media_type=data["manifest_media_type"],
            config_digest=data["config_digest"],
            layers=tuple(data["layers"]),
            diff_ids=tuple(data["diff_ids"]),
            created=data.get("created") or "",
            loaded=data.get("loaded") or "",
            index_digest=data.get("index_digest"),
            config_locations=tuple(data.get("config_locations") or ()),
        )

    def read_all(self) -> list[StoredImage]:
        """Every image with a record, sorted by ID."""
        names = self.names()
        return [self.read(i, names) for i in self.ids()]

    def manifest(self, image_id: str) -> bytes:
        """The manifest bytes as loaded."""
        return (self.root / image_id / MANIFEST_FILE).read_bytes()

    def index(self, image_id: str) -> bytes | None:
        """The index the image was picked from, as loaded; None for an image loaded from a manifest."""
        try:
            return (self.root / image_id / INDEX_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def config(self, image_id: str) -> bytes:
        """The config bytes as loaded."""
        return (self.root / image_id / CONFIG_FILE).read_bytes()

    def create(self, image_id: str, image: NewImage) -> None:
        """Write the image's files in staging and rename the directory into place (under `locked`).

        A directory of the same ID without a record (a crash between the
        two steps cannot make one; a hand-made one can) is replaced.
        """
        final = self.root / image_id
        staging = self.scratch_dir("new")
        try:
            (staging / MANIFEST_FILE).write_bytes(image.manifest)
            (staging / CONFIG_FILE).write_bytes(image.config)
            if image.index is not None:
                (staging / INDEX_FILE).write_bytes(image.index)
            record = {
                "manifest_digest": sha256_of(image.manifest),
                "manifest_media_type": image.manifest_media_type,
                "config_digest": "sha256:" + image_id,
                "index_digest": sha256_of(image.index) if image.index is not None else None,
                "layers": image.layers,
                "diff_ids": image.diff_ids,
                "created": image.created,
                "loaded": format_created(),
                "config_locations": [image.location] if image.location else [],
            }
            (staging / RECORD_FILE).write_text(json.dumps(record, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def add_config_location(self, image_id: str, location: str) -> None:
        """Record (under `locked`) that the image's config blob exists at `location` too; nothing for an image
        without a record (a layer chain made by ``import``)."""
        path = self.root / image_id / RECORD_FILE
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return  # an unreadable record is reported by whoever reads it; a location is only a hint
        locations = list(record.get("config_locations") or [])
        if location in locations:
            return
        record["config_locations"] = [*locations, location]
        atomic_write(path, json.dumps(record, indent=1))

    def delete(self, image_id: str) -> bool:
        """Remove the image's names and its directory (under `locked`): renamed to trash first, so a crash
        leaves either the whole image or something `sweep` removes.

        On a full filesystem the names file cannot be rewritten (that needs a
        new file): the directory goes anyway and False is returned.  The names
        left pointing at the image then name nothing (readers skip them), and
        the next `write_names` leaves them out: call it once space is freed.
        """
        names_written = True
        try:
            self.write_names({n: i for n, i in self.names().items() if i != image_id})
        except OSError as exc:
            if exc.errno not in SPACE_ERRNOS:
                raise
            names_written = False
        trash = self.root / f"{_STAGING_PREFIX}{secrets.token_hex(6)}"
        try:
            os.rename(self.root / image_id, trash)
        except OSError as exc:
            if exc.errno not in SPACE_ERRNOS:
                raise
            # A full copy-on-write filesystem (btrfs) cannot even rename, but deleting needs no
            # space: the record file goes first, so the image is gone at once; a crash leaves a
            # directory without it, which `sweep` removes.
            os.unlink(self.root / image_id / RECORD_FILE)
            shutil.rmtree(self.root / image_id, ignore_errors=True)
            return names_written
        shutil.rmtree(trash, ignore_errors=True)
        return names_written
