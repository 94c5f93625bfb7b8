"""Optional native code for layerstore: small files without the GIL, tar headers, plain files and tar-split in C.

`create_files` (in the extension module ``_files``) creates a batch of files,
each a new name with its content and times, in one call that releases the GIL
for all of its system calls.  layerstore uses it when this distribution is
installed (`layerstore.archive._filepool`) and otherwise creates every file
on the extracting thread, with identical results.

`parse_header` (in ``_tarheader``) decodes a tar header block of the common
shape (checksum, name, size, mode, IDs, time, link target, owner names) in
one call, and answers None for any other, which layerstore's archive reader
(`layerstore.archive.tarstream`) then decodes in Python: the entries are the
same either way.  `parse_pax` (in the same module) does the same for the
records of a pax header.

`take_plain_files` (in ``_plainfiles``) takes a run of plain small regular
files of a new layer (the common header shape, a clean name in a directory
the extraction has made, the extracting user's owner, a mode ``open`` gives
as it is) from the archive reader's buffer, with their bookkeeping, in one
call, and stops at the first other member, which layerstore's extraction
(`layerstore.archive.apply`) then takes in Python: the layer is the same.

`segment_members` (in ``_tarsplit``) records a run of tar members of the
common shape (with at most one plain pax header each) as tar-split entries,
and stops before the first other member, which layerstore's recorder
(`layerstore.tarsplit.segmenter`) then takes in Python: the metadata is the
same byte for byte.
"""

from ._files import create_files
from ._plainfiles import take_plain_files
from ._tarheader import parse_header, parse_pax
from ._tarsplit import segment_members

__all__ = ["create_files", "parse_header", "parse_pax", "segment_members", "take_plain_files"]
