"""A systemd service unit run the way systemd runs it, for a machine where
systemd is not init (systemd-run and systemctl need it; systemd-analyze
has no command that runs or expands a unit).

What is done as systemd does it (systemd.service(5), systemd.exec(5),
systemd.unit(5)), for the settings deploy/systemd/dnpfs@.service uses; any
other setting in [Service], or a specifier or command prefix not listed,
fails loudly rather than being ignored:

- specifiers %i (the instance), %I (unescaped), %f (unescaped as a path,
  with "/" in front), %%;
- the environment: systemd's PATH and LANG, INVOCATION_ID, STATE_DIRECTORY,
  then Environment= in order, then EnvironmentFile= ("-": may be missing;
  KEY=VALUE lines, "#" comments, quotes removed), which wins over Environment=;
- command lines: words as the shell splits them; "$NAME" alone as a word
  becomes the variable's words split at whitespace (none when empty),
  "${NAME}" one word; a "-" prefix ignores the command's failure;
- StateDirectory= is created under /var/lib; ExecStartPre= runs first;
- Type=simple and Type=notify: ExecStart= is the main process, started with
  stdin from /dev/null and its output to the journal (here a log file); for
  notify, $NOTIFY_SOCKET names a datagram socket and the start is done when
  the main process (NotifyAccess=main, checked by the sender's credentials)
  sends READY=1 there, failed if it exits first or TimeoutStartSec= (90 s
  by default; time spans as systemd.time(7) writes them) passes;
- stop: ExecStop= runs (with $MAINPID) while the main process still runs;
  what is left then gets KillSignal=; whatever has not exited
  TimeoutStopSec= after the stop began is killed with SIGKILL;
- a main process that exits on its own: ExecStop= runs all the same, then
  Restart=on-failure starts the service again after RestartSec= unless the
  exit was clean (0, SIGHUP, SIGINT, SIGTERM, SIGPIPE).

Not done: cgroups (KillMode=control-group signals every process of the
unit, here only the main one), the journal, start rate limits, dependencies.
"""

from __future__ import annotations

import os
import re
import shlex
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .machine import Machine

# The [Service] settings this runner knows what to do with.
_KNOWN = {"Type", "TimeoutStartSec", "Environment", "EnvironmentFile", "StateDirectory",
          "ExecStartPre", "ExecStart", "ExecStop", "KillSignal", "TimeoutStopSec", "Restart",
          "RestartSec"}


_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600,
               "hr": 3600}


