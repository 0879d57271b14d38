"""`dnpfs mount` and `dnpfs umount`: argument parsing and the daemon's start.

Thin on purpose: checks live in mount.py, everything else below it.  Every
failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__, allocator, logs
from .access import FileAccess
from .backends.base import Backend
from .backends.sqlite import SqliteBackend, default_store_path
from .config import ConfigError, fstab_argv, load_toml
from .errors import DnpfsError
from .mount import MountError, check_fuse_device, check_mountpoint, fuse_options, serve, unmount
from .notify import notify


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser, and its `mount` subparser (whose defaults a config file sets)."""
    p = argparse.ArgumentParser(
        prog="dnpfs",
        description="Distributed named pipes as files: mkfifo, cat and printf across machines.",
    )
    p.add_argument("--version", action="version", version=f"dnpfs {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("mount", help="mount a directory of pipes",
                       description="Mount a directory of distributed named pipes. "
                                   "Also callable as `dnpfs SOURCE MOUNTPOINT -o OPTS` "
                                   "(fstab: type fuse.dnpfs).",
                       epilog="The daemon runs on jemalloc where it is installed;"
                              " DNPFS_MALLOC=system keeps the system's malloc.")
    m.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    m.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML file with any of these options (command line wins)")
    m.add_argument("--store", type=Path, default=None,
                   help=f"embedded store file (default {default_store_path()})")
    m.add_argument("--kafka", metavar="HOST:PORT[,HOST:PORT...]",
                   default=os.environ.get("DNPFS_KAFKA_BOOTSTRAP"),
                   help="use a Kafka cluster instead of the embedded store"
                        " (or set DNPFS_KAFKA_BOOTSTRAP)")
    m.add_argument("--topic-prefix", default="", metavar="P",
                   help="Kafka: pipe NAME is topic P+NAME (default none)")
    m.add_argument("--kafka-config", type=Path, metavar="FILE",
                   help="Kafka client properties (security.protocol, sasl.*, ssl.*)")
    m.add_argument("--replication-factor", type=int, default=1,
                   help="Kafka: replication factor of new topics (default 1)")
    m.add_argument("--fetch-mib", type=int, default=64,
                   help="Kafka: records fetched ahead of readers, all pipes of the mount"
                        " together (default 64, like fetch.max.bytes)")
    m.add_argument("--share-groups", choices=("auto", "never"), default=None,
                   help="Kafka: auto (default) reads a pipe's default group as a share group"
                        " where the broker has them, so workers on every mount take records at"
                        " once (work queues); never keeps a consumer group, which one mount at"
                        " a time reads (one streaming reader's fastest path)")
    m.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground and log to stderr")
    m.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="mount options, comma-separated: FUSE's (allow_other, ...) and"
                        " uid=N, gid=N, mode=OCTAL for every pipe (default: you, 0660)")
    m.add_argument("--log-file", type=Path, default=None,
                   help="log file when in the background (default: next to the store)")
    m.add_argument("--debug", action="store_true", help="log every request")
    m.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="json: one JSON object per line, for log collectors")
    m.add_argument("--metrics", metavar="HOST:PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics")
    m.add_argument("--retention-days", type=float, default=7.0,
                   help="remove records older than this (default 7)")
    m.add_argument("--retention-check", type=float, default=30.0, metavar="SECONDS",
                   help="how often the embedded store removes records (default 30)")
    m.add_argument("--buffer-mib", type=int, default=16,
                   help="in-memory write buffer per pipe before writers block (default 16)")
    m.add_argument("--delivery-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="close/fsync report EIO when records are not stored within this"
                        " (default 120, as Kafka's delivery.timeout.ms)")
    m.add_argument("--session-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="end the writer sessions of a mount silent this long, so its"
                        " readers elsewhere get EOF (default 30; embedded store)")
    m.add_argument("--max-tasks", type=int, default=20000,
                   help="concurrent requests, each blocked read holds one (default 20000)")

    st = sub.add_parser("status", help="pipes, backlogs, writers and health of mounts",
                        description="Show what dnpfs mounts hold (all of them by default).")
    st.add_argument("mountpoint", type=Path, nargs="?", metavar="MOUNTPOINT")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    u = sub.add_parser("umount", help="unmount, waking blocked readers",
                       description="Stop the daemon of a mount and unmount it.")
    u.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    return p, m


def _backend(args: argparse.Namespace, access: FileAccess) -> Backend:
    if args.kafka:
        if args.store:
            raise MountError("--store and --kafka exclude each other")
        from .backends.kafka import KafkaBackend  # only Kafka users load aiokafka

        return KafkaBackend(
            args.kafka,
            topic_prefix=args.topic_prefix,
            config_file=args.kafka_config,
            replication_factor=args.replication_factor,
            fetch_budget=args.fetch_mib << 20,
            **({"share_groups": args.share_groups} if args.share_groups else {}),
        )
    return SqliteBackend(
        args.store,
        access=access,
        retention_seconds=args.retention_days * 86400,
        retention_interval=args.retention_check,
    )


