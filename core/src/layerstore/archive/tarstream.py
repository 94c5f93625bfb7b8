"""A streaming reader of tar archives for applying layers.

It parses headers itself (ustar, GNU and old-GNU, v7, pax with global
headers, GNU long names and links, base-256 numbers) and hands out one
`TarEntry` at a time; the caller copies the payload of the current entry to a
file descriptor or leaves it, and the reader skips what was not consumed.
After the end-of-archive block it reads the stream to its end; an archive
that ends right after its last entry, without end-of-archive blocks, or with
a single zero block, is complete too (as Go's ``archive/tar`` reads it).  Every
malformation is an `InvalidArchive` naming the entry when it is known.
"""

from __future__ import annotations

import base64
import errno
import os
import urllib.parse
from collections.abc import Iterator
from typing import BinaryIO
from zlib import adler32

from ..errors import InvalidArchive, StorageFull

__all__ = [
    "BLOCK",
    "BLOCKDEV",
    "CHARDEV",
    "DIRECTORY",
    "FIFO",
    "HARDLINK",
    "REGULAR",
    "SYMLINK",
    "TarEntry",
    "TarReader",
]

BLOCK = 512
_CHUNK = 1 << 20
_MAX_META = 64 << 20  # pax headers and GNU long names larger than this are refused
_ZERO_BLOCK = bytes(BLOCK)

REGULAR = "file"
DIRECTORY = "dir"
SYMLINK = "symlink"
HARDLINK = "hardlink"
CHARDEV = "char"
BLOCKDEV = "block"
FIFO = "fifo"

_KINDS: dict[int, str] = {
    0x30: REGULAR,  # '0'
    0x00: REGULAR,  # old '\0'
    0x37: REGULAR,  # '7' contiguous file
    0x31: HARDLINK,
    0x32: SYMLINK,
    0x33: CHARDEV,
    0x34: BLOCKDEV,
    0x35: DIRECTORY,
    0x36: FIFO,
    0x44: DIRECTORY,  # 'D' GNU dump directory: a directory whose payload lists names
}
_PAX_LOCAL = (0x78, 0x58)  # 'x', Solaris 'X'
_PAX_GLOBAL = 0x67  # 'g'
_GNU_LONGNAME = 0x4C  # 'L'
_GNU_LONGLINK = 0x4B  # 'K'
_GNU_SPARSE = 0x53  # 'S'
_GNU_VOLUME = 0x56  # 'V'
_SPARSE_MAP = b"GNU.sparse.map"
_SPARSE_PAIR_KEYS = (b"GNU.sparse.offset", b"GNU.sparse.numbytes")
_MAX_SPARSE_REGIONS = 1 << 20
_USTAR_MAGIC = b"ustar\x00"
_GNU_MAGIC = b"ustar  \x00"


class TarEntry:
    """One member of a tar archive with its extended headers applied.

    `kind` is one of the module constants REGULAR, DIRECTORY, SYMLINK,
    HARDLINK, CHARDEV, BLOCKDEV, FIFO.  Names are `str`; bytes that are not
    UTF-8 are kept as surrogate escapes (``os.fsencode`` gives them back).
    Times are nanoseconds since the epoch; `atime_ns` is None when the archive
    does not carry one.  `xattrs` maps attribute names to raw values.  A
    sparse regular file has `sparse`, its data regions as (offset, length)
    pairs, and `size` is its logical size; else `sparse` is None.
    """

    __slots__ = (
        "atime_ns",
        "devmajor",
        "devminor",
        "gid",
        "gname",
        "kind",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "size",
        "sparse",
        "uid",
        "uname",
        "xattrs",
    )

    def __init__(self) -> None:
        self.name = ""
        self.kind = REGULAR
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0
        self.mtime_ns = 0
        self.atime_ns: int | None = None
        self.linkname = ""
        self.devmajor = 0
        self.devminor = 0
        self.uname = ""
        self.gname = ""
        self.xattrs: dict[str, bytes] = {}
        self.sparse: list[tuple[int, int]] | None = None

    def __repr__(self) -> str:
        return f"<TarEntry {self.kind} {self.name!r} size={self.size}>"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _field_text(raw: bytes) -> str:
    if not raw or not raw[0]:
        return ""
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


