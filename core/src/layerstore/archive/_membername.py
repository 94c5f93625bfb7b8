"""Member names and link targets as components: the syntax half of the containment rule.

A tar member's own name must be relative and free of ``..`` (`split_name`
refuses anything else).  Resolving a name or a link target inside a layer is
a walk over a stack of components, where ``..`` drops the last resolved
component but never goes above the root and an absolute link target starts
again at the root (`next_component`, `push_target`); at most `MAX_LINKS`
links are followed on one walk.  The walkers themselves are
`layerstore.archive._safepath.SafeTree` (extraction) and
`layerstore.archive.inroot` (reading back).
"""

from __future__ import annotations

from ..errors import InvalidArchive

__all__ = ["MAX_LINKS", "next_component", "push_target", "split_name"]

#: Symbolic links followed while resolving one path before giving up (the kernel's limit).
MAX_LINKS = 40


def split_name(name: str, what: str = "tar entry") -> list[str]:
    """Return the components of a member name (``./a//b/`` -> ``["a", "b"]``; the root is ``[]``).

    Raises `InvalidArchive` naming the entry for an absolute name or a ``..`` component.
    """
    if name.startswith("/"):
        raise InvalidArchive(
            f"unsafe {what} {name!r}: absolute paths are refused; use names relative to the layer root"
        )
    # Substring tests first: a name may have thousands of components, and
    # scanning the list for each rule would cost as much again per entry.
    bare = name.rstrip("/")
    parts = bare.split("/")
    if not bare or "//" in bare or "." in parts[0] or "/." in bare:
        parts = [p for p in parts if p and p != "."]
        if ".." in parts:
            raise InvalidArchive(f"unsafe {what} {name!r}: '..' components are refused")
    return parts


def next_component(todo: list[str], done: list[str]) -> str | None:
    """Pop the next component to resolve from the stack `todo`; None when it needed no lookup.

    ``""`` and ``.`` are skipped; ``..`` drops the last resolved component of
    `done`, never going above the root.
    """
    comp = todo.pop()
    if comp in ("", "."):
        return None
    if comp == "..":
        if done:
            done.pop()
        return None
    return comp


def push_target(todo: list[str], done: list[str], target: str) -> None:
    """Continue a resolution with a link's `target`: an absolute one starts again at the root."""
    if target.startswith("/"):
        done.clear()
    todo.extend(reversed(target.split("/")))