def _log_file(args: argparse.Namespace) -> Path:
    if args.log_file:
        return args.log_file
    if args.kafka:
        return default_store_path().parent / "dnpfs-kafka.log"
    return (args.store or default_store_path()).with_suffix(".log")


def _mount(args: argparse.Namespace) -> int:
    malloc = allocator.in_use()
    mountpoint = Path(os.path.abspath(args.mountpoint))
    if args.foreground:
        logs.setup(args.debug, None, args.log_format)

        def ready(error: str | None) -> None:
            if error:
                raise MountError(error)
            notify("READY=1")  # Type=notify units: the mount answers from now on

        return _serve(args, mountpoint, malloc, ready, detach=None)
    return _background(args, mountpoint, malloc)


def _background(args: argparse.Namespace, mountpoint: Path, malloc: str) -> int:
    """Fork first, then build everything: the daemon's process identity,
    store connections, threads, random ids and log handlers are made in the
    process that serves the mount, never inherited from one that exits (an
    owner token taken before the fork named the parent, which is gone at
    once, and every read then looked like a dead daemon's to other mounts).
    The parent only waits for one line: "ready", or the error to print."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end) as status:
            line = status.readline().strip()
        if line == "ready":
            return 0
        raise MountError(line or "the daemon exited before the mount was ready")

    os.close(read_end)
    os.setsid()
    reported = False

    def report(error: str | None) -> None:
        nonlocal reported
        if not reported:
            reported = True
            os.write(write_end, b"ready\n" if error is None else error.encode() + b"\n")
            os.close(write_end)

    def detach(access: FileAccess) -> None:
        """After the checks, before serving: log to the file, leave the terminal."""
        log_file = _log_file(args)
        access.make_dirs(log_file.parent)
        access.create(log_file)
        logs.setup(args.debug, log_file, args.log_format)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.chdir("/")

    code = 1
    try:
        code = _serve(args, mountpoint, malloc, report, detach=detach)
    except (MountError, DnpfsError, ConfigError, OSError) as e:
        report(str(e))
    except BaseException as e:  # noqa: BLE001 - the parent must hear of it, whatever it is
        report(f"the daemon failed to start: {type(e).__name__}: {e}")
    finally:
        report("the daemon exited before the mount was ready")  # no-op once reported
        os._exit(code)


def _serve(args: argparse.Namespace, mountpoint: Path, malloc: str,
           on_ready: Callable[[str | None], None],
           detach: Callable[[FileAccess], None] | None) -> int:
    """Build the backend, check everything, and serve the mount (in the
    process that will serve it: see _background)."""
    # The command line first, then the machine: a bad -o is reported as such
    # whatever state the store or the mountpoint is in.
    options, owner, access = fuse_options(args.options)
    backend = _backend(args, access)
    check_fuse_device()
    check_mountpoint(mountpoint)
    if isinstance(backend, SqliteBackend) and backend.path.resolve().is_relative_to(mountpoint):
        raise MountError(f"store {backend.path} is inside the mountpoint {mountpoint}")
    backend.check()
    if detach is not None:
        detach(access)
    return serve(backend, mountpoint, options, owner, on_ready=on_ready,
                 max_tasks=args.max_tasks, buffer_bytes=args.buffer_mib << 20,
                 delivery_timeout=args.delivery_timeout, session_timeout=args.session_timeout,
                 metrics_address=args.metrics, malloc=malloc)


def _status(args: argparse.Namespace) -> int:
    from . import status

    if args.mountpoint:
        found = [status.collect(args.mountpoint)]
    else:  # every mount; a dead one is listed as such, not an error
        found = [status.collect_or_dead(p) for p in status.dnpfs_mounts()]
    if args.json:
        print(json.dumps(found if not args.mountpoint else found[0], indent=2))
    elif not found:
        print("no dnpfs mounts")
    else:
        print("\n\n".join(status.render(s) for s in found))
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    """Command line over config file over built-in defaults."""
    argv = fstab_argv(argv) or argv
    parser, mount_parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        mount_parser.set_defaults(**load_toml(args.config))
        args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(sys.argv[1:] if argv is None else argv)
        if args.command == "mount":
            if argv is None:  # the real command line, not a caller in this process
                allocator.restart_preloaded()
            return _mount(args)
        if args.command == "status":
            return _status(args)
        unmount(args.mountpoint)
        return 0
    except (MountError, DnpfsError, ConfigError) as e:
        print(f"dnpfs: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