def _number(raw: bytes, what: str, name: str) -> int:
    if raw[0] < 0x80:
        # Fast path for the usual "0000644\0" / "0012345\0 " fields: when no NUL is left
        # after trimming, this is exactly the octal text the general path below parses.
        try:
            return int(raw.rstrip(b" \0"), 8)
        except ValueError:
            pass
    return _number_general(raw, what, name)


def _number_general(raw: bytes, what: str, name: str) -> int:
    first = raw[0]
    if first & 0x80:
        # base-256 (GNU): big-endian two's complement, 0x80 marks positive, 0xff negative
        value = int.from_bytes(raw[1:], "big")
        if first == 0xFF:
            value -= 1 << (8 * (len(raw) - 1))
        else:
            value |= (first & 0x7F) << (8 * (len(raw) - 1))
        return value
    end = raw.find(b"\0")
    digits = (raw if end < 0 else raw[:end]).strip()
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise InvalidArchive(f"corrupt tar header of entry {name!r}: bad {what} field {raw!r}") from None


def _byte_sum(block: bytes) -> int:
    # The header checksum's byte sum in C: Adler-32's first component is 1 + the
    # byte sum modulo 65521, exact over 256 bytes (at most 65280).
    return (adler32(block[:256]) & 0xFFFF) + (adler32(block[256:]) & 0xFFFF) - 2


