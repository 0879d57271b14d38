"""Tools that legacy scripts run on pipes, side by side: the same shell
command against a local FIFO and against dnpfs must print the same, say the
same on stderr and exit alike.  dnpfs reports a pipe as a regular file, and
GNU head and tail seek and stat regular files (dnpfs/fs.py, SEEKING_TOOLS);
docs/semantics.md ("Tools") lists every row and the differences, which the
tests at the end check as documented.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

LINES = b"l1\nl2\nl3\n"
needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None,
                                   reason="busybox is not installed (scripts/test installs it)")
COPY = "{tmp}/copy"

# name -> bash command; {p} is the pipe, {tmp} a scratch folder.
TOOLS = {
    "head -n 1": "head -n 1 {p}",
    "head -n 2": "head -n 2 {p}",
    "head -n -1": "head -n -1 {p}",
    "head -c 2": "head -c 2 {p}",
    "head -c -2": "head -c -2 {p}",
    "tail -n 1": "tail -n 1 {p}",
    "tail -n +2": "tail -n +2 {p}",
    "tail -c 3": "tail -c 3 {p}",
    "tail -c +2": "tail -c +2 {p}",
    "grep -m 1": "grep -m 1 l {p}",
    "sed q": "sed q {p}",
    "sed -n 2p": "sed -n 2p {p}",
    "awk exit": "awk '{{print; exit}}' {p}",
    "read": "read -r x < {p}; echo \"$x\"",
    "while read": "while read -r x; do echo \"<$x>\"; done < {p}",
    "cat": "cat {p}",
    "dd count=1": "dd if={p} bs=2 count=1 status=none",
    "dd skip=3": "dd if={p} bs=1 skip=3 status=none",
    "wc -l": "wc -l < {p}",
    "wc -c": "wc -c {p} | cut -d' ' -f1",
    "md5sum": "md5sum < {p}",
    "sort": "sort -r {p}",
    "tac": "tac {p}",
    "cp": f"cp {{p}} {COPY} && cat {COPY}",
    "python read": "python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read())' {p}",
    "shutil.copyfileobj": ("python3 -c 'import shutil, sys; "
                           "shutil.copyfileobj(open(sys.argv[1], \"rb\"), sys.stdout.buffer)' {p}"),
}

BUSYBOX = {
    f"busybox {name}": f"busybox {cmd}" for name, cmd in {
        "head -n 1": "head -n 1 {p}",
        "tail -n 1": "tail -n 1 {p}",
        "tail -c 3": "tail -c 3 {p}",
        "grep -m 1": "grep -m 1 l {p}",
        "sed q": "sed q {p}",
        "awk exit": "awk '{{print; exit}}' {p}",
        "dd count=1": "dd if={p} bs=2 count=1 2>/dev/null",
        "wc -l": "wc -l < {p}",
        "cp": f"cp {{p}} {COPY} && cat {COPY}",
        "sh read": "sh -c 'read -r x < {p}; echo \"$x\"'",
        "sh while read": "sh -c 'while read -r x; do echo \"<$x>\"; done < {p}'",
    }.items()
}


def outcome(cmd: str, pipe, tmp, data: bytes = LINES):
    """Run *cmd* on a fresh *pipe* that a writer fills with *data* and
    closes: (stdout, stderr, exit status)."""
    if os.path.lexists(pipe):
        os.unlink(pipe)
    os.mkfifo(pipe)
    for leftover in tmp.glob("copy*"):
        leftover.unlink()
    # On a FIFO the writer's open waits for the reader: it runs beside the tool.
    writer = subprocess.Popen(["bash", "-c", 'printf %s "$1" > "$2"', "-", data.decode(),
                               str(pipe)])
    try:
        r = subprocess.run(["bash", "-c", cmd.format(p=pipe, tmp=tmp)], capture_output=True,
                           timeout=20, stdin=subprocess.DEVNULL)
    finally:
        try:
            writer.wait(5)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
    return r.stdout, r.stderr.decode(errors="replace").replace(str(pipe), "PIPE"), r.returncode


def side_by_side(tools: dict[str, str], mount, tmp_path):
    fifo_dir, scratch = tmp_path / "local", tmp_path / "scratch"
    fifo_dir.mkdir()
    scratch.mkdir()
    differ = {}
    for name, cmd in tools.items():
        expected = outcome(cmd, fifo_dir / "p", scratch)
        got = outcome(cmd, mount / "p", scratch)
        if got != expected:
            differ[name] = {"fifo": expected, "dnpfs": got}
    return differ


def test_tools_behave_as_on_a_local_fifo(mount, tmp_path):
    assert side_by_side(TOOLS, mount, tmp_path) == {}


@needs_busybox
def test_busybox_applets_behave_as_on_a_local_fifo(mount, tmp_path):
    assert side_by_side(BUSYBOX, mount, tmp_path) == {}


def tail_f(pipe, writes: list[bytes], settle: float = 2.5, argv=("tail",), stdin=False,
           follow=("-f",)):
    """`ARGV -f pipe` (GNU tail by default; `ARGV -f < pipe` with *stdin*;
    another option than -f with *follow*)
    while each of *writes* is written by its own writer (one after the other,
    *settle* seconds apart), then SIGTERM if it still runs: (stdout, stderr,
    exit status)."""
    if os.path.lexists(pipe):
        os.unlink(pipe)
    os.mkfifo(pipe)
    cmd = [*argv, *follow] + ([] if stdin else [str(pipe)])
    tail = subprocess.Popen(["bash", "-c", 'exec "$@" < "$0"' if stdin else 'exec "$@"',
                             str(pipe), *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        for data in writes:
            with open(pipe, "wb") as w:  # a FIFO: waits for tail's open
                w.write(data)
            # tail polls once a second; the complaint came at its first poll.
            time.sleep(settle)
        if tail.poll() is None:
            tail.send_signal(signal.SIGTERM)
        out, err = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    return out, err.decode(errors="replace").replace(str(pipe), "PIPE"), tail.returncode


def test_tail_f_is_quiet_and_ends_when_killed(mount, tmp_path):
    fifo = tmp_path / "fifo"
    expected = tail_f(fifo, [LINES])
    assert expected == (LINES, "", -signal.SIGTERM)
    assert tail_f(mount / "p", [LINES]) == expected


def test_tail_prints_the_last_lines_while_others_stat_the_pipe(mount, tmp_path):
    """GNU tail takes the size for lseek(SEEK_END) from the kernel, which
    keeps one size per node: another process's stat answered meanwhile (4096)
    made tail read the pipe as a 4096-byte file from its end, find fewer
    than 10 lines, seek back and print nothing; `tail -f` printed nothing in
    the runs where the writer opened the pipe during tail's start.  A tool's
    own node (dnpfs/nodes.py) keeps its size from the others'."""
    pipe = mount / "p"
    # A stat of the pipe at every moment, as ls, a monitoring job or the
    # writer's open may do.
    statter = subprocess.Popen(["bash", "-c", 'while :; do [ -e "$0" ]; done', str(pipe)])
    try:
        got = [outcome("tail {p}", pipe, tmp_path)[0] for _ in range(10)]
        follow = tail_f(pipe, [LINES])
    finally:
        statter.kill()
        statter.wait()
    assert got == [LINES] * 10
    assert follow == (LINES, "", -signal.SIGTERM)


