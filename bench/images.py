"""The images section of the benchmark: load, save, pull and push against podman and skopeo.

Run alone with ``.venv/bin/python -m bench --ops images [--drivers vfs] [--quick]``.

Two images, each built once per benchmark run by ``umoci raw add-layer``
(gzip layers) from the benchmark datasets:

- ``small``: the two-layer test image, the ``whiteout`` dataset's parent
  layer (a small root filesystem) plus its whiteout delta;
- ``rootfs``: the ``rootfs`` dataset as one layer (``genroot`` with
  ``--quick``) plus the same whiteout delta.

From that OCI layout skopeo writes a docker-archive tar, GNU tar an OCI
archive (the layout as one tar), and skopeo pushes it to Debian's
``docker-registry``, started on a free port of 127.0.0.1 for the section and
stopped by its pid.  Per run, on the driver's fresh backing filesystem, the
tools alternate (the order rotating from run to run) through:

- ``load docker`` / ``load oci``: ``layerstore load -i``, ``podman load -i``,
  ``skopeo copy docker-archive:/oci-archive: containers-storage:``;
- ``save docker`` / ``save oci``: of the image loaded from the docker-archive,
  ``layerstore save [--format oci]``, ``podman save [--format oci-archive]``,
  ``skopeo copy containers-storage: docker-archive:/oci-archive:``;
- ``push``: the same image to a registry started for that one push (layers
  gzip-compressed by every tool; see `_push_target`), ``layerstore push``,
  ``podman push``, ``skopeo copy containers-storage: docker://``;
- ``pull``: ``layerstore pull``, ``podman pull``, ``skopeo copy docker://
  containers-storage:``.

podman and skopeo use containers/storage's vfs driver in a store of their own
(own configuration files, nothing of the host's); layerstore the round's
driver.  Stores are wiped, untimed, after each tool's turn.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .datasets import Dataset
from .measure import Measurement, run_measured
from .report import Record, Results, summarise

TAG = "v1"
TOOLS = ("layerstore", "podman", "skopeo")
OPS = ("load docker", "load oci", "save docker", "save oci", "push", "pull")
NEEDED = ("umoci", "skopeo", "podman", "docker-registry")


class Prepared:
    """One benchmark image in every input form: OCI layout, docker-archive tar, OCI archive tar, registry name."""

    def __init__(self, name: str, layers: list[Dataset], work: Path, registry_host: str) -> None:
        self.name = name
        self.layers = layers
        self.layout = work / f"{name}-layout"
        self.docker_archive = work / f"{name}-docker.tar"
        self.oci_archive = work / f"{name}-oci.tar"
        self.repository = f"bench/{name}"
        self.reference = f"{registry_host}/{self.repository}:{TAG}"
        self.archive_name = f"docker.io/bench/{name}:{TAG}"  # the name the docker-archive carries
        self.uncompressed = sum(d.size for d in layers)

    def build(self) -> None:
        """Make the layout, the two archives, and push the image to the registry (untimed)."""
        _must(["umoci", "init", "--layout", str(self.layout)])
        _must(["umoci", "new", "--image", f"{self.layout}:{TAG}"])
        for layer in self.layers:
            _must(["umoci", "raw", "add-layer", "--image", f"{self.layout}:{TAG}", str(layer.path)])
        _must(["skopeo", "--insecure-policy", "copy", f"oci:{self.layout}:{TAG}",
               f"docker-archive:{self.docker_archive}:{self.archive_name}"])
        _must(["tar", "-C", str(self.layout), "-cf", str(self.oci_archive), "."])
        _must(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", f"oci:{self.layout}:{TAG}",
               f"docker://{self.reference}"])


def _must(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


class Stores:
    """The three stores of one tool turn on the round's filesystem, and the argv of every step."""

    def __init__(self, mnt: Path, driver: str, options: dict[str, str]) -> None:
        self.base = mnt / "images"
        self.driver = driver
        self.options = options
        self.layerstore_root = self.base / "layerstore"
        self.graph = self.base / "cs-graph"
        # podman refuses a run root path longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="lsbi-", dir="/tmp"))
        self.out = self.base / "out"
        conf = self.base / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.runroot}"\ngraphroot = "{self.graph}"\n')
        (conf / "containers.conf").write_text('[engine]\nevents_logger = "none"\n')
        (conf / "xdg").mkdir(exist_ok=True)
        self.env = {
            "HOME": str(conf), "XDG_RUNTIME_DIR": str(conf / "xdg"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
            "CONTAINERS_CONF": str(conf / "containers.conf"),
        }
        self.storage = f"containers-storage:[vfs@{self.graph}+{self.runroot}]"

    def layerstore(self, *args: str) -> list[str]:
        exe = str(Path(sys.executable).with_name("layerstore"))
        opts = [x for k, v in self.options.items() for x in ("-o", f"{k}={v}")]
        return [exe, "--root", str(self.layerstore_root), "--driver", self.driver, *opts, *args]

    def podman(self, *args: str) -> list[str]:
        return ["podman", "--storage-driver", "vfs", "--root", str(self.graph), "--runroot", str(self.runroot),
                *args]

    @staticmethod
    def skopeo(*args: str) -> list[str]:
        return ["skopeo", "--insecure-policy", "copy", *args]

    def wipe(self) -> None:
        """Remove every store and output (untimed); layerstore's through its own rm, which unmounts."""
        if self.layerstore_root.exists():
            ids = _must(self.layerstore(*["images", "-q"])).split()
            if ids:
                subprocess.run(self.layerstore("rmi", *ids), capture_output=True, check=False)
        for path in (self.layerstore_root, self.graph, self.out):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
        self.runroot.mkdir()
        self.out.mkdir(parents=True)

    def close(self) -> None:
        self.wipe()
        shutil.rmtree(self.runroot, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def _push_target(scratch: Path, image: Prepared, tool: str, run: int) -> Iterator[str]:
    """A reference in a registry started for this one push (on a new port) and stopped after it.

    containers/image remembers, machine-wide, where it has seen each blob and
    mounts it from there instead of uploading; a fresh registry has nothing to
    mount from, so every tool really uploads its layers.
    """
    from layerstore.testing.registry import LocalRegistry

    directory = scratch / f"push-{image.name}-{tool}-{run}"
    try:
        with LocalRegistry(directory) as registry:
            yield f"{registry.host}/bench/{image.name}:{TAG}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _turn(tool: str, image: Prepared, stores: Stores, scratch: Path, run: int,
          record: Callable[[str, str, Measurement], None]) -> None:
    """Every operation of one tool on one image, wiping between the parts that need an empty store."""
    s, env, out = stores, stores.env, stores.out
    push_target = _push_target(scratch, image, tool, run)
    if tool == "layerstore":
        m = run_measured(s.layerstore("load", "-q", "-i", str(image.docker_archive)))
        record("load docker", tool, m)
        loaded = m.stdout.split()[-1] if m.ok and m.stdout.split() else image.archive_name
        record("save docker", tool, run_measured(s.layerstore("save", loaded, "-o", str(out / "d.tar"))))
        record("save oci", tool, run_measured(s.layerstore("save", loaded, "--format", "oci", "-o",
                                                           str(out / "o.tar"))))
        with push_target as push_ref:
            record("push", tool, run_measured(s.layerstore("push", "-q", "--insecure", loaded, push_ref)))
        s.wipe()
        record("load oci", tool, run_measured(s.layerstore("load", "-q", "-i", str(image.oci_archive))))
        s.wipe()
        record("pull", tool, run_measured(s.layerstore("pull", "-q", "--insecure", image.reference)))
    elif tool == "podman":
        record("load docker", tool, run_measured(s.podman("load", "-q", "-i", str(image.docker_archive)), env=env))
        name = image.archive_name
        record("save docker", tool, run_measured(s.podman("save", "-q", "-o", str(out / "d.tar"), name), env=env))
        record("save oci", tool, run_measured(s.podman("save", "-q", "--format", "oci-archive", "-o",
                                                       str(out / "o.tar"), name), env=env))
        with push_target as push_ref:
            record("push", tool, run_measured(s.podman("push", "-q", "--tls-verify=false", name,
                                                       f"docker://{push_ref}"), env=env))
        s.wipe()
        record("load oci", tool, run_measured(s.podman("load", "-q", "-i", str(image.oci_archive)), env=env))
        s.wipe()
        record("pull", tool, run_measured(s.podman("pull", "-q", "--tls-verify=false",
                                                   f"docker://{image.reference}"), env=env))
    else:
        stored = f"{s.storage}{image.archive_name}"
        record("load docker", tool, run_measured(s.skopeo(f"docker-archive:{image.docker_archive}", stored),
                                                 env=env))
        record("save docker", tool, run_measured(s.skopeo(stored, f"docker-archive:{out / 'd.tar'}:"
                                                                  f"{image.archive_name}"), env=env))
        record("save oci", tool, run_measured(s.skopeo(stored, f"oci-archive:{out / 'o.tar'}:{TAG}"), env=env))
        with push_target as push_ref:
            record("push", tool, run_measured(s.skopeo("--dest-tls-verify=false", stored, f"docker://{push_ref}"),
                                              env=env))
        s.wipe()
        record("load oci", tool, run_measured(s.skopeo(f"oci-archive:{image.oci_archive}:{TAG}",
                                                       f"{s.storage}bench/{image.name}-oci:{TAG}"), env=env))
        s.wipe()
        record("pull", tool, run_measured(s.skopeo("--src-tls-verify=false", f"docker://{image.reference}",
                                                   f"{s.storage}{image.reference}"), env=env))
    s.wipe()


def missing_tools() -> list[str]:
    """The programs this section needs that are not installed."""
    return [t for t in NEEDED if shutil.which(t) is None]


def measure(results: Results, driver: str, mnt: Path, images: dict[str, list[Dataset]], runs: int,
            options: dict[str, str], work: Path) -> None:
    """Measure every operation of every tool on every image `runs` times; records go into `results`."""
    from layerstore.testing.registry import LocalRegistry

    missing = missing_tools()
    if missing:
        results.note(f"images section skipped on {driver}: missing {', '.join(missing)}")
        return
    work.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="images-", dir=work))
    stores = Stores(mnt, driver, options)
    try:
        with LocalRegistry(scratch / "registry") as registry:
            host = registry.host
            prepared = [Prepared(name, layers, scratch, host) for name, layers in images.items()]
            for image in prepared:
                image.build()
            stores.wipe()
            for image in prepared:
                print(f"  -- images: {image.name} ({len(image.layers)} layers, "
                      f"{image.uncompressed / 1e6:.1f} MB uncompressed)", flush=True)
                for run in range(runs):
                    order = TOOLS[run % len(TOOLS):] + TOOLS[:run % len(TOOLS)]
                    for tool in order:
                        def record(op: str, tool: str, m: Measurement, run: int = run, name: str = image.name) -> None:
                            results.add(Record(driver, name, f"image {op}", tool, run, m.seconds, m.maxrss_kb,
                                               m.ok, "" if m.ok else m.failure()))
                        try:
                            _turn(tool, image, stores, scratch, run, record)
                        except RuntimeError as exc:
                            results.note(f"images {image.name} {tool} run {run}: {exc}")
                            stores.wipe()
    finally:
        stores.close()
        shutil.rmtree(scratch, ignore_errors=True)


