"""A clean machine inside this one, for the tests of what users run on a
host (scripts/install, /etc/fstab, the systemd unit).

A private mount namespace where the places an install writes to start
empty (/opt, /usr/local/bin, /mnt are fresh tmpfs) or start as they are on
this machine minus dnpfs (/etc and /var/lib are overlays whose changes stay in
the namespace; /etc/dnpfs and /var/lib/dnpfs are removed from the overlay
only), and root's pip cache is empty.  It is also a PID namespace, so that
every daemon started in it, and every mount, goes when it does: the
namespace's first process (below) reaps the daemons that `dnpfs mount`
leaves to it and exits when the test closes its stdin, or dies.

Commands run in it through nsenter, with the environment systemd gives
services unless told otherwise (`Machine.ENV`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ..util import wait_for

# systemd's PATH for services and mount units (systemd 252, Debian bookworm):
# what the fstab helper and the unit's commands find.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

_INIT = r"""
import os, select, signal, subprocess, sys
setup = subprocess.run(["sh", "-euc", sys.argv[1]], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
print("ready" if setup.returncode == 0 else "setup failed: " + setup.stdout.replace("\n", " | "),
      flush=True)
while setup.returncode == 0 and not select.select([0], [], [], 0.2)[0]:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
"""


def _setup(scratch: Path) -> str:
    """The shell script that makes the namespace a clean machine."""
    upper = scratch / "overlays"
    # Other tests' FUSE mounts, copied into the namespace, are detached from it
    # (the copies only): every FUSE mount in it is then one made in it.  Mount
    # ids cannot tell them apart, as the kernel reuses the id of a copy that
    # goes when another test removes its mountpoint.
    lines = ["findmnt -rn -o TARGET,FSTYPE | awk '$2 ~ /^fuse(\\.|$)/ {print $1}' | sort -r"
             " | while read -r target; do umount -l \"$target\"; done"]
    lines += [f"mount -t tmpfs tmpfs {p}" for p in ("/opt", "/usr/local/bin", "/mnt")]
    cache = Path("/root/.cache")
    if cache.is_dir():
        lines.append(f"mount -t tmpfs tmpfs {cache}")
    # The overlays' upper and work directories on a tmpfs of their own, which
    # every file system takes as an overlay's upper layer.
    lines.append(f"mkdir -p {upper} && mount -t tmpfs tmpfs {upper}")
    for i, lower in enumerate(("/etc", "/var/lib")):
        lines.append(f"mkdir -p {upper}/{i}/up {upper}/{i}/work")
        lines.append(f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper}/{i}/up,"
                     f"workdir={upper}/{i}/work {lower}")
    lines.append("rm -rf /etc/dnpfs /var/lib/dnpfs")
    return "\n".join(lines)


class Machine:
    ENV = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}

    def __init__(self, scratch: Path):
        scratch.mkdir(parents=True, exist_ok=True)
        self.unshare = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
             "--mount-proc", "--kill-child", sys.executable, "-c", _INIT, _setup(scratch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            line = self.unshare.stdout.readline().strip()
            if line != "ready":
                raise AssertionError(f"the clean machine's namespace: {line or 'no answer'}")
            self.init = self._child()
        except BaseException:
            self.close()
            raise

    def _child(self) -> int:
        """The namespace's first process as this machine sees it."""
        me = self.unshare.pid
        with open(f"/proc/{me}/task/{me}/children") as f:
            return int(f.read().split()[0])

    def argv(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        environment = [f"{k}={v}" for k, v in (self.ENV if env is None else env).items()]
        return ["nsenter", "-t", str(self.init), "--mount", "--pid", "--wd=/", "--",
                "env", "-i", *environment, *argv]

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 60,
            check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
        """A command in the namespace; bytes output; on failure an
        AssertionError that shows it."""
        r = subprocess.run(self.argv(argv, env), input=input, capture_output=True,
                           timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} exited {r.returncode}\n"
                                 f"--- stdout\n{r.stdout[-4000:].decode(errors='replace')}\n"
                                 f"--- stderr\n{r.stderr[-4000:].decode(errors='replace')}")
        return r

    def sh(self, script: str, timeout: float = 60, **kw) -> bytes:
        """A bash script in the namespace (-euo pipefail); its stdout."""
        return self.run(["bash", "-euo", "pipefail", "-c", script], timeout=timeout, **kw).stdout

    def start(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
              **kw) -> subprocess.Popen:
        """A process in the namespace, not waited for.  Its pid is nsenter's,
        which exits as the process does; `pid_of` gives the process's."""
        with open(log, "ab") as out:
            return subprocess.Popen(self.argv(argv, env), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kw)

    @staticmethod
    def pid_of(proc: subprocess.Popen) -> int:
        """The pid, as this machine sees it, of what `start` started."""
        def child():
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                return f.read().split()
        return int(wait_for(child, 10, what=f"nsenter {proc.pid}'s child")[0])

    def mounts(self, fstype: str = "fuse.dnpfs") -> list[str]:
        """The mountpoints of that type in the namespace."""
        text = self.run(["cat", "/proc/self/mountinfo"]).stdout.decode()
        return [line.split()[4] for line in text.splitlines()
                if line.split(" - ")[1].split()[0] == fstype]

    def alive(self, pid: int) -> bool:
        """Whether the process with this pid in the namespace runs (its first
        process reaps the others, so a stopped one is gone, not a zombie)."""
        return self.run(["kill", "-0", str(pid)], check=False).returncode == 0

    def close(self) -> None:
        """Unmount what is left as users would, then end the namespace: its
        first process exits, and the kernel kills everything else in it."""
        if self.unshare.poll() is None and getattr(self, "init", None):
            for mountpoint in self.mounts():
                self.run(["dnpfs", "umount", mountpoint], check=False, timeout=30)
        if self.unshare.poll() is None:
            self.unshare.stdin.close()
            try:
                self.unshare.wait(10)
            except subprocess.TimeoutExpired:
                self.unshare.send_signal(signal.SIGKILL)  # --kill-child: and the namespace
                self.unshare.wait()
        for pipe in (self.unshare.stdin, self.unshare.stdout):
            if not pipe.closed:
                pipe.close()


def base_debs(root: Path) -> list[str]:
    """BASE_DEBS of scripts/_deps.sh: what scripts/install installs."""
    out = subprocess.run(["bash", "-c", '. scripts/_deps.sh; echo "${BASE_DEBS[@]}"'],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    return out.split()