@needs_busybox
def test_busybox_tail_f_is_quiet_and_ends_when_killed(mount, tmp_path):
    busybox = ("busybox", "tail")
    expected = tail_f(tmp_path / "fifo", [LINES], argv=busybox)
    assert expected == (LINES, "", -signal.SIGTERM)
    assert tail_f(mount / "p", [LINES], argv=busybox) == expected


# -- where dnpfs differs (docs/semantics.md, "Tools") -------------------------

@pytest.mark.parametrize("follow", [("-f",), ("-F",), ("-n", "+1", "-f")], ids=" ".join)
def test_tail_f_follows_the_first_writer_only(mount, tmp_path, follow):
    """On a FIFO `tail -f` also prints later writers' lines; a dnpfs handle
    stays at EOF once it returned EOF, so the later line waits in the pipe.
    `tail -F` alike (it also opens the pipe again every 5 s to see whether
    the name still leads to it, and closes it unread), and `tail -n +1 -f`."""
    fifo = tmp_path / "fifo"
    assert tail_f(fifo, [b"one\n", b"two\n"], follow=follow) == (b"one\ntwo\n", "",
                                                                 -signal.SIGTERM)
    # 10 s apart: a reader on Kafka first joins its group, seconds on a loaded machine.
    got = tail_f(mount / "p", [b"one\n", b"two\n"], settle=10, follow=follow)
    assert got == (b"one\n", "", -signal.SIGTERM)
    rest = subprocess.run(["cat", str(mount / "p")], capture_output=True, timeout=20)
    assert rest.stdout == b"two\n"


