"""Helpers of the image tests: images built by umoci and skopeo (never by layerstore), tree snapshots, tools."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from layerstore.testing import unavailable

TAG = "v1"
NAME = "example.com/team/app:v1"
BASE_DIRS = 20
FILES_PER_DIR = 100  # 2,000 files in the base layer


def tool(name: str) -> str:
    """The path of a Debian tool the tests need; unavailable (a failure under CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        unavailable(name, f"the {name} program is not installed (Debian package {name})")
    return path


def run(*argv: str | os.PathLike[str], cwd: Path | None = None) -> str:
    """Run a command, failing the test with its stderr when it fails; returns stdout."""
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc.stdout.decode()


_KEY_RE = re.compile(r"[a-z][a-z0-9_]*")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_USER_DATA = frozenset({"labels", "annotations"})  # keys chosen by image authors, shown as they are


def assert_json_schema(data: Any, where: str = "$") -> None:
    """Check the one ``--json`` schema: snake_case keys; digests (``*digest``, ``chain_id``, ``diff_id``, an
    image's ``id``) as ``sha256:<hex>`` or null; a bare 64-hex string only as a layer's ``id`` (an object that
    has a ``chain_id``); sizes and byte counts as integers."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            assert_json_schema(item, f"{where}[{i}]")
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        at = f"{where}.{key}"
        assert _KEY_RE.fullmatch(key), f"{at}: key is not snake_case"
        if key.endswith("digest") or key in ("chain_id", "diff_id") or (key == "id" and "chain_id" not in data):
            assert value is None or _DIGEST_RE.fullmatch(value), f"{at}: {value!r} is not sha256:<hex>"
        if isinstance(value, str) and _HEX_RE.fullmatch(value):
            assert key == "id" and "chain_id" in data, f"{at}: a digest without its sha256: prefix"
        if key in ("size", "bytes") or key.endswith(("_size", "_bytes", "_count")):
            assert isinstance(value, int), f"{at}: {value!r} is not a number of bytes (or a count)"
        if key not in _USER_DATA:
            assert_json_schema(value, at)


def _write_base(rootfs: Path) -> None:
    lib = rootfs / "usr" / "lib"
    for d in range(BASE_DIRS):
        directory = lib / f"d{d}"
        directory.mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (directory / f"f{f}").write_bytes(f"file {d}/{f}\n".encode() * (f % 7 + 1))
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (rootfs / "bin").mkdir()
    tool_path = rootfs / "bin" / "tool"
    tool_path.write_bytes(b"\x7fELF" + bytes(20000))
    tool_path.chmod(0o4755)
    (rootfs / "bin" / "link").symlink_to("tool")
    os.link(tool_path, rootfs / "bin" / "hard")
    owned = rootfs / "home" / "user"
    owned.mkdir(parents=True)
    (owned / "notes").write_text("mine\n")
    os.chown(owned / "notes", 1000, 1000)
    os.chown(owned, 1000, 1000)
    (rootfs / "empty").mkdir()


def _write_delta(rootfs: Path) -> None:
    (rootfs / "usr" / "lib" / "d0" / "f0").unlink()
    shutil.rmtree(rootfs / "usr" / "lib" / "d1")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    (rootfs / "etc" / "new").write_text("added in layer 2\n")
    (rootfs / "home" / "user" / "notes").unlink()


def build_umoci_layout(workdir: Path) -> Path:
    """An OCI layout at ``workdir/umoci`` with image TAG: a base root filesystem plus a whiteout delta.

    Built by umoci only: ``umoci new``, ``unpack``, ``repack`` and ``config``.
    """
    umoci = tool("umoci")
    layout = workdir / "umoci"
    bundle = workdir / "bundle"
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:{TAG}")
    run(umoci, "unpack", "--image", f"{layout}:{TAG}", bundle)
    _write_base(bundle / "rootfs")
    run(umoci, "repack", "--image", f"{layout}:{TAG}", bundle)
    shutil.rmtree(bundle)
    run(umoci, "unpack", "--image", f"{layout}:{TAG}", bundle)
    _write_delta(bundle / "rootfs")
    run(umoci, "repack", "--image", f"{layout}:{TAG}", bundle)
    shutil.rmtree(bundle)
    run(umoci, "config", "--image", f"{layout}:{TAG}", "--config.env", "GREETING=hello",
        "--config.cmd", "/bin/tool", "--config.workingdir", "/home/user")
    run(umoci, "gc", "--layout", layout)
    return layout


def unpack(layout: Path, tag: str, dest: Path) -> Path:
    """``umoci unpack`` of `layout`:`tag` into `dest`; returns the root filesystem."""
    run(tool("umoci"), "unpack", "--image", f"{layout}:{tag}", dest)
    return dest / "rootfs"


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below `root` (not the root) with type, mode, owner, size, content digest or link target, and
    the mtime of non-directories."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            detail: Any = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(path)
            mtime = None if stat.S_ISDIR(st.st_mode) else int(st.st_mtime)
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, detail, mtime)
    return out


def skopeo_inspect(transport: str, *, config: bool = False) -> Any:
    """``skopeo inspect`` of an image (``docker-archive:PATH``, ``oci:DIR:TAG``, ...), parsed; with `config`,
    the config's digest (what Docker and Podman call the image ID)."""
    if config:
        raw = run(tool("skopeo"), "inspect", "--raw", "--config", transport).encode()
        return "sha256:" + hashlib.sha256(raw).hexdigest()
    return json.loads(run(tool("skopeo"), "inspect", transport))


def skopeo_config(transport: str) -> dict[str, Any]:
    """``skopeo inspect --config`` of an image, parsed."""
    return json.loads(run(tool("skopeo"), "inspect", "--config", transport))  # type: ignore[no-any-return]


class Podman:
    """podman with its vfs driver in a private root (configuration files of its own; nothing of the host's)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        # podman refuses a runroot path longer than 50 characters: a short private one, removed with the rest.
        self.runroot = Path(tempfile.mkdtemp(prefix="lsp-", dir="/tmp"))
        (base / "registries.conf").write_text("unqualified-search-registries = []\n")
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.runroot}"\ngraphroot = "{base}/root"\n')
        (base / "containers.conf").write_text("[engine]\nevents_logger = \"none\"\n")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(base / "registries.conf"),
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "XDG_RUNTIME_DIR": str(base / "xdg"),
        }
        (base / "xdg").mkdir(exist_ok=True)

    def __call__(self, *args: str | os.PathLike[str]) -> str:
        argv = [tool("podman"), "--storage-driver", "vfs", "--root", str(self.base / "root"),
                "--runroot", str(self.runroot), *map(str, args)]
        proc = subprocess.run(argv, capture_output=True, env=self.env, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(map(str, args))} failed: {proc.stderr.decode()}")
        return proc.stdout.decode()

    def image(self, name: str) -> dict[str, Any]:
        """``podman image inspect`` of one image."""
        return json.loads(self("image", "inspect", name))[0]  # type: ignore[no-any-return]

    def remove_storage(self) -> None:
        """Remove podman's storage (vfs layers are plain directories)."""
        with_storage = self.base / "root"
        if with_storage.exists():
            subprocess.run([tool("podman"), "--storage-driver", "vfs", "--root", str(with_storage),
                            "--runroot", str(self.runroot), "system", "reset", "--force"],
                           capture_output=True, env=self.env, check=False)
            shutil.rmtree(with_storage, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)
