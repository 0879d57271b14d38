#!/bin/sh
# The image's entrypoint: `dnpfs mount --foreground`, configured from the
# environment, so compose files and Kubernetes manifests set variables rather
# than rewrite a command line.
#
#   DNPFS_MOUNTPOINT       where the pipes appear (default /mnt/dnpipes)
#   DNPFS_STORE            embedded store file (default /var/lib/dnpfs/store.sqlite)
#   DNPFS_KAFKA_BOOTSTRAP  HOST:PORT[,...]: use Kafka instead of the embedded store
#   DNPFS_TOPIC_PREFIX     Kafka: pipe NAME is topic PREFIX+NAME
#   DNPFS_KAFKA_CONFIG     Kafka client properties file (security.protocol, sasl.*, ssl.*)
#   DNPFS_OPTIONS          FUSE options for -o, comma-separated (e.g. allow_other)
#
# Arguments that start with "-" are added to `dnpfs mount` (e.g. --debug,
# --retention-days 3); any other first argument is run instead, so
# `docker run IMAGE dnpfs --version` and `docker run -it IMAGE sh` work.
set -eu

if [ $# -gt 0 ]; then
    case $1 in
        -*) ;;
        *) exec "$@" ;;
    esac
fi

mountpoint=${DNPFS_MOUNTPOINT:-/mnt/dnpipes}
set -- mount --foreground "$@"
[ -n "${DNPFS_STORE:-}" ] && set -- "$@" --store "$DNPFS_STORE"
# The CLI also reads DNPFS_KAFKA_BOOTSTRAP itself; passing it makes the
# command line in `ps` say which cluster this daemon uses.
[ -n "${DNPFS_KAFKA_BOOTSTRAP:-}" ] && set -- "$@" --kafka "$DNPFS_KAFKA_BOOTSTRAP"
[ -n "${DNPFS_TOPIC_PREFIX:-}" ] && set -- "$@" --topic-prefix "$DNPFS_TOPIC_PREFIX"
[ -n "${DNPFS_KAFKA_CONFIG:-}" ] && set -- "$@" --kafka-config "$DNPFS_KAFKA_CONFIG"
[ -n "${DNPFS_OPTIONS:-}" ] && set -- "$@" -o "$DNPFS_OPTIONS"

# A bind-mounted host directory may not exist yet when the volume is new.
# mkdir fails on a dead mount a killed dnpfs left there (ENOTCONN): dnpfs
# detaches that itself, and says so; any other trouble it reports too.
mkdir -p "$mountpoint" 2>/dev/null || true
# exec: dnpfs is PID 1 and gets the engine's SIGTERM itself, so blocked readers
# get EOF and buffered writes are stored before the container stops.
exec dnpfs "$@" "$mountpoint"
