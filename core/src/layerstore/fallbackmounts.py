"""How the generic diff hooks mount layers under the `Driver` facade: bare get/put, references held around.

`layerstore.naivediff` mounts through the narrow get/put protocol a bare
driver plugin satisfies (`layerstore.mounts.PluginMounts`).  Under the
facade it is handed a `FallbackMounts`: its ``get`` is the driver's own
``get`` hook and its ``put`` does nothing.  The facade instead holds a
reference (`layerstore.references`) on every layer a diff hook may mount,
taken before the hook runs and released when it returns -- or, for a
``diff`` stream the fallback produced, when that stream is closed -- and
releasing the last reference is what unmounts.  So the fallback takes no
reference and no lock itself, another holder's ``put`` never unmounts a
layer while it is compared, and the fallback never unmounts a layer that
someone else holds.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from .errors import InvalidDriver

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .hookrelay import HookRelay
    from .references import ReferenceTable

__all__ = ["FallbackMounts", "Hold"]


class FallbackMounts:
    """The get/put handed to the generic diff hooks of one opened driver, and the holds that make them safe."""

    def __init__(self, driver_name: str, hook: HookRelay, refs: ReferenceTable, require: Callable[[str], None]) -> None:
        self._name = driver_name
        self._hook = hook
        self._refs = refs
        self._require = require
        self._local = threading.local()  # this thread's holds, innermost last
        self._open: set[_Pin] = set()  # references kept by diff streams not yet closed
        self._open_lock = threading.Lock()

    def get(self, id: str, mount_label: str) -> str:
        """The driver's ``get`` of `id`: the path of its full filesystem (the current hold unmounts it later)."""
        path = self._hook.get(id=id, mount_label=mount_label)
        if path is None:
            raise InvalidDriver(f"driver {self._name!r} returned no path from get({id})")
        holds: list[Hold] = getattr(self._local, "holds", [])
        if holds:
            holds[-1].mounted(id)
        return str(path)

    def put(self, id: str) -> None:
        """Nothing: releasing the reference the facade holds on `id` unmounts it, unless another holder has it."""

    @contextlib.contextmanager
    def holding(self, *ids: str | None) -> Iterator[Hold]:
        """``with mounts.holding(id, parent) as hold:`` -- a reference on each existing layer named, for one hook call.

        Raises `LayerNotFound` for a missing layer before anything is held.
        The references are released on exit, except one handed to a stream
        with `Hold.keep_open`.
        """
        hold = Hold(self, [layer_id for layer_id in dict.fromkeys(ids) if layer_id is not None])
        holds: list[Hold] = self._local.__dict__.setdefault("holds", [])
        holds.append(hold)
        try:
            yield hold
        finally:
            holds.pop()
            hold.release()

    def release_open(self) -> None:
        """Release the references kept by diff streams not yet closed (the store is closing)."""
        with self._open_lock:
            pins = list(self._open)
        for pin in pins:
            pin.release()

    def _pin(self, id: str) -> _Pin:
        with self._refs.locked(id):
            self._require(id)
            return _Pin(self, id, self._refs.add(id))


class Hold:
    """The references held on some layers for one call of a diff hook."""

    def __init__(self, owner: FallbackMounts, ids: list[str]) -> None:
        self._owner = owner
        self._pins: dict[str, _Pin] = {}
        try:
            for layer_id in ids:
                self._pins[layer_id] = owner._pin(layer_id)
        except BaseException:
            self.release()
            raise

    def mounted(self, id: str) -> None:
        """Note that the fallback mounted `id`: releasing its reference unmounts it (when nobody else holds it)."""
        pin = self._pins.get(id)
        if pin is not None:
            pin.mounted = True

    def keep_open(self, stream: BinaryIO, id: str) -> BinaryIO:
        """`stream`, reading layer `id`: when the fallback mounted `id`, its reference lasts until `stream` closes."""
        pin = self._pins.get(id)
        if pin is None or not pin.mounted:
            return stream
        del self._pins[id]
        with self._owner._open_lock:
            self._owner._open.add(pin)
        return cast(BinaryIO, _ReleasingReader(stream, pin.release))

    def release(self) -> None:
        """Release the references still held."""
        pins, self._pins = list(self._pins.values()), {}
        for pin in reversed(pins):
            pin.release()


class _Pin:
    """One reference held on a layer by a `Hold`; `release` runs once."""

    def __init__(self, owner: FallbackMounts, id: str, name: str) -> None:
        self._owner = owner
        self.id = id
        self.name = name
        self.mounted = False
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        owner = self._owner
        with owner._open_lock:
            owner._open.discard(self)
        refs = owner._refs
        with refs.locked(self.id):
            refs.drop(self.id, self.name)
            refs.reap(self.id)
            if self.mounted and refs.count(self.id) == 0 and owner._hook.exists(id=self.id):
                owner._hook.put(id=self.id)


class _ReleasingReader(io.BufferedIOBase):
    """Reads `stream` unchanged; closing it (or collecting it) closes `stream`, then calls `release` once."""

    def __init__(self, stream: BinaryIO, release: Callable[[], None]) -> None:
        super().__init__()
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._stream.read(-1 if size is None else size)

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._stream, "read1", None)
        return bytes(read1(size)) if read1 is not None else self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is not None:
            return int(readinto(buffer))
        data = self._stream.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        release, self._release = self._release, None
        try:
            self._stream.close()
        finally:
            super().close()
            if release is not None:
                release()
