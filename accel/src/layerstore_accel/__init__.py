"""Optional native code for layerstore: creating small files of a new layer without the GIL.

`create_files` (in the extension module ``_files``) creates a batch of files,
each a new name with its content and times, in one call that releases the GIL
for all of its system calls.  layerstore uses it when this distribution is
installed (`layerstore.archive._filepool`) and otherwise creates every file
on the extracting thread, with identical results.
"""

from ._files import create_files

__all__ = ["create_files"]
