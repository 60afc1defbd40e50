"""``GET /metrics`` in the Prometheus text format (0.0.4), without a client library.

Requests are counted by route template (``/v2/models/{name}/infer``, never the raw path, so a
client cannot grow the label set) and status code; latency is one histogram per route.
Gauges that live elsewhere (queue depth, release, reloads) are read when scraped.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.inflight = 0
        self.gauges: list[tuple[str, str, str, Callable[[], list[tuple[dict[str, str], float]]]]] = []

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get(route)
        if h is None:
            h = self.latency[route] = Histogram()
        h.observe(seconds)

    def gauge(self, name: str, kind: str, help_text: str, read: Callable[[], list[tuple[dict[str, str], float]]]) -> None:
        """A series read at scrape time: ``read()`` gives (labels, value) pairs."""
        self.gauges.append((name, kind, help_text, read))

    def render(self) -> str:
        out = ["# HELP mltool_http_requests_total HTTP requests answered, by route and status code.",
               "# TYPE mltool_http_requests_total counter"]
        for (route, code), n in sorted(self.requests.items()):
            out.append(f'mltool_http_requests_total{{route="{_esc(route)}",code="{code}"}} {n}')
        out += ["# HELP mltool_http_request_duration_seconds Time from a request's last byte to its answer.",
                "# TYPE mltool_http_request_duration_seconds histogram"]
        for route, h in sorted(self.latency.items()):
            r = _esc(route)
            acc = 0
            for le, c in zip(BUCKETS, h.counts):
                acc += c
                out.append(f'mltool_http_request_duration_seconds_bucket{{route="{r}",le="{le:g}"}} {acc}')
            out.append(f'mltool_http_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {h.n}')
            out.append(f'mltool_http_request_duration_seconds_sum{{route="{r}"}} {h.total:.6f}')
            out.append(f'mltool_http_request_duration_seconds_count{{route="{r}"}} {h.n}')
        out += ["# HELP mltool_http_requests_in_flight Requests received and not yet answered.",
                "# TYPE mltool_http_requests_in_flight gauge", f"mltool_http_requests_in_flight {self.inflight}"]
        for name, kind, help_text, read in self.gauges:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            for labels, value in read():
                lab = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items())
                out.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
        return "\n".join(out) + "\n"