def test_tail_f_of_standard_input_follows(mount, tmp_path):
    """`tail -f < pipe`: tail ignores -f for a FIFO on standard input and
    exits at EOF; a dnpfs pipe is a regular file, which it follows."""
    assert tail_f(tmp_path / "fifo", [LINES], stdin=True) == (LINES, "", 0)
    assert tail_f(mount / "p", [LINES], stdin=True) == (LINES, "", -signal.SIGTERM)


def in_a_terminal(cmd: str, pipe, writes: list[bytes] = (), settle: float = 5.0) -> str:
    """The text *cmd* shows in a terminal (script(1) gives it one) while each
    of *writes* is written in turn, *settle* seconds apart; then its session
    is ended."""
    term = subprocess.Popen(["script", "-qfec", cmd.format(p=pipe), "/dev/null"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        for data in writes:
            with open(pipe, "wb") as w:
                w.write(data)
        time.sleep(settle)
    finally:
        os.killpg(term.pid, signal.SIGKILL)
        out = term.communicate(timeout=10)[0]
    return re.sub(r"\x1b(\[[0-9;?]*[A-Za-z]|[=>])|\r", "", out.decode(errors="replace"))


@pytest.mark.skipif(shutil.which("less") is None, reason="less is not installed (scripts/test installs it)")
def test_less_plus_f_follows_a_pipe_it_takes_for_a_file(mount, tmp_path):
    """`less +F` refuses a FIFO (it would need -f, and then it stops at the
    writer's EOF); a dnpfs pipe is a regular file to it, so it shows the
    lines and waits for more, as tail -f does."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "is not a regular file (use -f to see it)" in in_a_terminal("less +F {p}", fifo,
                                                                        settle=2)
    os.mkfifo(mount / "p")
    shown = in_a_terminal("less +F {p}", mount / "p", [LINES])
    assert "l1\nl2\nl3\n" in shown and "Waiting for data..." in shown, shown


def test_head_on_a_pipe_a_shell_opened_complains(mount, tmp_path):
    """`head -n 1 < pipe`: the shell opened the pipe, so head's handle is
    not seekable, and GNU head says so (and exits 0) after printing the line."""
    out, err, code = outcome("head -n 1 < {p}", mount / "p", tmp_path)
    assert (out, code) == (b"l1\n", 0)
    assert re.fullmatch(r"head: 'standard input': cannot seek to relative offset -?\d+: "
                        r"Illegal seek\n", err), err


def test_shell_read_takes_one_line_and_leaves_the_rest(mount, tmp_path):
    """bash reads a pipe it cannot seek one byte at a time: `read` takes one
    line and the rest stays for the next reader (on a FIFO it is gone once
    the writer and the reader closed)."""
    out, err, code = outcome("read -r x < {p}; echo \"$x\"; cat {p}", mount / "p", tmp_path)
    assert (out, err, code) == (b"l1\nl2\nl3\n", "", 0)


def test_shutil_copyfile_copies_what_a_fifo_refuses(mount, tmp_path):
    cmd = ("python3 -c 'import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])' "
           "{p} {tmp}/copy && cat {tmp}/copy")
    out, err, code = outcome(cmd, tmp_path / "fifo", tmp_path)
    assert code == 1 and "is a named pipe" in err
    assert outcome(cmd, mount / "p", tmp_path) == (LINES, "", 0)


@needs_busybox
def test_busybox_cat(mount, tmp_path):
    """busybox cat tries sendfile(); the kernel's page-cache read gets EINVAL
    and cat goes on with read() (tests/fs/test_sendfile.py has the rest)."""
    assert outcome("busybox cat {p}", mount / "p", tmp_path) == (LINES, "", 0)
