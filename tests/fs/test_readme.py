"""The README's console blocks, run as written, and what they print compared
with what the README says they print.

A block's lines starting with "# " are commands (the root prompt); the other
lines are their output.  All commands of a block run in one bash, as a user
would type them, with the `dnpfs` command of this checkout first on PATH.
They run in a mount namespace of their own with fresh, empty /mnt and
/var/lib/dnpfs, so the README's own paths (/mnt/dnpipes, the default store)
are used without touching this machine's.  Only `date`'s output is matched by
its shape, not its value.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

README = ROOT / "README.md"
DATE = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d [A-Z]{2,5} \d{4}")
BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)

# Fresh /mnt and /var/lib/dnpfs; after the block (or its timeout) every dnpfs
# mount it left under /mnt is unmounted, so a reader still blocked gets EOF
# and nothing outlives the namespace.  (Only /mnt: the namespace also sees
# copies of this machine's other mounts, whose daemons are not ours to stop.)
SANDBOX = r"""
set -u
mkdir -p /var/lib/dnpfs
mount -t tmpfs readme-mnt /mnt && mount -t tmpfs readme-state /var/lib/dnpfs || exit 99
mkdir /mnt/dnpipes
cd /
timeout 120 bash "$1" > "$2" 2>&1
code=$?
for m in $(awk '$3 == "fuse.dnpfs" && $2 ~ "^/mnt/" {print $2}' /proc/self/mounts); do
    dnpfs umount "$m" >> "$2" 2>&1 || umount -l "$m"
done
exit $code
"""


def blocks() -> list[tuple[list[str], str]]:
    """(commands, expected output) of each console block of the README."""
    found = []
    for body in BLOCK.findall(README.read_text()):
        commands, expected = [], []
        for line in body.splitlines():
            if line.startswith("# "):
                commands.append(line[2:])
            else:
                expected.append(line + "\n")
        found.append((commands, "".join(expected)))
    return found


def test_the_readme_has_a_demo():
    assert blocks() and any("dnpfs mount" in c for cmds, _ in blocks() for c in cmds)


@pytest.mark.parametrize("commands, expected", blocks(),
                         ids=[f"block{i}" for i in range(len(blocks()))])
def test_readme_console_block_prints_what_the_readme_says(commands, expected, tmp_path):
    script = tmp_path / "block.sh"
    script.write_text("".join(c + "\n" for c in commands))
    out = tmp_path / "out"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8", "TZ": "UTC",
           # The venv's `dnpfs` imports the checkout it was installed from
           # (/work/main in a worktree): this checkout's package comes first.
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                        SANDBOX, "sandbox", str(script), str(out)],
                       env=env, capture_output=True, text=True, timeout=180)
    got = out.read_text() if out.exists() else ""
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr}\n{got}"
    assert DATE.sub("<date>", got) == DATE.sub("<date>", expected)
