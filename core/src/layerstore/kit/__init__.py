"""The driver author's kit: the plumbing every storage driver needs, written once.

- `copy_tree`: a faithful, iterative copy of a layer tree (owners, modes,
  nanosecond times, xattrs, hardlinks, symlinks, fifos, sockets, devices),
  with reflink / ``copy_file_range`` where the filesystem allows.
- `remove_tree`: deletes a tree of any depth without recursion (`layerstore.fstree`).
- `ScratchArea`: staging with atomic publish, and a trash that survives
  crashes; `ScratchEntry.exchange` swaps a finished copy with a live
  directory in one step; `ScratchArea.sweep` collects what killed
  processes left, `ScratchArea.unheld` lists it.
- `held_lock`: a driver-wide lock file held with ``flock``.
- `atomic_write`: replace a small file in one step;
  `sweep_atomic_temporaries` collects what killed writers left;
  `fsync_dir` makes a directory's names durable.
- `check_options`, `check_storage_options`: refuse unknown options with one
  wording (`ConfigError`).
- `check_layer_id`, `is_valid_layer_id`: the one rule for layer IDs a driver
  turns into names (`InvalidID`).

The facade (`layerstore.Driver`) already tracks parents and refuses to remove
a layer that has children, counts mounts and serialises operations on one
layer: a driver does none of that itself.  See ``docs/driver-guide.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyimport import lazy_attributes

if TYPE_CHECKING:
    from ..fstree import remove_tree
    from .atomic import atomic_write, fsync_dir, is_atomic_temporary, sweep_atomic_temporaries
    from .copytree import COPY_METHODS, TreeCopier, copy_tree, probe_reflink
    from .ids import check_layer_id, is_valid_layer_id
    from .locks import held_lock
    from .options import check_options, check_storage_options
    from .scratch import ScratchArea, ScratchEntry

__all__ = [
    "COPY_METHODS",
    "ScratchArea",
    "ScratchEntry",
    "TreeCopier",
    "atomic_write",
    "check_layer_id",
    "check_options",
    "check_storage_options",
    "copy_tree",
    "fsync_dir",
    "held_lock",
    "is_atomic_temporary",
    "is_valid_layer_id",
    "probe_reflink",
    "remove_tree",
    "sweep_atomic_temporaries",
]

# Each name is imported on first use: the store's own modules import single
# submodules (``kit.atomic``) and a command need not load the copier.
_HOMES = {
    "COPY_METHODS": ".copytree",
    "ScratchArea": ".scratch",
    "ScratchEntry": ".scratch",
    "TreeCopier": ".copytree",
    "atomic_write": ".atomic",
    "check_layer_id": ".ids",
    "check_options": ".options",
    "check_storage_options": ".options",
    "copy_tree": ".copytree",
    "fsync_dir": ".atomic",
    "held_lock": ".locks",
    "is_atomic_temporary": ".atomic",
    "is_valid_layer_id": ".ids",
    "probe_reflink": ".copytree",
    "remove_tree": "..fstree",
    "sweep_atomic_temporaries": ".atomic",
}

__getattr__ = lazy_attributes(__name__, _HOMES, globals())