def _pax_time(value: bytes, name: str) -> int:
    text = value.decode("ascii", "replace").strip()
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    whole, _, frac = text.partition(".")
    if (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
        raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad time {value!r}")
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if negative else ns


def _pax_records(data: bytes, name: str) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # some writers pad the pax payload with NULs
            break
        space = data.find(b" ", pos, pos + 24)
        if space < 0:
            raise InvalidArchive(f"corrupt pax header before entry {name!r}: bad record length")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidArchive(f"corrupt pax header before entry {name!r}: bad record length") from None
        stop = pos + length
        if length <= space - pos + 1 or stop > end or data[stop - 1] != 0x0A:
            raise InvalidArchive(f"corrupt pax header before entry {name!r}: record overruns its length")
        key, eq, value = data[space + 1 : stop - 1].partition(b"=")
        if not eq:
            raise InvalidArchive(f"corrupt pax header before entry {name!r}: record without '='")
        if key in _SPARSE_PAIR_KEYS:  # sparse 0.0 repeats these: keep them all, in order
            previous = records.get(_SPARSE_MAP)
            records[_SPARSE_MAP] = value if previous is None else previous + b"," + value
        else:
            records[key] = value
        pos = stop
    return records


class TarReader:
    """Iterate over the entries of an uncompressed tar stream, read strictly sequentially.

    Use ``for entry in reader:``; while an entry is current, `copy_to` writes
    its payload to a file descriptor.  Unread payload is skipped when the next
    entry is requested.  The stream is read to its end after the archive's
    end-of-archive block.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._readinto = getattr(stream, "readinto", None)
        self._remaining = 0
        self._padding = 0
        self._global: dict[bytes, bytes] = {}
        self._last = ""
        self._current = ""
        self._count = 0
        # The stream is read in large chunks into this buffer and headers and
        # payloads are taken from it: one read call per chunk, not per entry.
        self._buffer = bytearray(_CHUNK)
        self._view = memoryview(self._buffer)
        self._pos = 0
        self._end = 0
        self.finished = False
        # Position of the current member among tar-split's file entries (global headers count).
        self.index = -1

    def __iter__(self) -> Iterator[TarEntry]:
        while True:
            entry = self.next()
            if entry is None:
                return
            yield entry

    # -- low level ---------------------------------------------------------

    def _fill(self) -> int:
        """Refill the (fully consumed) buffer from the stream; return the number of bytes now buffered."""
        readinto = self._readinto
        if readinto is not None:
            got = int(readinto(self._view) or 0)
        else:
            data = self._stream.read(_CHUNK)
            got = len(data)
            self._view[:got] = data
        self._pos = 0
        self._end = got
        return got

    def _take(self, n: int) -> bytes:
        """Return up to `n` next bytes (fewer only at the end of the stream)."""
        pos = self._pos
        if self._end - pos >= n:
            self._pos = pos + n
            return bytes(self._view[pos : pos + n])
        parts = []
        while n > 0:
            if self._pos == self._end and not self._fill():
                break
            pos = self._pos
            take = min(n, self._end - pos)
            parts.append(self._view[pos : pos + take].tobytes())
            self._pos = pos + take
            n -= take
        return b"".join(parts)

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._take(n)
        if len(data) != n:
            raise InvalidArchive(f"truncated tar archive: {what} ends early; the archive is incomplete")
        return data

    def _discard(self, n: int, what: str) -> None:
        while n > 0:
            if self._pos == self._end and not self._fill():
                raise InvalidArchive(f"truncated tar archive: {what} ends early; the archive is incomplete")
            take = min(n, self._end - self._pos)
            self._pos += take
            n -= take

    def _drain(self) -> None:
        self._pos = self._end
        while self._fill():
            pass
        self._pos = self._end = 0

    def copy_sparse_to(self, fd: int, regions: list[tuple[int, int]], size: int, path: str = "") -> None:
        """Write the current sparse entry's data `regions` at their offsets in `fd`, leaving holes; size it `size`."""
        padding = self._padding
        self._padding = 0
        for offset, length in regions:
            if length:
                os.lseek(fd, offset, os.SEEK_SET)
                self._remaining -= length
                self._copy(fd, length, path)
        os.ftruncate(fd, size)
        self._padding = padding
        self.skip()

    def copy_to(self, fd: int, path: str = "") -> None:
        """Write the payload of the current entry to `fd` (at its position) and consume its padding.

        `StorageFull` names `path` when the disk or quota is full.
        """
        left = self._remaining
        padding = self._padding
        self._remaining = self._padding = 0
        self._copy(fd, left, path)
        if padding:
            if self._end - self._pos >= padding:
                self._pos += padding
            else:
                self._discard(padding, f"data of entry {self._current!r}")

    def _copy(self, fd: int, left: int, path: str) -> None:
        view = self._view
        write = os.write
        try:
            while left > 0:
                pos = self._pos
                if pos == self._end:
                    if not self._fill():
                        raise InvalidArchive(
                            f"truncated tar archive: data of entry {self._current!r} ends early; "
                            "the archive is incomplete"
                        )
                    pos = 0
                stop = min(self._end, pos + left)
                written = write(fd, view[pos:stop])
                while pos + written < stop:
                    written += write(fd, view[pos + written : stop])
                self._pos = stop
                left -= stop - pos
        except OSError as exc:
            if exc.errno in _FULL:
                raise StorageFull(f"no space left writing {path or self._current!r}: {exc.strerror}") from exc
            raise

    def skip(self) -> None:
        """Skip whatever is left of the current entry's payload."""
        left = self._remaining + self._padding
        self._remaining = self._padding = 0
        if left:
            self._discard(left, f"data of entry {self._current!r}")

    def _payload(self, size: int, name: str) -> bytes:
        if size > _MAX_META:
            raise InvalidArchive(f"tar extension header before entry {name!r} is too large ({size} bytes)")
        data = self._read_exact(size, f"extension header after entry {name!r}")
        pad = (-size) % BLOCK
        if pad:
            self._read_exact(pad, f"extension header after entry {name!r}")
        return data

    # -- entries -----------------------------------------------------------

    def next(self) -> TarEntry | None:
        """Return the next entry, or None after the end of the archive (the stream is then read to its end)."""
        if self.finished:
            return None
        if self._remaining or self._padding:
            self.skip()
        local: dict[bytes, bytes] | None = None
        long_name: str | None = None
        long_link: str | None = None
        last = self._current
        while True:
            pos = self._pos
            if self._end - pos >= BLOCK:
                self._pos = pos + BLOCK
                header = bytes(self._view[pos : pos + BLOCK])
            else:
                header = self._take(BLOCK)
            if len(header) != BLOCK:
                if self._count == 0:
                    raise InvalidArchive(
                        "not a tar archive (the input is empty or shorter than one tar header); "
                        "a layer must be a tar, optionally gzip, bzip2, xz or zstd compressed"
                    )
                if header:
                    raise InvalidArchive(
                        f"truncated tar archive: the header after entry {last!r} is cut after {len(header)} of "
                        f"{BLOCK} bytes; the archive is incomplete"
                    )
                if local is not None or long_name is not None or long_link is not None:
                    raise InvalidArchive(
                        f"truncated tar archive: it ends inside the extension headers after entry {last!r}"
                    )
                # No end-of-archive blocks: the archive ends with its last entry (Go's reader accepts that).
                self.finished = True
                return None
            if header == _ZERO_BLOCK:
                self.finished = True
                self._drain()
                return None
            self._count += 1
            try:
                stored = _number(header[148:156], "checksum", last)
            except InvalidArchive:
                stored = -1
            computed = (adler32(header[:256]) & 0xFFFF) + (adler32(header[256:]) & 0xFFFF) - 2  # `_byte_sum`
            computed += 256 - sum(header[148:156])
            if stored != computed:
                # Old writers summed signed bytes.
                signed = computed - 256 * sum(1 for b in header if b > 127)
                signed += 256 * sum(1 for b in header[148:156] if b > 127)
                if stored != signed:
                    if self._count == 1:
                        raise InvalidArchive(
                            "not a tar archive (no valid tar header at the start); "
                            "a layer must be a tar, optionally gzip, bzip2, xz or zstd compressed"
                        )
                    raise InvalidArchive(f"corrupt tar archive: bad header checksum after entry {last!r}")
            typeflag = header[156]
            magic = header[257:263]
            raw_name = header[0:100]
            end = raw_name.find(b"\0")
            if end >= 0:
                raw_name = raw_name[:end]
            if magic == _USTAR_MAGIC and header[345] != 0:
                prefix = header[345:500]
                end = prefix.find(b"\0")
                if end >= 0:
                    prefix = prefix[:end]
                raw_name = prefix + b"/" + raw_name
            name = _text(raw_name)
            size = _number(header[124:136], "size", name)
            if size < 0:
                raise InvalidArchive(f"corrupt tar header of entry {name!r}: negative size")
            if typeflag in _PAX_LOCAL:
                records = _pax_records(self._payload(size, last), last)
                if local is None:
                    local = records
                else:
                    local.update(records)
                continue
            if typeflag == _PAX_GLOBAL:
                self._global.update(_pax_records(self._payload(size, last), last))
                self.index += 1  # tar-split counts a global header as a member
                continue
            if typeflag == _GNU_LONGNAME:
                long_name = _field_text(self._payload(size, last))
                continue
            if typeflag == _GNU_LONGLINK:
                long_link = _field_text(self._payload(size, last))
                continue
            if typeflag == _GNU_VOLUME:
                self._discard(size + (-size) % BLOCK, f"volume header after entry {last!r}")
                self.index += 1
                continue
            break

        entry = TarEntry()
        self.index += 1
        if long_name is not None:
            name = long_name
        kind = _KINDS.get(typeflag)
        if kind is None:
            if typeflag != _GNU_SPARSE:
                raise InvalidArchive(f"tar entry {name!r} has unsupported type {chr(typeflag)!r}")
            kind = REGULAR
            entry.sparse = self._old_gnu_sparse(header, name)
            entry.size = _number(header[483:495], "sparse real size", name)
        try:
            # `_number`'s fast path, inlined for the usual octal fields; anything else takes the general one.
            mode = int(header[100:108].rstrip(b" \0"), 8)
            uid = int(header[108:116].rstrip(b" \0"), 8)
            gid = int(header[116:124].rstrip(b" \0"), 8)
            mtime = int(header[136:148].rstrip(b" \0"), 8)
        except ValueError:
            mode = _number(header[100:108], "mode", name)
            uid = _number(header[108:116], "uid", name)
            gid = _number(header[116:124], "gid", name)
            mtime = _number(header[136:148], "mtime", name)
        entry.mode = mode & 0o7777
        entry.uid = uid
        entry.gid = gid
        entry.mtime_ns = mtime * 1_000_000_000
        linkname = long_link if long_link is not None else _field_text(header[157:257])
        if magic == _USTAR_MAGIC or magic == _GNU_MAGIC[:6]:
            entry.uname = _field_text(header[265:297])
            entry.gname = _field_text(header[297:329])
            if kind is CHARDEV or kind is BLOCKDEV:
                entry.devmajor = _number(header[329:337], "devmajor", name)
                entry.devminor = _number(header[337:345], "devminor", name)
            if header[257:265] == _GNU_MAGIC and header[345] != 0:
                atime = _number(header[345:357], "atime", name)
                if atime:
                    entry.atime_ns = atime * 1_000_000_000
        sparse_v1: int | None = None  # logical size of a sparse 1.0 entry (its map opens the data)
        sparse_size = entry.size
        if self._global or local:
            records = dict(self._global)
            if local:
                records.update(local)
            name, linkname, size = self._apply_pax(entry, records, name, linkname, size)
            if any(key.startswith(b"GNU.sparse.") for key in records):
                name, sparse_v1 = self._pax_sparse(entry, records, name)
                sparse_size = entry.size
        if kind is REGULAR and name.endswith("/"):
            kind = DIRECTORY  # v7 tar marks directories with a trailing slash only
        entry.kind = kind
        entry.name = name
        entry.linkname = linkname
        if kind is REGULAR or (typeflag == 0x44):
            entry.size = size if kind is REGULAR else 0
            if entry.sparse is not None or sparse_v1 is not None:
                entry.size = sparse_size if sparse_v1 is None else sparse_v1
            self._remaining = size
            self._padding = (-size) % BLOCK
        self._last = self._current
        self._current = name
        if entry.sparse is not None or sparse_v1 is not None:
            entry.name = name
            self._sparse(entry, sparse_v1, size)
        return entry

    def _apply_pax(
        self, entry: TarEntry, records: dict[bytes, bytes], name: str, linkname: str, size: int
    ) -> tuple[str, str, int]:
        for key, value in records.items():
            if key == b"path":
                if value:
                    name = _text(value)
            elif key == b"linkpath":
                if value:
                    linkname = _text(value)
            elif key == b"size":
                if value:
                    size = self._pax_int(value, "size", name)
            elif key == b"uid":
                if value:
                    entry.uid = self._pax_int(value, "uid", name)
            elif key == b"gid":
                if value:
                    entry.gid = self._pax_int(value, "gid", name)
            elif key == b"mtime":
                if value:
                    entry.mtime_ns = _pax_time(value, name)
            elif key == b"atime":
                if value:
                    entry.atime_ns = _pax_time(value, name)
            elif key == b"uname":
                entry.uname = _text(value)
            elif key == b"gname":
                entry.gname = _text(value)
            elif key.startswith(b"SCHILY.xattr."):
                entry.xattrs[_text(key[13:])] = value
            elif key.startswith(b"LIBARCHIVE.xattr."):
                attr = os.fsdecode(urllib.parse.unquote_to_bytes(key[17:]))
                try:
                    entry.xattrs[attr] = base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)
                except ValueError:
                    raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad xattr {attr!r}") from None
        if "\0" in name or "\0" in linkname:
            raise InvalidArchive(f"tar entry {name!r} has a NUL byte in its name or link target")
        return name, linkname, size

    def _old_gnu_sparse(self, header: bytes, name: str) -> list[tuple[int, int]]:
        """The regions of an old-GNU sparse header ('S') and its extension blocks."""
        regions: list[tuple[int, int]] = []
        block, start, count, extended = header, 386, 4, header[482]
        while True:
            for i in range(count):
                field = block[start + 24 * i : start + 24 * i + 24]
                if not field[0]:
                    break
                regions.append((_number(field[:12], "sparse offset", name), _number(field[12:], "sparse size", name)))
            if not extended:
                return regions
            if len(regions) > _MAX_SPARSE_REGIONS:
                raise InvalidArchive(f"tar entry {name!r} has too many sparse regions")
            block = self._read_exact(BLOCK, f"sparse header of entry {name!r}")
            start, count, extended = 0, 21, block[504]

    def _pax_sparse(self, entry: TarEntry, records: dict[bytes, bytes], name: str) -> tuple[str, int | None]:
        """Apply the GNU.sparse records (formats 0.0, 0.1 and 1.0); return the name and, for 1.0, the real size."""
        real_name = records.get(b"GNU.sparse.name")
        if real_name:
            name = _text(real_name)
        major = records.get(b"GNU.sparse.major")
        if major is not None:
            if major != b"1" or records.get(b"GNU.sparse.minor", b"0") != b"0":
                raise InvalidArchive(f"tar entry {name!r} uses an unknown sparse format {major!r}")
            return name, self._pax_int(records.get(b"GNU.sparse.realsize", b"0"), "sparse real size", name)
        numbers = records.get(_SPARSE_MAP, b"")
        values = [self._pax_int(v, "sparse map", name) for v in numbers.split(b",")] if numbers else []
        if len(values) % 2:
            raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: an odd number of values")
        entry.sparse = list(zip(values[::2], values[1::2], strict=True))
        entry.size = self._pax_int(records.get(b"GNU.sparse.size", b"0"), "sparse size", name)
        return name, None

    def _sparse(self, entry: TarEntry, v1_size: int | None, packed: int) -> None:
        """Read a 1.0 map from the data; check that the regions fit the data and the logical size."""
        name = entry.name
        if v1_size is not None:
            entry.sparse = self._sparse_v1_map(name)
        regions = entry.sparse or []
        end = 0
        total = 0
        for offset, length in regions:
            if offset < end or length < 0:
                raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: regions overlap or go backwards")
            end = offset + length
            total += length
        if end > entry.size or total != self._remaining:
            raise InvalidArchive(
                f"corrupt sparse map of tar entry {name!r}: {total} bytes of regions for {self._remaining} of data "
                f"and a size of {entry.size} (packed {packed})"
            )

    def _sparse_v1_map(self, name: str) -> list[tuple[int, int]]:
        """Read the decimal map that opens a sparse 1.0 entry's data (whole blocks), consuming it."""
        text = b""
        numbers: list[int] = []
        wanted: int | None = None
        while wanted is None or len(numbers) < 1 + 2 * wanted:
            if self._remaining < BLOCK:
                raise InvalidArchive(f"corrupt sparse map of tar entry {name!r}: it does not fit its data")
            text += self._read_exact(BLOCK, f"sparse map of entry {name!r}")
            self._remaining -= BLOCK
            lines = text.split(b"\n")
            text = lines.pop()
            for line in lines:
                numbers.append(self._pax_int(line, "sparse map", name))
            text = b"" if not text.strip(b"\0") else text
            wanted = numbers[0] if numbers else None
            if wanted is not None and wanted > _MAX_SPARSE_REGIONS:
                raise InvalidArchive(f"tar entry {name!r} has too many sparse regions")
            lines = []
        values = numbers[1 : 1 + 2 * wanted]
        return list(zip(values[::2], values[1::2], strict=True))

    @staticmethod
    def _pax_int(value: bytes, what: str, name: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise InvalidArchive(f"corrupt pax header of entry {name!r}: bad {what} {value!r}") from None
        if number < 0:
            raise InvalidArchive(f"corrupt pax header of entry {name!r}: negative {what}")
        return number


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
