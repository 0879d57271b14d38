"""Counters of one daemon, and an optional Prometheus endpoint (`--metrics`).

One registry per process (a daemon serves one mount).  Counting is a dict
update on the trio thread: cheap enough for every read and write.
"""

from __future__ import annotations

import bisect
import logging

import trio

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the append-latency histogram.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COUNTERS = {
    "records_in": "records appended to pipes (writes and session markers)",
    "bytes_in": "bytes written to pipes",
    "reads": "read() calls answered with bytes",
    "bytes_out": "bytes delivered by read()",
    "delivery_errors": "appends that failed or timed out (writers got EIO/EPIPE)",
    "interrupted": "blocked calls ended with EINTR because of a signal",
}


class Metrics:
    def __init__(self) -> None:
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.blocked_readers = 0
        self.append_buckets = [0] * (len(BUCKETS) + 1)
        self.append_sum = 0.0
        self.append_count = 0

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def observe_append(self, seconds: float) -> None:
        self.append_buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.append_sum += seconds
        self.append_count += 1

    def render(self) -> str:
        """Prometheus text exposition format."""
        out = []
        for name, help_text in COUNTERS.items():
            out += [f"# HELP dnpfs_{name}_total {help_text}", f"# TYPE dnpfs_{name}_total counter",
                    f"dnpfs_{name}_total {self.counters[name]}"]
        out += ["# HELP dnpfs_blocked_readers readers waiting in read() now",
                "# TYPE dnpfs_blocked_readers gauge", f"dnpfs_blocked_readers {self.blocked_readers}",
                "# HELP dnpfs_append_seconds time to store one batch of records",
                "# TYPE dnpfs_append_seconds histogram"]
        cumulative = 0
        for bound, n in zip((*BUCKETS, "+Inf"), self.append_buckets):
            cumulative += n
            out.append(f'dnpfs_append_seconds_bucket{{le="{bound}"}} {cumulative}')
        out += [f"dnpfs_append_seconds_sum {self.append_sum:.6f}",
                f"dnpfs_append_seconds_count {self.append_count}"]
        return "\n".join(out) + "\n"


METRICS = Metrics()


async def serve(address: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """HTTP on HOST:PORT answering GET /metrics; runs until cancelled."""
    host, _, port = address.rpartition(":")

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
                if request.startswith(b"GET ") and path == b"/metrics":
                    body, status = METRICS.render().encode(), b"200 OK"
                else:
                    body, status = b"see /metrics\n", b"404 Not Found"
                await stream.send_all(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                    + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("metrics client: %s", e)
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(int(port), host=host or "127.0.0.1")
    log.info("metrics on http://%s/metrics", address)
    task_status.started()
    await trio.serve_listeners(handle, listeners)
