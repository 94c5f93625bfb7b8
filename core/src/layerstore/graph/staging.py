"""Sweeping ``<root>/graph/_tmp``: what killed processes left behind.

``register`` builds an image in ``_tmp/<id>.new.<random>`` and ``delete``
renames one to ``_tmp/<id>.del.<random>``, each holding the image's lock all
along.  A staging entry whose lock is free therefore belongs to a process
that died, and its driver layer (if the image is not visible) is an orphan.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from ..errors import LayerStoreError
from ..fstree import remove_tree_quietly
from ..image import is_valid_id
from ..outfile import JOURNAL_PREFIX, sweep_journal_entry

if TYPE_CHECKING:
    from ..drivers import Driver
    from .files import ImageFiles

__all__ = ["sweep_locks", "sweep_staging"]

_log = logging.getLogger("layerstore.graph")


def sweep_staging(files: ImageFiles, driver: Driver) -> list[str]:
    """Remove staging and trash entries of dead processes, and the driver layers they orphaned.

    Never raises: a leftover that cannot be removed is reported as a
    warning naming it, and the sweep goes on (a command must not fail
    because of what a killed one left behind).  Returns the names removed.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(files.tmp))
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            _log.warning("could not list the staging directory %s: %s", files.tmp, exc.strerror or exc)
        return removed
    for entry in entries:
        try:
            if _sweep_entry(files, driver, entry.name):
                removed.append(entry.name)
        except (LayerStoreError, OSError) as exc:
            _log.warning("could not remove leftover %s: %s", entry.path, exc)
    return removed


def _sweep_entry(files: ImageFiles, driver: Driver, name: str) -> bool:
    path = files.tmp / name
    if name.startswith(JOURNAL_PREFIX):
        return sweep_journal_entry(path)
    image_id = name.split(".", 1)[0]
    if not is_valid_id(image_id):
        # Anonymous leftovers (temporary archives are unlinked at once; these are strays).
        return remove_tree_quietly(path, _log.warning)
    with files.locked(image_id, blocking=False) as got:
        if not got:
            return False  # a live process is working on this image
        if not files.has_metadata(image_id):
            with contextlib.suppress(LayerStoreError, OSError):
                if driver.exists(image_id):
                    driver.remove(image_id, force=True)
        removed = remove_tree_quietly(path, _log.warning)
        if not files.has_metadata(image_id) and not driver.exists(image_id):
            files.drop_lock_file(image_id)
        return removed


def sweep_locks(files: ImageFiles, driver: Driver) -> list[str]:
    """Remove lock files of images that do not exist and that no process holds; return their names."""
    names = files.lock_names()
    if not names:
        return []
    busy = {entry.split(".", 1)[0] for entry in os.listdir(files.tmp)} if files.tmp.is_dir() else set()
    removed = []
    for name in names:
        if name in busy or files.has_metadata(name):
            continue
        with files.locked(name, blocking=False) as got:
            if not got or files.has_metadata(name) or (is_valid_id(name) and driver.exists(name)):
                continue
            files.drop_lock_file(name)
            removed.append(name)
    return removed
