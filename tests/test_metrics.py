"""
The client's figures through prometheus_client: the collector, the latency
histogram, and the gateway's /metrics and /readyz.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent
from twisted.web.test.requesthelper import DummyRequest

from twisted_sockshare import SockShareBalancer, SockShareClientFactory, SockShareServerFactory
from twisted_sockshare.demo.gateway import GatewayResource, makeSite
from twisted_sockshare.errors import RequestTimeout
from twisted_sockshare.metrics import SockShareCollector
from twisted_sockshare.stats import LATENCY_BUCKETS
from twisted_sockshare.testing import MemoryBackend
from twisted_sockshare.wire import PING, REQUEST, Hello, encodeFrame, encodeTimedRequest

from .helpers import FakeEndpoint, connectServer, readAll


def scrape(source: object, labels: dict[str, str] | None = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """
    The exposition text of a registry holding one collector, parsed back:
    sample name to (labels, value) pairs.
    """
    registry = CollectorRegistry()
    registry.register(SockShareCollector(source, labels))
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


class LatencyTests(SynchronousTestCase):
    def test_histogram(self) -> None:
        """
        With C{latencyHistogram=True}, each reply is counted in the bucket of
        its latency (C{request()} to the chunk that brought it), and the sum
        adds them up; failed requests have no reply and are not counted.
        """
        backend = MemoryBackend(lambda payload: Deferred() if payload == b"never" else payload)
        client = backend.client(latencyHistogram=True, requestTimeout=5.0)
        client.request(b"fast")
        backend.flush()
        self.assertEqual(client.latency().count, 1)
        slow = client.request(b"slow")
        backend.clock.advance(0.003)
        backend.flush()
        self.assertEqual(self.successResultOf(slow), b"slow")
        failed = client.request(b"never")
        backend.flush()
        backend.clock.advance(6)
        self.failureResultOf(failed, RequestTimeout)
        latency = client.latency()
        self.assertEqual(latency.bounds, LATENCY_BUCKETS)
        self.assertEqual(latency.count, 2)
        self.assertEqual(latency.counts[0], 1)  # no time passed: <= 100 microseconds
        self.assertEqual(latency.counts[LATENCY_BUCKETS.index(0.005)], 1)  # 3 ms: <= 5 ms
        self.assertAlmostEqual(latency.sum, 0.003)

    def test_offByDefault(self) -> None:
        """By default no latency is counted: the request path does not pay for it."""
        backend = MemoryBackend(lambda payload: payload)
        client = backend.client()
        client.request(b"x")
        backend.flush()
        self.assertFalse(client.latencyHistogram)
        self.assertEqual(client.latency().count, 0)
        self.assertNotIn("sockshare_request_duration_seconds_count", scrape(client))

    def test_optionChecked(self) -> None:
        """latencyHistogram must be a bool."""
        with self.assertRaises(TypeError) as caught:
            SockShareClientFactory("tcp:127.0.0.1:1", Clock(), latencyHistogram="yes")  # type: ignore[arg-type]
        self.assertIn("latencyHistogram", str(caught.exception))


class CollectorTests(SynchronousTestCase):
    def test_client(self) -> None:
        """
        A client's counters are counters (C{_total}), its gauges gauges, its
        latency a histogram; every series carries the given labels.
        """
        backend = MemoryBackend(lambda payload: payload)
        client = backend.client(latencyHistogram=True)
        for payload in (b"a", b"b", b"c"):
            client.request(payload)
        backend.flush()
        samples = scrape(client, {"service": "pricing"})
        self.assertEqual(samples["sockshare_requests_total"], [({"service": "pricing"}, 3.0)])
        self.assertEqual(samples["sockshare_responses_total"], [({"service": "pricing"}, 3.0)])
        self.assertEqual(samples["sockshare_pending"], [({"service": "pricing"}, 0.0)])
        self.assertEqual(samples["sockshare_connected"], [({"service": "pricing"}, 1.0)])
        self.assertEqual(samples["sockshare_request_duration_seconds_count"], [({"service": "pricing"}, 3.0)])
        buckets = {labels["le"]: value for labels, value in samples["sockshare_request_duration_seconds_bucket"]}
        self.assertEqual(len(buckets), len(LATENCY_BUCKETS) + 1)
        self.assertEqual((buckets["0.0001"], buckets["+Inf"]), (3.0, 3.0))

    def test_server(self) -> None:
        """
        A server's counters are counters, its gauges gauges: among them the
        deadlines it enforced and the requests it refused (wire v3).
        """
        clock = Clock()
        factory = SockShareServerFactory(lambda payload: Deferred(), clock=clock, whenFull="refuse", maxInFlight=1)
        protocol, _ = connectServer(factory)
        hello = encodeFrame(0, PING, Hello(deadlines=True, refusals=True).encode())
        protocol.dataReceived(hello + encodeTimedRequest(1, 0, b"late") + encodeTimedRequest(2, 10, b"slow"))
        protocol.dataReceived(encodeFrame(3, REQUEST, b"refused"))
        clock.advance(0.01)
        samples = scrape(factory, {"service": "pricing"})
        labels = {"service": "pricing"}
        self.assertEqual(samples["sockshare_deadline_exceeded_total"], [(labels, 2.0)])
        self.assertEqual(samples["sockshare_deadline_exceeded_on_arrival_total"], [(labels, 1.0)])
        self.assertEqual(samples["sockshare_refused_total"], [(labels, 1.0)])
        self.assertEqual(samples["sockshare_connections"], [(labels, 1.0)])
        self.assertEqual(samples["sockshare_in_flight"], [(labels, 0.0)])

    def test_balancerPerEndpoint(self) -> None:
        """A balancer's figures are one series per endpoint, labelled C{endpoint}."""
        first, second = FakeEndpoint(), FakeEndpoint()
        balancer = SockShareBalancer([first, second], Clock(), latencyHistogram=True, random=lambda: 0.0)
        balancer.request(b"x")
        first.last.succeed()
        first.last.respond(0, b"x")
        samples = scrape(balancer)
        requests = {labels["endpoint"]: value for labels, value in samples["sockshare_requests_total"]}
        self.assertEqual(sorted(requests.values()), [0.0, 1.0])
        self.assertEqual(len(requests), 2)
        counts = {labels["endpoint"]: v for labels, v in samples["sockshare_request_duration_seconds_count"]}
        self.assertEqual(counts, requests)
        self.assertEqual({labels["endpoint"] for labels, _ in samples["sockshare_down"]}, set(requests))
        # The gateway's /stats shows each endpoint's counters too.
        request = DummyRequest([b"stats"])
        body = GatewayResource(balancer, "shared", "two").getChildWithDefault(b"stats", request).render(request)
        self.assertEqual(set(json.loads(body)["endpointStats"]), set(requests))
        # The balancer's own figures have no endpoint label.
        self.assertEqual(samples["sockshare_endpoints"], [({}, 2.0)])
        self.assertEqual(samples["sockshare_retries_total"], [({}, 0.0)])
        self.assertEqual(samples["sockshare_discovery_failures_total"], [({}, 0.0)])


