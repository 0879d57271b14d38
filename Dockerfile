# dnpfs in a container: the daemon in the foreground, its pipes shared with the
# host and with other containers through a bind mount with shared propagation.
#
#   docker build -t dnpfs .
#   docker run -d --name dnpfs --device /dev/fuse --cap-add SYS_ADMIN \
#       --security-opt apparmor:unconfined -e DNPFS_MOUNTPOINT=/mnt/dnpfs/pipes \
#       -v /mnt/dnpfs:/mnt/dnpfs:rshared -v dnpfs-store:/var/lib/dnpfs dnpfs
#
# Settings are environment variables, read by deploy/entrypoint.sh:
# DNPFS_MOUNTPOINT, DNPFS_STORE, DNPFS_KAFKA_BOOTSTRAP, DNPFS_TOPIC_PREFIX,
# DNPFS_KAFKA_CONFIG, DNPFS_OPTIONS.  docs/deploy.md has compose, Kubernetes
# and systemd.
#
# Both stages start from one Debian bookworm image: the virtualenv built in the
# first is copied into the second and runs that image's /usr/bin/python3.
# BASE_IMAGE may name any bookworm image with apt (tests/deploy builds on a
# debootstrap one).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev libfuse3-dev pkg-config patch \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY deploy/build-constraints.txt deploy/requirements.txt /tmp/
COPY scripts/pyfuse3-source /tmp/build/scripts/
COPY patches /tmp/build/patches/
# pip runs from a virtualenv of its own and installs into /opt/dnpfs/venv, so
# that the one copied into the image holds dnpfs and its dependencies only.
# Dependencies come first, in their own layer: a change to dnpfs's code
# rebuilds the last step only, not pyfuse3.  pyfuse3 is built from its PyPI
# source with dnpfs's patches (docs/decisions.md, "Interrupts"); the
# requirements name that build's version, so pip finds it installed.
RUN python3 -m venv /opt/pip \
    && /opt/pip/bin/pip install -q -c /tmp/build-constraints.txt pip \
    && python3 -m venv --without-pip /opt/dnpfs/venv \
    && out=$(/tmp/build/scripts/pyfuse3-source /tmp/build /opt/pip/bin/pip) \
    && SETUPTOOLS_SCM_PRETEND_VERSION=$(echo "$out" | sed -n 2p) \
        /opt/pip/bin/pip --python /opt/dnpfs/venv/bin/python install -q --no-deps \
        --build-constraint /tmp/build-constraints.txt "$(echo "$out" | sed -n 1p)" \
    && /opt/pip/bin/pip --python /opt/dnpfs/venv/bin/python install -q --no-deps \
        --build-constraint /tmp/build-constraints.txt -r /tmp/requirements.txt \
    && rm -rf /tmp/build
COPY pyproject.toml README.md LICENSE /src/
COPY dnpfs /src/dnpfs
RUN /opt/pip/bin/pip --python /opt/dnpfs/venv/bin/python install -q --no-deps \
        --build-constraint /tmp/build-constraints.txt /src \
    && /opt/pip/bin/pip --python /opt/dnpfs/venv/bin/python check \
    && /opt/dnpfs/venv/bin/dnpfs --version

FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# python3: the interpreter the virtualenv links to; fuse3: libfuse3 and
# fusermount3; ca-certificates: TLS to Kafka; libjemalloc2: the daemon's
# malloc (docs/decisions.md).  No compiler, no headers, no pip.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 fuse3 ca-certificates libjemalloc2 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/dnpfs /mnt/dnpipes
COPY --from=builder /opt/dnpfs/venv /opt/dnpfs/venv
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/dnpfs-entrypoint
ENV PATH=/opt/dnpfs/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DNPFS_MOUNTPOINT=/mnt/dnpipes
# The embedded store (when DNPFS_KAFKA_BOOTSTRAP is unset): keep it on a volume.
VOLUME ["/var/lib/dnpfs"]
# Healthy while the mount answers: the daemon replies to this attribute on its
# root, and a dead or hung daemon makes the call fail or time out.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os; os.getxattr(os.environ.get('DNPFS_MOUNTPOINT') or '/mnt/dnpipes', 'user.dnpfs.pid')"]
# dnpfs handles SIGTERM itself: blocked readers get EOF, writes are stored.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dnpfs-entrypoint"]
CMD []
