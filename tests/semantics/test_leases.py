"""A writer's mount that dies must not leave readers on other mounts waiting
forever: its sessions expire after --session-timeout, on every backend."""

from __future__ import annotations

import os
import time

from ..util import peek_until, spawn


def test_sessions_of_a_killed_daemon_expire_and_readers_get_eof(make_mount, backend_args):
    a = make_mount(backend_args, name="a", extra=["--session-timeout", "3"])
    b = make_mount(backend_args, name="b", extra=["--session-timeout", "3"])
    os.mkfifo(a / "p")
    writer = spawn(f"exec 3> {a/'p'}; printf 'last words' >&3; exec sleep 600", shell=True)
    cat = spawn(["cat", str(b / "p")])
    try:
        out = peek_until(cat, b"last words", 10)
        time.sleep(4)  # longer than the timeout: a live, idle writer keeps its session
        assert cat.poll() is None, "a live writer's session expired"
        a.kill()
        start = time.monotonic()
        rest, _ = cat.communicate(timeout=20)
        took = time.monotonic() - start
        assert cat.returncode == 0 and out + rest == b"last words"
        assert took < 3 + 6, f"EOF came {took:.1f}s after the writer's daemon died"
    finally:
        writer.kill()
        if cat.poll() is None:
            cat.kill()
