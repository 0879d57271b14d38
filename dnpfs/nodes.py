"""Node ids of a mount: one per pipe path, shared by every process, and one
per seeking tool and path (a *tool node*).

Why a seeking tool (GNU head, tail: ``fs.SEEKING_TOOLS``) gets a node of its
own: its size of a pipe is how far it has read, everyone else's is one page
(``Filesystem._size_for``), and the kernel keeps one size per node, the one
of the last attribute reply it took, whoever asked.  tail reads that kept
size for lseek(SEEK_END): when another process's lookup or setattr was
answered during tail's lseek (a writer opening the pipe with O_TRUNC), tail
got 4096, read the pipe as a file of 4096 bytes from its end, and printed
nothing (docs/decisions.md, "A node of its own for head and tail").  On its
own node only its own answers land.

The kernel counts the lookups it holds on a node and gives them back with
forget(); a tool node goes once they are all given back.  Shared nodes are
never forgotten: there is one per path the mount has seen.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass
class ToolNode:
    path: str
    pid: int  # the seeking tool's process
    lookups: int = 0  # held by the kernel


class Nodes:
    def __init__(self, first: int) -> None:
        self._ids = itertools.count(first)
        self._shared: dict[str, int] = {}
        self._paths: dict[int, str] = {}  # shared node -> path
        self._tools: dict[int, ToolNode] = {}
        self._tool_ids: dict[tuple[str, int], int] = {}

    def new_id(self) -> int:
        """An id for a node the caller keeps track of itself."""
        return next(self._ids)

    def shared(self, path: str) -> int:
        ino = self._shared.get(path)
        if ino is None:
            ino = self._shared[path] = next(self._ids)
            self._paths[ino] = path
        return ino

    def looked_up_by_tool(self, path: str, pid: int) -> int:
        """The node of *path* for seeking tool *pid*, one lookup more held on it."""
        ino = self._tool_ids.get((path, pid))
        if ino is None:
            ino = self._tool_ids[path, pid] = next(self._ids)
            self._tools[ino] = ToolNode(path, pid)
        self._tools[ino].lookups += 1
        return ino

    def is_tool(self, ino: int) -> bool:
        return ino in self._tools

    def path(self, ino: int) -> str | None:
        tool = self._tools.get(ino)
        return tool.path if tool is not None else self._paths.get(ino)

    def forget(self, ino: int, lookups: int) -> None:
        tool = self._tools.get(ino)
        if tool is None:
            return
        tool.lookups -= lookups
        if tool.lookups <= 0:
            del self._tools[ino]
            del self._tool_ids[tool.path, tool.pid]
