"""Optional native code for layerstore: small files of a new layer created without the GIL, tar headers decoded in C.

`create_files` (in the extension module ``_files``) creates a batch of files,
each a new name with its content and times, in one call that releases the GIL
for all of its system calls.  layerstore uses it when this distribution is
installed (`layerstore.archive._filepool`) and otherwise creates every file
on the extracting thread, with identical results.

`parse_header` (in ``_tarheader``) decodes a tar header block of the common
shape (checksum, name, size, mode, IDs, time, link target, owner names) in
one call, and answers None for any other, which layerstore's archive reader
(`layerstore.archive.tarstream`) then decodes in Python: the entries are the
same either way.
"""

from ._files import create_files
from ._tarheader import parse_header

__all__ = ["create_files", "parse_header"]
