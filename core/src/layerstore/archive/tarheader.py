"""Building tar headers: ustar blocks with a pax extended header when a value does not fit."""

from __future__ import annotations

from .tarfields import byte_sum

__all__ = [
    "BLOCK",
    "END_OF_ARCHIVE",
    "TYPE_BLOCKDEV",
    "TYPE_CHARDEV",
    "TYPE_DIRECTORY",
    "TYPE_FIFO",
    "TYPE_HARDLINK",
    "TYPE_REGULAR",
    "TYPE_SYMLINK",
    "padding",
    "tar_header",
]

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)
TYPE_REGULAR = b"0"
TYPE_HARDLINK = b"1"
TYPE_SYMLINK = b"2"
TYPE_CHARDEV = b"3"
TYPE_BLOCKDEV = b"4"
TYPE_DIRECTORY = b"5"
TYPE_FIFO = b"6"
_TYPE_PAX = b"x"
_PAX_NAME = b"././@PaxHeader"
_MAX_ID = 0o7777777
_MAX_SIZE = 0o77777777777
_NS = 1_000_000_000


def padding(size: int) -> bytes:
    """The zero bytes that complete a payload of `size` bytes to whole blocks."""
    return bytes(-size % BLOCK)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" %b=%b\n" % (key, value)
    length = len(body) + len(str(len(body)))
    if len(str(length)) != len(str(length - len(body))):
        length = len(body) + len(str(length))
    return b"%d%b" % (length, body)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Split a long name into ustar prefix and name (the slash between them is not stored), or None."""
    if len(name) <= 100:
        return b"", name
    cut = name.rfind(b"/", 0, 156)
    while cut > 0:
        rest = len(name) - cut - 1
        if rest > 100:
            return None
        if rest > 0 and name[cut + 1 :] != b"/":
            return name[:cut], name[cut + 1 :]
        cut = name.rfind(b"/", 0, cut)
    return None


def _block(
    name: bytes,
    *,
    prefix: bytes,
    typeflag: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    linkname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    header = bytearray(BLOCK)
    header[0 : len(name)] = name
    header[100:108] = _octal(mode, 8)
    header[108:116] = _octal(uid, 8)
    header[116:124] = _octal(gid, 8)
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b"        "
    header[156:157] = typeflag
    header[157 : 157 + len(linkname)] = linkname
    header[257:265] = b"ustar\x0000"
    header[329:337] = _octal(devmajor, 8)
    header[337:345] = _octal(devminor, 8)
    header[345 : 345 + len(prefix)] = prefix
    header[148:156] = b"%06o\0 " % byte_sum(header)
    return bytes(header)


def tar_header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    size: int = 0,
    mtime_ns: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: dict[str, bytes] | None = None,
) -> bytes:
    """Return the header block(s) of one member: a ustar header, preceded by a pax header when needed.

    A pax header carries what ustar cannot: long or non-ASCII names and link
    targets, large IDs and sizes, sub-second or out-of-range mtimes, and
    xattrs (``SCHILY.xattr.<name>``, raw values).
    """
    pax: list[bytes] = []
    split = _split_ustar(name) if name.isascii() else None
    if split is None:
        pax.append(_pax_record(b"path", name))
        split = (b"", name[:100])
    if len(linkname) > 100 or not linkname.isascii():
        pax.append(_pax_record(b"linkpath", linkname))
        linkname = linkname[:100]
    if uid > _MAX_ID:
        pax.append(_pax_record(b"uid", b"%d" % uid))
        uid = 0
    if gid > _MAX_ID:
        pax.append(_pax_record(b"gid", b"%d" % gid))
        gid = 0
    if size > _MAX_SIZE:
        pax.append(_pax_record(b"size", b"%d" % size))
        size_field = 0
    else:
        size_field = size
    seconds, fraction = divmod(mtime_ns, _NS)
    if fraction or not 0 <= seconds <= _MAX_SIZE:
        if fraction:
            value = (b"%d.%09d" % (seconds, fraction)).rstrip(b"0")
            if seconds < 0:  # divmod floors: write -1.5 s as "-1.5", not "-2.5"
                whole, frac = divmod(-mtime_ns, _NS)
                value = (b"-%d.%09d" % (whole, frac)).rstrip(b"0").rstrip(b".")
        else:
            value = b"%d" % seconds
        pax.append(_pax_record(b"mtime", value))
        seconds = min(max(seconds, 0), _MAX_SIZE)
    if xattrs:
        for key in sorted(xattrs):
            pax.append(_pax_record(b"SCHILY.xattr." + key.encode("utf-8", "surrogateescape"), xattrs[key]))
    prefix, short = split
    block = _block(
        short,
        prefix=prefix,
        typeflag=typeflag,
        mode=mode,
        uid=uid,
        gid=gid,
        size=size_field,
        mtime=seconds,
        linkname=linkname,
        devmajor=devmajor,
        devminor=devminor,
    )
    if not pax:
        return block
    data = b"".join(pax)
    pax_block = _block(
        _PAX_NAME,
        prefix=b"",
        typeflag=_TYPE_PAX,
        mode=0o644,
        uid=0,
        gid=0,
        size=len(data),
        mtime=0,
        linkname=b"",
        devmajor=0,
        devminor=0,
    )
    return pax_block + data + padding(len(data)) + block
