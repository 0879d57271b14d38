# A plain working image of dnpfs: the daemon in the foreground.
#   docker build -t dnpfs .
#   docker run --device /dev/fuse --cap-add SYS_ADMIN -v /mnt/dnpipes:/mnt/dnpipes:rshared dnpfs
# Configuration: the arguments of `dnpfs mount` (see `dnpfs mount --help`);
# DNPFS_KAFKA_BOOTSTRAP selects a Kafka cluster instead of the embedded store.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 libfuse3-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dnpfs ./dnpfs
RUN pip install --no-cache-dir . \
    && apt-get purge -y gcc libfuse3-dev pkg-config && apt-get autoremove -y

VOLUME ["/var/lib/dnpfs"]
ENTRYPOINT ["dnpfs", "mount", "--foreground"]
CMD ["/mnt/dnpipes"]
