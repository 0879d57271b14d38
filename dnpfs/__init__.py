"""dnpfs: distributed named pipes as a FUSE filesystem.

Layers, each depending only on the ones below it:

- ``fs``        the filesystem: inodes, handles, syscalls (pyfuse3 under trio)
- ``pipes``, ``reader``, ``writer``, ``delivery``
                pipe semantics: writer sessions, EOF, reader groups, cursors
- ``backends``  where records live: the embedded SQLite store, Kafka
"""

__version__ = "0.1.0"