def images_table(results: Results) -> list[str]:
    """The images block of the report: medians per tool and the layerstore/podman, layerstore/skopeo ratios."""
    summary = summarise(results)
    rows = [(key, tools) for key, tools in summary.items() if key[2].startswith("image ")]
    if not rows:
        return []

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v * 1000:.0f}ms" if v < 1 else f"{v:.2f}s")

    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}" if a is not None and b else "-"

    header = (f"{'driver':8s} {'image':7s} {'op':12s} " + " ".join(f"{t:>11s}" for t in TOOLS)
              + f" {'ls/podman':>9s} {'ls/skopeo':>9s}  {'peak MB ls/podman/skopeo':>24s}  check")
    lines = ["", "Images (load, save, push, pull; medians; layerstore on the round's driver, podman and skopeo",
             "on containers/storage vfs in the same filesystem, the registry on 127.0.0.1):", header,
             "-" * len(header)]
    for (driver, image, op), tools in sorted(rows, key=lambda kv: (kv[0][0], kv[0][1],
                                                                    OPS.index(kv[0][2][6:]))):
        secs = {t: tools.get(t, {}).get("seconds") for t in TOOLS}
        peaks = "/".join(f"{tools[t]['maxrss_mb']:.0f}" if tools.get(t, {}).get("maxrss_mb") is not None else "-"
                         for t in TOOLS)
        failed = ", ".join(f"{t} FAILED" for t in TOOLS if tools.get(t, {}).get("failed"))
        lines.append(f"{driver:8s} {image:7s} {op[6:]:12s} " + " ".join(f"{fmt(secs[t]):>11s}" for t in TOOLS)
                     + f" {ratio(secs['layerstore'], secs['podman']):>9s}"
                     + f" {ratio(secs['layerstore'], secs['skopeo']):>9s}  {peaks:>24s}  {failed}")
    return lines
