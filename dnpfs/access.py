"""Who may read the files a mount keeps on disk: the embedded store (with
SQLite's -wal and -shm files) and the daemon's log.

The store holds every byte written to every pipe, so it is exactly as private
as the mount: a local user whom the mount refuses must not read the pipe's
bytes from the store's files instead (seen: files 0644 in a 0755 directory,
and `grep -a` as nobody found a line in the WAL).  By default the files are
the mounting user's alone (0600, new directories 0700).  A mount that says who
owns its pipes (`-o uid=N,gid=N,mode=0640`) gets files owned and readable the
same way, so another daemon of that user or group can share the store.

SQLite creates -wal and -shm with the database file's mode and owner, so
setting the two database files is enough for new stores; files left by an
earlier, laxer run are set again at every mount.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE = 0o600


@dataclass(frozen=True)
class FileAccess:
    mode: int = PRIVATE  # rw bits only: no file of ours is executable
    uid: int | None = None  # None: whoever runs the daemon
    gid: int | None = None

    @classmethod
    def like_pipes(cls, uid: int | None, gid: int | None, mode: int | None) -> FileAccess:
        """Files readable by whom the mount's -o uid=,gid=,mode= let read pipes
        (without them: private)."""
        return cls(PRIVATE if mode is None else mode & 0o666, uid, gid)

    @property
    def dir_mode(self) -> int:
        """A directory we create: searchable by whoever may read the files."""
        return 0o700 | self.mode | ((self.mode & 0o444) >> 2)

    def make_dirs(self, path: Path) -> None:
        """Create *path* and missing parents with dir_mode; an existing
        directory is left as it is (it may be /tmp or a home)."""
        missing = []
        while not path.exists():
            missing.append(path)
            if path.parent == path:
                break
            path = path.parent
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=self.dir_mode)
            except FileExistsError:
                continue  # made meanwhile by another daemon
            self._own(folder, self.dir_mode)

    def create(self, path: Path) -> None:
        """Make *path* if missing (without truncating it), then set its mode
        and owner.  Raises OSError (read-only, permission) for the caller."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.mode)
        os.close(fd)
        self._own(path, self.mode)

    def restrict(self, path: Path) -> None:
        """Set an existing file's mode and owner; a missing one is fine."""
        if path.exists():
            self._own(path, self.mode)

    def restrict_folder(self, path: Path) -> None:
        """Set a folder of ours and the files in it as make_dirs and create
        would have made them (a folder left by an earlier, laxer run)."""
        if path.is_dir():
            self._own(path, self.dir_mode)
            for file in path.iterdir():
                self.restrict(file)

    def _own(self, path: Path, mode: int) -> None:
        st = path.stat()
        if (st.st_mode & 0o7777) != mode:
            try:
                os.chmod(path, mode)
            except PermissionError:  # another user's file: theirs to set
                log.warning("%s: cannot set its mode to %04o (owned by uid %d)", path, mode,
                            st.st_uid)
        if self.uid is None and self.gid is None:
            return
        uid = -1 if self.uid is None or self.uid == st.st_uid else self.uid
        gid = -1 if self.gid is None or self.gid == st.st_gid else self.gid
        if (uid, gid) != (-1, -1):
            try:
                os.chown(path, uid, gid)
            except PermissionError:
                log.warning("%s: cannot give it to uid %s gid %s (not root): left as it is",
                            path, self.uid, self.gid)
