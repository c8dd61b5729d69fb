"""
The client's figures for Prometheus, through C{prometheus_client} (install
C{twisted_sockshare[metrics]}; the rest of the library needs Twisted alone).

    from prometheus_client import CollectorRegistry
    from prometheus_client.twisted import MetricsResource

    registry = CollectorRegistry()
    registry.register(SockShareCollector(client, labels={"service": "pricing"}))
    root.putChild(b"metrics", MetricsResource(registry))

Every counter of L{twisted_sockshare.stats.ClientStats} becomes a counter
C{sockshare_<name>_total} (C{sockshare_pending}, C{sockshare_peak_pending}
and C{sockshare_connected} are gauges), and, for a client made with C{latencyHistogram=True}, the reply latency
histogram (L{twisted_sockshare.SockShareClientFactory.latency}) becomes
C{sockshare_request_duration_seconds}.  For a balancer or a pool, each
endpoint is a series of its own, labelled C{endpoint}.  A server's figures
(L{twisted_sockshare.SockShareServerFactory.stats}) are collected the same
way: C{sockshare_deadline_exceeded_total}, C{sockshare_refused_total}...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: The counters that are gauges: they go down as well as up (a client's, then
#: a server's).
GAUGES = frozenset(
    {"pending", "peakPending", "connected", "endpointsDown", "down", "endpoints"}
    | {"connections", "pausedConnections", "inFlight", "peakInFlight"}
)
#: A balancer's figures that are its own, not the sum of its endpoints'.
OWN = frozenset({"retries", "ejections", "hedges", "hedgeWins", "discoveryFailures", "endpoints", "endpointsDown"})


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _sources(source: Any) -> list[tuple[str | None, dict[str, int], Any]]:
    """
    C{(endpoint, counters, client)} for each endpoint behind C{source}
    (endpoint L{None}: C{source} is one client; client L{None}: none now).
    """
    endpointStats = getattr(source, "endpointStats", None)
    if endpointStats is None:
        return [(None, source.stats(), source)]
    clients = source.endpointClients()
    return [(endpoint, stats, clients.get(endpoint)) for endpoint, stats in endpointStats().items()]


class SockShareCollector(Collector):
    """
    A C{prometheus_client} collector of a shared client's, a balancer's or a
    pool's figures, read at each scrape: anything with C{stats()}, or with
    C{endpointStats()} and C{endpointClients()} (a series per endpoint).
    """

    def __init__(self, source: Any, labels: Mapping[str, str] | None = None, prefix: str = "sockshare") -> None:
        """
        @param source: a L{twisted_sockshare.SockShareClientFactory},
            L{twisted_sockshare.SockShareBalancer},
            L{twisted_sockshare.SockSharePool}, any
            L{twisted_sockshare.interfaces.ISockShareClient}, or a
            L{twisted_sockshare.SockShareServerFactory}.
        @param labels: labels given to every series.
        @param prefix: the metric names' prefix.
        """
        self._source = source
        self._labels = dict(labels or {})
        self._prefix = prefix

    def describe(self) -> list[Metric]:
        # Nothing to describe ahead: the names depend on the counters.
        return []

    def collect(self) -> Iterator[Metric]:
        rows = _sources(self._source)
        perEndpoint = bool(rows) and rows[0][0] is not None
        keys = sorted(set(self._labels) | ({"endpoint"} if perEndpoint else set()))
        # The balancer's own figures (its retries include its endpoints').
        own = {key: value for key, value in self._source.stats().items() if key in OWN} if perEndpoint else {}
        families: dict[str, Any] = {}
        histogram: HistogramMetricFamily | None = None
        for endpoint, stats, client in rows:
            values = [str(endpoint) if key == "endpoint" else self._labels[key] for key in keys]
            for key, value in stats.items():
                if key in own:
                    continue
                family = families.get(key)
                if family is None:
                    family = families[key] = self._family(key, keys)
                family.add_metric(values, value)
            if client is None or not getattr(client, "latencyHistogram", False):
                continue
            if histogram is None:
                histogram = HistogramMetricFamily(
                    f"{self._prefix}_request_duration_seconds",
                    "Seconds from request() to the backend's reply (responses and remote errors).",
                    labels=keys,
                )
            latency = client.latency()
            cumulative, buckets = 0, []
            for bound, count in zip((*latency.bounds, float("inf")), latency.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            histogram.add_metric(values, buckets, latency.sum)
        yield from families.values()
        if histogram is not None:
            yield histogram
        if own:
            names = sorted(self._labels)
            values = [self._labels[key] for key in names]
            for key, value in own.items():
                family = self._family(key, names)
                family.add_metric(values, value)
                yield family

    def _family(self, key: str, labels: list[str]) -> CounterMetricFamily | GaugeMetricFamily:
        name = f"{self._prefix}_{_snake(key)}"
        text = f"twisted_sockshare {key}."
        if key in GAUGES:
            return GaugeMetricFamily(name, text, labels=labels)
        return CounterMetricFamily(name, text, labels=labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


__all__ = ["SockShareCollector", "GAUGES"]
