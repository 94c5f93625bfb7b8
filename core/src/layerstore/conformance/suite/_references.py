"""get/put reference counting within a process, across threads and across processes; cleanup (docs/driver-guide.md)."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from layerstore.drivers import Driver

from .._holder import Holder
from ._base import DriverSpec, MakeDriver
from ._support import build_layer, new_id
from ._tars import TarBuilder


def _read(path: str, name: str) -> bytes:
    with open(os.path.join(path, name), "rb") as f:
        return f.read()


def _factory_reference(spec: DriverSpec) -> str | None:
    factory = spec.factory
    if factory is None:
        return None
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        pytest.skip(
            f"driver_factory {factory!r} cannot be imported by another process; "
            "define it at module level to run the cross-process tests"
        )
    return f"{module}:{qualname}"


class ReferenceTests:
    """Mount references."""

    def test_get_is_idempotent_and_counted(self, driver: Driver) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("f", b"content\n").bytes())
        first = driver.get(layer)
        second = driver.get(layer)
        assert first == second, "a second get returned another path"
        assert driver.references(layer) == 2
        driver.put(layer)
        assert driver.references(layer) == 1
        assert _read(first, "f") == b"content\n", "one put of two released the layer"
        driver.put(layer)
        assert driver.references(layer) == 0

    def test_put_of_unheld_layer_is_harmless(self, driver: Driver) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("f", b"content\n").bytes())
        driver.put(layer)
        driver.put(new_id())
        assert driver.references(layer) == 0
        path = driver.get(layer)
        driver.put(layer)
        driver.put(layer)
        assert driver.references(layer) == 0
        path = driver.get(layer)
        assert _read(path, "f") == b"content\n", "extra puts broke the next get"
        driver.put(layer)

    def test_references_balance_across_threads(self, driver: Driver) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("f", b"content\n").bytes())
        path = driver.get(layer)
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                for _ in range(20):
                    with driver.mounted(layer) as p:
                        if _read(p, "f") != b"content\n":
                            raise AssertionError("a thread read wrong content")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=churn) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert driver.references(layer) == 1
        assert _read(path, "f") == b"content\n", "the threads' puts released the first holder's mount"
        driver.put(layer)
        assert driver.references(layer) == 0

    def test_get_put_across_processes(self, driver: Driver, layerstore_driver_spec: DriverSpec) -> None:
        layer = build_layer(driver, tar=TarBuilder().file("f", b"shared\n").file("g", b"too\n").bytes())
        spec: dict[str, Any] = {
            "name": layerstore_driver_spec.name,
            "factory": _factory_reference(layerstore_driver_spec),
            "home": str(driver.home),
            "options": dict(layerstore_driver_spec.options),
            "layer": layer,
        }
        holder = Holder(spec)
        try:
            assert driver.references(layer) == 1
            here = driver.get(layer)
            assert here == holder.path, "two processes got different paths for one layer"
            assert driver.references(layer) == 2
            driver.put(layer)
            seen = holder.check("f")
            assert seen["listing"] == ["f", "g"], "this process's get/put destroyed the other process's view"
            assert seen["content"] == "shared\n"
            assert seen["same_directory"], "the other process's path no longer names the directory it holds"
            assert seen["references"] == 1

            here = driver.get(layer)
            holder.put()
            assert driver.references(layer) == 1
            assert sorted(os.listdir(here)) == ["f", "g"], "the other process's put released this process's view"
            assert _read(here, "f") == b"shared\n"
            driver.put(layer)
            assert driver.references(layer) == 0
        finally:
            holder.close()

    def test_cleanup_releases_references(self, driver: Driver, make_driver: MakeDriver) -> None:
        one = build_layer(driver)
        two = build_layer(driver, one)
        driver.get(one)
        driver.get(two)
        driver.get(two)
        driver.cleanup()
        assert driver.references(one) == 0
        assert driver.references(two) == 0
        # The store closed; a new instance on the same home removes without force.
        reopened = make_driver(home=driver.home)
        assert reopened.exists(one) and reopened.exists(two)
        reopened.remove(two)
        reopened.remove(one)
        assert not reopened.exists(one) and not reopened.exists(two)