def seconds(span: str) -> float:
    """A systemd time span (systemd.time(7)): "90", "90s", "15min", "1h 30min"."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span.strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s", "", span):
        raise ValueError(f"a time span this runner does not read: {span!r}")
    return sum(float(n) * _SPAN_UNITS[u or "s"] for n, u in parts)


def settings(text: str, section: str) -> dict[str, list[str]]:
    """KEY=VALUE lines of one section, every value of a repeated key in order."""
    values: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@dataclass
class Command:
    argv: list[str]
    ignore_failure: bool


@dataclass
class Stopped:
    """How the main process ended after a stop."""
    returncode: int          # as Popen reports it: -N when killed by signal N
    seconds: float           # from the stop's start to the main process's exit
    killed: bool             # SIGKILL after TimeoutStopSec=
    exec_stop: list[subprocess.CompletedProcess] = field(default_factory=list)


class Service:
    """One instance of a template unit, started on a Machine."""

    def __init__(self, machine: Machine, unit_text: str, instance: str, log: Path):
        self.machine, self.log = machine, log
        self.instance = instance
        self.unescaped = machine.run(["systemd-escape", "--unescape", instance]).stdout \
            .decode().strip()
        self.path = machine.run(["systemd-escape", "--unescape", "--path", instance]).stdout \
            .decode().strip()
        self.service = settings(unit_text, "Service")
        unknown = set(self.service) - _KNOWN
        if unknown:
            raise ValueError(f"settings this runner does not emulate: {sorted(unknown)}")
        [self.type] = self.service["Type"]
        if self.type not in ("simple", "notify"):
            raise ValueError(f"Type={self.type}: only Type=simple and notify are emulated")
        self.env = self._environment()
        self.proc: subprocess.Popen | None = None
        self.mainpid: int | None = None  # as this machine sees it

    # -- reading the unit ----------------------------------------------------

    def specifiers(self, value: str) -> str:
        table = {"i": self.instance, "I": self.unescaped, "f": self.path, "%": "%"}

        def one(m: re.Match) -> str:
            if m.group(1) not in table:
                raise ValueError(f"specifier %{m.group(1)} is not emulated: {value}")
            return table[m.group(1)]
        return re.sub(r"%(.)", one, value)

    def _environment(self) -> dict[str, str]:
        env = dict(Machine.ENV, INVOCATION_ID=uuid.uuid4().hex)
        for name in self.service.get("StateDirectory", []):
            env["STATE_DIRECTORY"] = f"/var/lib/{name}"
        for value in self.service.get("Environment", []):
            for assignment in shlex.split(self.specifiers(value)):
                key, _, val = assignment.partition("=")
                env[key] = val
        for value in self.service.get("EnvironmentFile", []):
            path = self.specifiers(value)
            optional = path.startswith("-")
            r = self.machine.run(["cat", path.lstrip("-")], check=False)
            if r.returncode != 0:
                if optional:
                    continue
                raise AssertionError(f"EnvironmentFile={path} cannot be read")
            for line in r.stdout.decode().splitlines():
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                key, _, val = line.partition("=")
                val = val.strip()
                if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
                    val = val[1:-1]
                env[key.strip()] = val
        return env

    def command(self, value: str, env: dict[str, str]) -> Command:
        value = self.specifiers(value)
        ignore = value.startswith("-")
        value = value.lstrip("-")
        if value[:1] in "@+!:":
            raise ValueError(f"command prefix {value[0]} is not emulated: {value}")
        argv: list[str] = []
        for word in shlex.split(value):
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:
                argv += env.get(whole.group(1), "").split()
                continue
            word = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""),
                          word)
            if "$" in word:
                raise ValueError(f"a $ this runner does not expand: {value}")
            argv.append(word)
        return Command(argv, ignore)

    def commands(self, key: str, env: dict[str, str] | None = None) -> list[Command]:
        return [self.command(v, env or self.env) for v in self.service.get(key, [])]

    # -- running it ------------------------------------------------------------

    def _run(self, cmd: Command, env: dict[str, str], timeout: float):
        r = self.machine.run(cmd.argv, env=env, check=False, timeout=timeout)
        if r.returncode != 0 and not cmd.ignore_failure:
            raise AssertionError(f"{cmd.argv} exited {r.returncode}: {r.stderr.decode()}")
        return r

    def start(self) -> Service:
        for name in self.service.get("StateDirectory", []):
            self.machine.run(["mkdir", "-p", "-m", "0755", f"/var/lib/{name}"])
        for cmd in self.commands("ExecStartPre"):
            self._run(cmd, self.env, timeout=90)
        [main] = self.commands("ExecStart")
        self.argv = main.argv
        if self.type == "simple":
            self.proc = self.machine.start(main.argv, self.log, env=self.env)
            self.mainpid = Machine.pid_of(self.proc)
            return self
        folder = tempfile.mkdtemp(prefix="dnpfs-notify-")  # short: sun_path has 108 bytes
        path = os.path.join(folder, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self.proc = self.machine.start(main.argv, self.log,
                                           env=dict(self.env, NOTIFY_SOCKET=path))
            self.mainpid = Machine.pid_of(self.proc)
            self._wait_ready(sock)
        os.unlink(path)
        os.rmdir(folder)
        return self

    def _wait_ready(self, sock: socket.socket) -> None:
        [timeout] = self.service.get("TimeoutStartSec", ["90"])
        deadline = time.monotonic() + seconds(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the main process exited ({self.proc.returncode})"
                                     " before READY=1")
            if not select.select([sock], [], [], 0.2)[0]:
                continue
            data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
            sender = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    sender, _, _ = struct.unpack("iII", value[:12])
            if sender != self.mainpid:
                continue  # NotifyAccess=main: systemd ignores other senders
            if "READY=1" in data.decode(errors="replace").splitlines():
                return
        self.proc_signal(signal.SIGTERM)
        raise AssertionError(f"no READY=1 within TimeoutStartSec={timeout}")

    def ns_mainpid(self) -> int:
        """The main process's pid inside the namespace ($MAINPID)."""
        with open(f"/proc/{self.mainpid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
        raise AssertionError("no NSpid")

    def stop(self) -> Stopped:
        [timeout] = self.service.get("TimeoutStopSec", ["90"])
        deadline = time.monotonic() + seconds(timeout)
        started = time.monotonic()
        env = dict(self.env, MAINPID=str(self.ns_mainpid()))
        done = [self._run(cmd, env, timeout=seconds(timeout))
                for cmd in self.commands("ExecStop", env)]
        killed = False
        if self.proc.poll() is None:
            [sig] = self.service.get("KillSignal", ["SIGTERM"])
            self.proc_signal(getattr(signal, sig))
            try:
                self.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed = True
                self.proc_signal(signal.SIGKILL)
                self.proc.wait()
        return Stopped(self.proc.returncode, time.monotonic() - started, killed, done)

    def exited(self) -> bool:
        """What systemd does once the main process has exited on its own: the
        stop commands run ($MAINPID unset: it is gone), then Restart=on-failure
        starts the service again, RestartSec= later, when the exit was not
        clean.  Whether it restarted."""
        code = self.proc.wait()
        env = {k: v for k, v in self.env.items() if k != "MAINPID"}
        for cmd in self.commands("ExecStop", env):
            self._run(cmd, env, timeout=seconds(self.service.get("TimeoutStopSec", ["90"])[0]))
        clean = code == 0 or code in (-signal.SIGHUP, -signal.SIGINT, -signal.SIGTERM,
                                      -signal.SIGPIPE)
        if self.service.get("Restart", ["no"]) != ["on-failure"] or clean:
            return False
        time.sleep(seconds(self.service.get("RestartSec", ["0.1"])[0]))
        self.start()
        return True

    def proc_signal(self, sig: int) -> None:
        try:
            os.kill(self.mainpid, sig)
        except ProcessLookupError:
            pass
