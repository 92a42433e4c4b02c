"""Counters and histograms for the request path, exposed through prometheus-client.

prometheus-client's own metrics take a lock per update; four updates per request cost
about 5 us, a tenth of a trivial request. These are updated only from the event loop's
thread (one writer, so no lock) with a dict lookup and an increment or a bisect, and
are turned into ordinary metric families when Prometheus scrapes. Use them only from
the loop thread; anything else should use prometheus-client directly.

Serving, jobs and runtimes all count with these, so they live in `capture`, the layer
each of them may import, next to the capture pipeline's own metrics (`capture.metrics`).

Several worker processes (SERVING_WORKERS) each count their own requests, and a scrape
lands on one of them. Under prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`
set when this module is imported, as the supervisor does for its workers) each update is
also written through to this process's value file in that folder, in the format
`MultiProcessCollector` sums at scrape time: a cached key and an 8-byte store into an
mmap, no lock (the loop thread is still the only writer). A single process never takes
that path: the choice is made once, per instance, by binding `inc`/`observe`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _ValueFiles:
    """This process's value files, one per metric type, opened on first write.

    Named `<type>_lockfree-<pid>.db`: `MultiProcessCollector` reads the type from the
    first part of the name, and prometheus-client's own metrics in this process keep
    their `<type>_<pid>.db` (two writers on one file would overwrite each other).
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.files: dict[str, MmapedDict] = {}

    def get(self, typ: str) -> MmapedDict:
        file = self.files.get(typ)
        if file is None:
            path = os.path.join(self.directory, f"{typ}_lockfree-{os.getpid()}.db")
            file = self.files[typ] = MmapedDict(path)
        return file


_files = _ValueFiles(MULTIPROC_DIR) if MULTIPROC_DIR else None


class LoopCounter(Collector):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self._keys: dict[tuple[str, ...], str] = {}
        if _files is not None:
            self.inc = self._inc_shared  # type: ignore[method-assign]
        REGISTRY.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def _inc_shared(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        assert _files is not None
        file = _files.get("counter")
        key = self._keys.get(labels)
        if key is None:
            key = self._keys[labels] = mmap_key(
                self.name, f"{self.name}_total", self.labelnames, list(labels), self.documentation
            )
            # A file left by an earlier process with this pid keeps its count: never backwards.
            self.values[labels] = file.read_value(key)[0]
        value = self.values[labels] = self.values[labels] + amount
        file.write_value(key, value, 0.0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        yield family


class _Series:
    __slots__ = ("counts", "keys", "sum", "sum_key")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0
        self.keys: list[str] = []  # multiprocess mode: each bucket's key in the value file
        self.sum_key = ""


class LoopHistogram(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self.bounds = list(buckets)
        self.series: dict[tuple[str, ...], _Series] = {}
        if _files is not None:
            self.observe = self._observe_shared  # type: ignore[method-assign]
        REGISTRY.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds) + 1)
        series.counts[bisect.bisect_left(self.bounds, value)] += 1
        series.sum += value

    def _observe_shared(self, labels: tuple[str, ...], value: float) -> None:
        """Per-bucket counts (not cumulative) and the sum, as prometheus-client's own
        histograms store them; the collector adds the buckets up and derives `_count`."""
        assert _files is not None
        file = _files.get("histogram")
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = self._shared_series(file, labels)
        i = bisect.bisect_left(self.bounds, value)
        count = series.counts[i] = series.counts[i] + 1
        series.sum += value
        file.write_value(series.keys[i], count, 0.0)
        file.write_value(series.sum_key, series.sum, 0.0)

    def _shared_series(self, file: MmapedDict, labels: tuple[str, ...]) -> _Series:
        series = _Series(len(self.bounds) + 1)
        names = [*self.labelnames, "le"]
        for bound in [*self.bounds, float("inf")]:
            values = [*labels, floatToGoString(bound)]
            series.keys.append(mmap_key(self.name, f"{self.name}_bucket", names, values, self.documentation))
        series.sum_key = mmap_key(
            self.name, f"{self.name}_sum", self.labelnames, list(labels), self.documentation
        )
        # A file left by an earlier process with this pid keeps its counts.
        series.counts = [int(file.read_value(key)[0]) for key in series.keys]
        series.sum = file.read_value(series.sum_key)[0]
        return series

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, series in list(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], series.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            family.add_metric(list(labels), buckets, series.sum)
        yield family
