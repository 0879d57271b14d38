"""sd_notify: READY=1 reaches the socket $NOTIFY_SOCKET names, path or
abstract ("@"), and a missing or dead manager costs nothing but a log line."""

from __future__ import annotations

import socket

from dnpfs.notify import notify


def _listening(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(5)
    return s


def test_ready_reaches_a_socket_named_by_path(tmp_path, monkeypatch):
    path = str(tmp_path / "n")
    with _listening(path) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1")
        assert s.recv(100) == b"READY=1"


def test_ready_reaches_an_abstract_socket(monkeypatch):
    name = f"dnpfs-test-notify-{id(monkeypatch)}"
    with _listening("\0" + name) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert s.recv(100) == b"READY=1"


def test_no_manager_no_message(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify("READY=1")


def test_a_manager_gone_is_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not notify("READY=1")
    assert any("service manager" in r.getMessage() for r in caplog.records)


def test_an_empty_variable_is_no_manager(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert not notify("READY=1")
