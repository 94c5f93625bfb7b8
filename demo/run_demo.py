"""A tour of layerstore, run by `make run`.

Builds two layer tars in a temporary directory, imports them into the store
./demo-store (vfs driver unless LAYERSTORE_DRIVER says otherwise) with the
`layerstore` command, and shows what the store does with them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
STORE = PROJECT / "demo-store"
LAYERSTORE = str(Path(sys.executable).parent / "layerstore")


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def layerstore(*args: str, capture: bool = False) -> str:
    """Run the CLI, echoing the command; stop the demo if it fails."""
    print(f"$ layerstore {' '.join(args)}", flush=True)
    proc = subprocess.run([LAYERSTORE, *args], capture_output=capture, text=True, check=False)
    if proc.returncode != 0:
        if capture:
            sys.stderr.write(proc.stderr)
        sys.exit(f"demo: `layerstore {' '.join(args)}` failed with exit status {proc.returncode}")
    if capture:
        print(proc.stdout, end="", flush=True)
        return proc.stdout
    return ""


def add(tf: tarfile.TarFile, name: str, data: bytes | None = None, *, mode: int = 0o644,
        link: str | None = None, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    info.mode = mode
    if data is None and link is None and kind == tarfile.REGTYPE:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(info)
    elif link is not None:
        info.type, info.linkname = kind, link
        tf.addfile(info)
    else:
        info.size = len(data or b"")
        tf.addfile(info, io.BytesIO(data or b""))


def base_layer(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("etc", "usr", "usr/bin", "usr/share", "usr/share/doc", "var", "var/cache"):
            add(tf, d)
        add(tf, "etc/hostname", b"demo\n")
        add(tf, "etc/motd", b"Welcome to the layerstore demo.\n")
        add(tf, "usr/bin/hello", b"#!/bin/sh\necho hello from a layer\n", mode=0o755)
        add(tf, "usr/bin/hi", link="usr/bin/hello", kind=tarfile.LNKTYPE)
        add(tf, "usr/bin/greet", link="hello", kind=tarfile.SYMTYPE)
        add(tf, "usr/share/doc/" + "a-rather-long-file-name-" * 5 + ".txt", b"long names survive\n")
        add(tf, "var/cache/index.db", os.urandom(64 * 1024))
        add(tf, "var/cache/old.log", b"stale\n" * 100)


def child_layer(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, "etc")
        add(tf, "etc/motd", b"Welcome to the layerstore demo, second layer.\n")
        add(tf, "etc/.wh.hostname", b"")  # whiteout: hostname is deleted
        add(tf, "var")
        add(tf, "var/cache")
        add(tf, "var/cache/.wh..wh..opq", b"")  # opaque: the old cache is hidden
        add(tf, "var/cache/fresh.db", b"new cache\n")
        add(tf, "srv")
        add(tf, "srv/app.conf", b"port = 8080\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    os.environ.setdefault("LAYERSTORE_DRIVER", "vfs")
    os.environ["LAYERSTORE_ROOT"] = str(STORE)
    print(f"layerstore demo: store {STORE}, driver {os.environ['LAYERSTORE_DRIVER']}")
    if STORE.exists():
        say("Starting from a clean store")
        listing = subprocess.run([LAYERSTORE, "ls", "--json"], capture_output=True, text=True, check=False)
        for image in json.loads(listing.stdout or "[]"):
            # A mount left by an earlier run must go before the files do.
            subprocess.run([LAYERSTORE, "umount", image["id"]], capture_output=True, check=False)
        shutil.rmtree(STORE)
        print(f"removed {STORE}")

    with tempfile.TemporaryDirectory(prefix="layerstore-demo-") as tmp:
        work = Path(tmp)
        base_tar, child_tar = work / "base.tar", work / "child.tar"
        base_layer(base_tar)
        child_layer(child_tar)

        say("Import a base layer (9 files: a hardlink, a symlink, a long name)")
        base = layerstore("import", "--message", "base system", str(base_tar), capture=True).strip()

        say("Import a child layer: changes motd, deletes etc/hostname (whiteout), hides var/cache (opaque dir)")
        child = layerstore("import", "--parent", base[:12], "--message", "app layer", str(child_tar),
                           capture=True).strip()

        say("The images")
        layerstore("ls")
        layerstore("ls", "--tree")

        say("What the child layer changes against its parent")
        layerstore("diff", child[:12])

        say("Export is byte-identical to what was imported")
        exported = work / "child-exported.tar"
        layerstore("export", child[:12], "-o", str(exported))
        original, again = sha256(child_tar), sha256(exported)
        print(f"sha256 imported: {original}")
        print(f"sha256 exported: {again}")
        print("identical" if original == again else "DIFFERENT")
        if original != again:
            sys.exit("demo: the export differs from the import")
        layerstore("digest", child[:12])

        say("Mount the child: the merged filesystem of both layers")
        mount = Path(layerstore("mount", child[:12], capture=True).strip())
        for path in sorted(mount.rglob("*")):
            rel = path.relative_to(mount)
            kind = "link -> " + os.readlink(path) if path.is_symlink() else ("dir" if path.is_dir() else "file")
            print(f"  /{rel}  ({kind})")
        print(f"  etc/motd says: {(mount / 'etc' / 'motd').read_text().strip()}")
        layerstore("umount", child[:12])

        say("Verify every layer (reassemble and compare digests)")
        layerstore("check")

    say("Done")
    print(f"The store stays in {STORE}; try: LAYERSTORE_ROOT={STORE} {LAYERSTORE} info")


if __name__ == "__main__":
    main()
