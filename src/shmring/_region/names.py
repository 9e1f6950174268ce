"""Names of regions: namespaces, POSIX segment names, and the segments of a
namespace in /dev/shm (list, unlink).

Every name lives under ``/shmring.<namespace>.``: shmring never touches a
segment it did not make, so a segment name that does not parse here is
foreign and left alone.
"""

from __future__ import annotations

import os
import re

import posix_ipc

from .._errors import InvalidArgument, PermissionDenied, RegionNotFound

PREFIX = "shmring"
#: Where POSIX shared-memory segments appear as files.
SHM_DIR = "/dev/shm"
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}\Z")
_NS_RE = re.compile(r"[A-Za-z0-9_\-]{1,40}\Z")


def default_namespace() -> str:
    """The namespace used when none is given: ``$SHMRING_NAMESPACE`` or ``default``."""
    return os.environ.get("SHMRING_NAMESPACE", "default")


def check_namespace(namespace: str) -> str:
    """Validate a namespace (letters, digits, ``_`` and ``-``, at most 40)."""
    if not isinstance(namespace, str) or not _NS_RE.match(namespace):
        raise InvalidArgument(
            f"bad namespace {namespace!r}: use 1-40 letters, digits, '_' or '-'"
        )
    return namespace


def segment_name(name: str, namespace: str | None = None) -> str:
    """The POSIX shm name (``/shmring.<ns>.<name>``) for a channel name."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"bad region name {name!r}: use 1-200 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-'"
        )
    ns = check_namespace(default_namespace() if namespace is None else namespace)
    return f"/{PREFIX}.{ns}.{name}"


def split_segment_name(seg: str) -> tuple[str, str] | None:
    """(namespace, name) of a segment shmring made, or None for a foreign one."""
    seg = seg.lstrip("/")
    parts = seg.split(".", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    if not _NS_RE.match(parts[1]) or not _NAME_RE.match(parts[2]):
        return None
    return parts[1], parts[2]


def unlink_segment(seg: str) -> None:
    """Unlink a segment by its POSIX name; RegionNotFound if it is gone."""
    try:
        posix_ipc.unlink_shared_memory(seg)
    except posix_ipc.ExistentialError as e:
        raise RegionNotFound(f"no region {seg!r}") from e
    except posix_ipc.PermissionsError as e:
        raise refused(seg, unlink=True) from e


def list_segments(namespace: str | None = None) -> list[tuple[str, str]]:
    """(namespace, name) of every shmring segment in /dev/shm (optionally one namespace)."""
    out = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    for entry in sorted(entries):
        parsed = split_segment_name(entry)
        if parsed and (namespace is None or parsed[0] == namespace):
            out.append(parsed)
    return out


def refused(seg: str, *, unlink: bool = False) -> PermissionDenied:
    """Why this user may not open (or, with ``unlink``, remove) ``seg``: its
    mode or its owner, saying both (the name in ``/dev/shm`` can be looked at
    without opening it). ``/dev/shm`` is sticky: only the owner removes."""
    try:
        st = os.stat(SHM_DIR + "/" + seg.lstrip("/"))
    except OSError:
        return PermissionDenied(f"region {seg!r} belongs to another user")
    mode, uid = st.st_mode & 0o777, st.st_uid
    me = os.geteuid()
    if unlink and uid != me:
        why = f"belongs to uid {uid} (mode {mode:#o}): only its owner can remove it"
    elif uid != me and not mode & 0o066:
        why = (f"belongs to uid {uid} and its mode {mode:#o} lets only its owner in "
               "(its creator can share it with mode=0o660 or 0o666)")
    else:
        who = "its owner" if uid == me else f"uid {me}"
        why = (f"has mode {mode:#o} (owner uid {uid}), which does not let {who} read and "
               "write it (its creator chooses with mode=, e.g. 0o660 or 0o666)")
    err = PermissionDenied(f"region {seg!r} {why}")
    err.mode, err.owner_uid = mode, uid
    return err
