"""The data directory on disk: its owner's alone, and writes that survive a crash.

The data directory and every folder in it are 0700, every file in it 0600; they are created with
those modes and existing ones are tightened. A data directory that someone else owns, or that its
group or the world may write to, is refused (:class:`DataDirError`): whoever can write there can
swap the round store. :func:`write_durably` returns once the bytes (and the file's name in its
folder) are on disk.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "DataDirError", "prepare_data_dir", "private_dir",
           "private_file", "tighten_tree", "write_durably"]

DIR_MODE = 0o700  # the data directory and every folder in it: owner only
FILE_MODE = 0o600  # the SQLite files and every stored file: owner read/write only


class DataDirError(Exception):
    """The data directory is unsafe or unusable (someone else's, group/world-writable, not a
    directory); the message says what is wrong and how to fix it."""


def prepare_data_dir(root: Path) -> None:
    """Create ``root`` 0700, or check an existing one is safe and tighten it to 0700."""
    try:
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        st = root.stat()
    except FileExistsError:  # a file (or a dangling link) where the folder should be
        raise DataDirError(f"the data directory {str(root)!r} exists but is not a directory; "
                           "pass --data a directory path") from None
    except OSError as exc:
        raise DataDirError(f"cannot create or open the data directory {str(root)!r}: "
                           f"{exc.strerror or exc}; choose a path this user can create") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DataDirError(f"the data directory {str(root)!r} exists but is not a directory; "
                           "pass --data a directory path")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise DataDirError(
            f"the data directory {str(root)!r} belongs to uid {st.st_uid}, not to this user (uid "
            f"{uid}): refusing to use a store someone else controls. Run the server as its owner, "
            f"or give it to this user (chown -R {uid} {str(root)!r}) if that is intended")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise DataDirError(
            f"the data directory {str(root)!r} is writable by its "
            f"{'group and the world' if mode & 0o022 == 0o022 else 'group' if mode & 0o020 else 'world'}"
            f" (mode {mode:04o}): whoever can write there can swap the round store or read its "
            f"files. Check nobody tampered with it, then run: chmod 700 {str(root)!r}")
    if mode != DIR_MODE:
        os.chmod(root, DIR_MODE)


def private_dir(path: Path) -> None:
    """A folder inside the data directory, created (or tightened to) 0700."""
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path: Path, *, create: bool = False) -> None:
    """Tighten an existing file to 0600; with ``create``, make a missing one 0600 first."""
    if create:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            os.chmod(path, FILE_MODE)
    except FileNotFoundError:
        pass


def tighten_tree(root: Path) -> None:
    """Every folder under ``root`` to 0700 and every file to 0600 (files left by older versions
    or written under a looser umask).

    The running server creates and removes round folders (``blobs/r<id>/``) while an operator's
    command opens the store and walks them: an entry that vanishes between the listing and its
    stat, chmod or own listing is skipped (it no longer needs tightening)."""
    with os.scandir(root) as entries:
        for entry in entries:
            try:
                _tighten_entry(entry)
            except FileNotFoundError:  # removed since it was listed
                continue


def _tighten_entry(entry: os.DirEntry[str]) -> None:
    if entry.is_symlink():
        return
    mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
    if entry.is_dir(follow_symlinks=False):
        if mode != DIR_MODE:
            os.chmod(entry.path, DIR_MODE)
        tighten_tree(Path(entry.path))
    elif mode != FILE_MODE:
        os.chmod(entry.path, FILE_MODE)


def write_durably(path: Path, data: bytes) -> None:
    """Write, fsync the file and its directory: the bytes survive a crash once this returns.
    The file is created 0600 and its folder 0700 (the process umask can only narrow them)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # a file that already existed keeps its mode through O_CREAT
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
