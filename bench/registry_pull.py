"""Pull time of the two-layer benchmark image from a local docker-registry, next to its peers, in one run.

    .venv/bin/python -m bench.registry_pull [--quick] [--driver vfs|overlay] [--runs N]

The image is the benchmark's root filesystem layer plus the whiteout delta
(datasets ``rootfs``, or ``genroot`` with ``--quick``, and ``whiteout``),
made into an OCI layout by ``umoci raw add-layer`` (umoci gzips the layers)
and pushed by skopeo to Debian's ``docker-registry`` on 127.0.0.1.  Each run
measures, every store on a fresh loop-mounted filesystem:

- ``layerstore pull``: our registry client into a `driver` store;
- ``skopeo copy`` to an OCI directory, then ``layerstore load`` of it (the
  two times and their sum);
- ``podman pull`` into a vfs store of its own (containers/image + storage).

Wall seconds and peak RSS come from `bench.measure.run_measured`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from layerstore.testing.registry import LocalRegistry, skopeo

from .datasets import DATA_DIR, build_datasets
from .filesystems import backing_filesystem
from .measure import Measurement, run_measured

REPOSITORY = "bench/image"
TAG = "v1"


def _layerstore() -> str:
    return str(Path(sys.executable).parent / "layerstore")


def _build_image(layout: Path, layers: list[Path]) -> None:
    def umoci(*args: str) -> None:
        run = run_measured(["umoci", *args], timeout=None)
        if not run.ok:
            raise SystemExit(f"umoci {' '.join(args)} failed: {run.stderr}")

    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{TAG}")
    for layer in layers:
        umoci("raw", "add-layer", "--image", f"{layout}:{TAG}", str(layer))


def _checked(m: Measurement, what: str) -> Measurement:
    if not m.ok:
        raise SystemExit(f"{what} failed ({m.returncode}): {m.stderr.strip()[-2000:]}")
    return m


def _one_run(workdir: Path, driver: str, reference: str, size_mb: int) -> dict[str, Measurement]:
    results: dict[str, Measurement] = {}
    with backing_filesystem(workdir / "pull", driver, size_mb) as mnt:
        results["layerstore pull"] = _checked(run_measured(
            [_layerstore(), "--root", str(mnt / "store"), "--driver", driver, "pull", "-q", "--insecure", reference],
            timeout=None), "layerstore pull")
    with backing_filesystem(workdir / "copyload", driver, size_mb) as mnt:
        layout = mnt / "oci"
        results["skopeo copy"] = _checked(run_measured(
            ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", f"docker://{reference}",
             f"oci:{layout}:{TAG}"], timeout=None), "skopeo copy")
        results["layerstore load"] = _checked(run_measured(
            [_layerstore(), "--root", str(mnt / "store"), "--driver", driver, "load", "-q", "-i", str(layout)],
            timeout=None), "layerstore load")
    with backing_filesystem(workdir / "podman", "vfs", size_mb) as mnt:
        runroot = Path(tempfile.mkdtemp(prefix="lsb-", dir="/tmp"))  # podman wants a short runroot path
        try:
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(mnt), "XDG_RUNTIME_DIR": str(runroot)}
            (mnt / "registries.conf").write_text("unqualified-search-registries = []\n")
            env["CONTAINERS_REGISTRIES_CONF"] = str(mnt / "registries.conf")
            results["podman pull"] = _checked(run_measured(
                ["podman", "--storage-driver", "vfs", "--root", str(mnt / "podman"), "--runroot", str(runroot),
                 "pull", "-q", "--tls-verify=false", f"docker://{reference}"], env=env, timeout=None),
                "podman pull")
            run_measured(["podman", "--storage-driver", "vfs", "--root", str(mnt / "podman"), "--runroot",
                          str(runroot), "system", "reset", "--force"], env=env, timeout=None)
        finally:
            shutil.rmtree(runroot, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print a table of median seconds and peak RSS."""
    parser = argparse.ArgumentParser(prog="python -m bench.registry_pull", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a generated root filesystem instead of debootstrap")
    parser.add_argument("--driver", default="vfs", choices=["vfs", "overlay", "btrfs"], help="layerstore driver")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, default=DATA_DIR / "work-registry")
    args = parser.parse_args(argv)

    base, delta = build_datasets(["genroot" if args.quick else "rootfs", "whiteout"], args.quick)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=args.workdir))
    try:
        _build_image(work / "layout", [base.path, delta.path])
        with LocalRegistry(work / "registry") as registry:
            reference = f"{registry.host}/{REPOSITORY}:{TAG}"
            skopeo("copy", "--dest-tls-verify=false", f"oci:{work / 'layout'}:{TAG}", f"docker://{reference}")
            runs = [_one_run(work, args.driver, reference, args.size_mb) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str) -> tuple[float, int]:
        return (statistics.median(r[name].seconds for r in runs),
                int(statistics.median(r[name].maxrss_kb for r in runs)))

    rows = [(name, *median(name)) for name in ("layerstore pull", "skopeo copy", "layerstore load", "podman pull")]
    copy_load = median("skopeo copy")[0] + median("layerstore load")[0]
    print(f"pull of {base.name} + whiteout ({base.size + delta.size} bytes uncompressed), driver {args.driver}, "
          f"median of {args.runs} runs")
    print(f"{'command':<32} {'seconds':>8} {'peak RSS':>10}")
    for name, seconds, rss in rows:
        print(f"{name:<32} {seconds:>8.2f} {rss // 1024:>7} MB")
    print(f"{'skopeo copy + layerstore load':<32} {copy_load:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