class GatewayMetricsTests(TestCase):
    """
    The gateway's /metrics and /readyz, over real loopback sockets.
    """

    timeout = 30

    async def gateway(self, backendPort: int) -> tuple[SockShareClientFactory, str]:
        client = SockShareClientFactory(
            f"tcp:127.0.0.1:{backendPort}", reactor, latencyHistogram=True, connectBackoff=lambda failures: 0.0
        )
        self.addCleanup(client.close)
        site = makeSite(GatewayResource(client, "shared", "backend"), maxPayload=1000)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        return client, f"http://127.0.0.1:{port.getHost().port}"

    async def get(self, url: str, method: bytes = b"GET", body: bytes | None = None) -> tuple[int, bytes]:
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        agent = Agent(reactor)
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = await agent.request(method, url.encode(), None, producer)
        return response.code, await readAll(response)

    async def test_scrape(self) -> None:
        """
        /metrics serves the client's counters, its latency histogram and
        the HTTP requests' duration, in Prometheus' text format.
        """
        backendPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            SockShareServerFactory(bytes.upper)
        )
        self.addCleanup(backendPort.stopListening)
        client, base = await self.gateway(backendPort.getHost().port)
        for _ in range(3):
            self.assertEqual(await self.get(base + "/request", b"POST", b"hi"), (200, b"HI"))
        code, text = await self.get(base + "/metrics")
        self.assertEqual(code, 200)
        samples = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        labels = {"backend": "backend", "strategy": "shared"}
        self.assertEqual(samples["sockshare_responses_total"], [(labels, 3.0)])
        self.assertEqual(samples["sockshare_request_duration_seconds_count"], [(labels, 3.0)])
        self.assertEqual(
            samples["sockshare_gateway_request_duration_seconds_count"], [({"method": "POST", "code": "200"}, 3.0)]
        )
        await client.close()

    async def test_readyz(self) -> None:
        """
        /readyz is 200 while the backend is reachable, 503 after a failed
        connection attempt, 200 again once one succeeds; /healthz stays 200.
        """
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            SockShareServerFactory(bytes.upper)
        )
        port = listening.getHost().port
        client, base = await self.gateway(port)
        self.assertEqual((await self.get(base + "/readyz"))[0], 200)
        await listening.stopListening()
        code, _ = await self.get(base + "/request", b"POST", b"x")
        self.assertEqual(code, 502)
        code, text = await self.get(base + "/readyz")
        self.assertEqual(code, 503)
        self.assertIn(b"backend unreachable", text)
        self.assertEqual((await self.get(base + "/healthz"))[0], 200)
        again = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
            SockShareServerFactory(bytes.upper)
        )
        self.addCleanup(again.stopListening)
        self.assertEqual(await self.get(base + "/request", b"POST", b"x"), (200, b"X"))
        self.assertEqual((await self.get(base + "/readyz"))[0], 200)
