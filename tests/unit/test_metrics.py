"""shmring.metrics in one process: declaring metrics, updating them, what a
read of the region gives, the Prometheus text of it, and the typed errors
of bad names, labels, values, conflicting declarations and full regions.
(Several processes, deaths and folding: tests/multiprocess/test_metrics_*.)"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

import pytest
from metrics_util import mname, parse, registries
from prometheus_client import CollectorRegistry, generate_latest

import shmring
import shmring.metrics as m
from shmring.metrics import Registry
from shmring.metrics.prometheus import Collector

Make = Callable[..., Registry]


@pytest.fixture
def make_registry() -> Iterator[Make]:
    yield from registries()


def series(reg: Registry, name: str) -> dict[tuple[str, ...], m.Series]:
    fam = {f.name: f for f in reg.read().families}[name]
    return {s.values: s for s in fam.series}


def test_a_counter_counts_and_the_read_says_so(make_registry: Make) -> None:
    reg = make_registry()
    c = m.Counter("served_total", "Requests served", registry=reg)
    c.inc()
    c.inc(41)
    assert c.get() == 42
    (fam,) = reg.read().families
    assert (fam.name, fam.kind, fam.help, fam.labels) == ("served", "counter",
                                                          "Requests served", ())
    assert fam.series[0].value == 42
    # "x_total" and "x" are one counter (the exposition adds _total).
    m.Counter("served", "Requests served", registry=reg).inc(8)
    assert series(reg, "served")[()].value == 50


def test_labels_by_position_and_by_name_are_one_series(make_registry: Make) -> None:
    reg = make_registry()
    c = m.Counter("hits", "Hits", labels=["method", "code"], registry=reg)
    c.labels("GET", 200).inc()
    c.labels(method="GET", code="200").inc(2)
    c.labels("POST", "500").inc(5)
    assert c.labels("GET", "200") is c.labels(code=200, method="GET")
    got = {k: s.value for k, s in series(reg, "hits").items()}
    assert got == {("GET", "200"): 3, ("POST", "500"): 5}


@pytest.mark.parametrize("call", [
    lambda c: c.inc(),                       # the family of a labelled metric
    lambda c: c.labels("GET"),               # too few values
    lambda c: c.labels("GET", "200", "x"),   # too many
    lambda c: c.labels(method="GET"),        # a name missing
    lambda c: c.labels("GET", code="200"),   # both ways at once
    lambda c: c.labels("GET", "200").labels("x", "y"),
])
def test_label_values_that_do_not_fit_are_invalid(make_registry: Make,
                                                  call: Callable[[m.Counter], object]) -> None:
    c = m.Counter("hits", "Hits", labels=["method", "code"], registry=make_registry())
    with pytest.raises(shmring.InvalidArgument):
        call(c)


def test_labels_of_a_metric_without_labels_are_invalid(make_registry: Make) -> None:
    g = m.Gauge("depth", "Depth", registry=make_registry())
    with pytest.raises(shmring.InvalidArgument, match="takes 0 label"):
        g.labels("x")


@pytest.mark.parametrize("name", ["", "1st", "a-b", "a b", "é", 5, None])
def test_bad_metric_names_are_invalid(make_registry: Make, name: object) -> None:
    reg = make_registry()
    with pytest.raises(shmring.InvalidArgument, match="bad metric name"):
        m.Counter(name, "x", registry=reg)  # type: ignore[arg-type]


@pytest.mark.parametrize("labels", [["__reserved"], ["1a"], ["a-b"], ["a", "a"], [3]])
def test_bad_label_names_are_invalid(make_registry: Make, labels: list[str]) -> None:
    with pytest.raises(shmring.InvalidArgument, match="label"):
        m.Gauge("g", "x", labels=labels, registry=make_registry())


def test_a_histogram_cannot_have_a_label_le(make_registry: Make) -> None:
    with pytest.raises(shmring.InvalidArgument, match="'le'"):
        m.Histogram("h", "x", labels=["le"], registry=make_registry())


@pytest.mark.parametrize("buckets", [(), (2.0, 1.0), (1.0, 1.0), (math.nan,), ("a",)])
def test_bad_buckets_are_invalid(make_registry: Make, buckets: tuple[object, ...]) -> None:
    with pytest.raises(shmring.InvalidArgument, match="buckets"):
        m.Histogram("h", "x", buckets=buckets, registry=make_registry())  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [-1, 1.5, 2**64, "1"])
def test_a_counter_adds_only_whole_numbers_at_least_zero(make_registry: Make,
                                                         amount: object) -> None:
    c = m.Counter("c", "x", registry=make_registry())
    c.inc(3)
    with pytest.raises((shmring.InvalidArgument, TypeError)):
        c.inc(amount)  # type: ignore[arg-type]
    assert c.get() == 3


@pytest.mark.parametrize(("first", "second"), [
    (lambda r: m.Counter("x", "", registry=r), lambda r: m.Gauge("x", "", registry=r)),
    (lambda r: m.Gauge("x", "", labels=["a"], registry=r),
     lambda r: m.Gauge("x", "", labels=["b"], registry=r)),
    (lambda r: m.Gauge("x", "", registry=r), lambda r: m.Gauge("x", "", ["a"], registry=r)),
    (lambda r: m.Histogram("x", "", buckets=[1, 2], registry=r),
     lambda r: m.Histogram("x", "", buckets=[1, 3], registry=r)),
    (lambda r: m.Histogram("x", "", registry=r), lambda r: m.Counter("x", "", registry=r)),
])
def test_a_second_declaration_of_another_kind_is_a_conflict(
        make_registry: Make, first: Callable[[Registry], object],
        second: Callable[[Registry], object]) -> None:
    reg = make_registry()
    first(reg)
    with pytest.raises(m.MetricConflict, match="exists as a") as e:
        second(reg)
    assert isinstance(e.value, shmring.InvalidArgument)


def test_a_second_registry_object_sees_the_same_metrics(make_registry: Make) -> None:
    name = mname()
    a = make_registry(name)
    b = make_registry(name)
    m.Counter("c", "x", registry=a).inc(2)
    m.Counter("c", "x", registry=b).inc(3)  # the same process: the same slab
    with pytest.raises(m.MetricConflict):
        m.Gauge("c", "x", registry=b)
    assert series(a, "c")[()].value == 5


def test_gauges_set_go_up_and_down(make_registry: Make) -> None:
    reg = make_registry()
    g = m.Gauge("temp", "Temperature", registry=reg)
    g.set(20.5)
    g.inc(2)
    g.dec(0.5)
    assert g.get() == 22.0
    assert series(reg, "temp")[()].value == 22.0


def test_a_histogram_counts_by_bucket_bound_included(make_registry: Make) -> None:
    reg = make_registry()
    h = m.Histogram("lat", "Latency", buckets=[0.1, 1, math.inf], registry=reg)
    for v in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        h.observe(v)
    counts, total = h.counts()
    assert counts == [2, 2, 2] and total == pytest.approx(104.65)
    s = series(reg, "lat")[()]
    assert s.buckets == [2, 2, 2] and s.sum == pytest.approx(104.65)


def test_threads_of_one_process_lose_no_update(make_registry: Make) -> None:
    reg = make_registry()
    c = m.Counter("c", "x", registry=reg)
    g = m.Gauge("g", "x", registry=reg)
    h = m.Histogram("h", "x", buckets=[1.0], registry=reg)

    def work() -> None:
        for _ in range(5000):
            c.inc()
            g.inc(1)
            h.observe(0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (c.get(), g.get(), h.counts()) == (20000, 20000.0, ([20000, 0], 10000.0))


def test_the_prometheus_text_of_a_read(make_registry: Make) -> None:
    reg = make_registry()
    m.Counter("jobs_total", "Jobs done", ["kind"], registry=reg).labels("a").inc(7)
    m.Gauge("busy", "Busy workers", registry=reg).set(3)
    h = m.Histogram("took", "Time", buckets=[1, 2], registry=reg)
    for v in (0.5, 1.5, 1.7, 9):
        h.observe(v)
    scrape = CollectorRegistry()
    scrape.register(Collector(reg))
    text = generate_latest(scrape).decode()
    assert "# HELP jobs_total Jobs done" in text and "# TYPE took histogram" in text
    got = parse(text)
    assert got[("jobs_total", (("kind", "a"),))] == 7
    assert got[("busy", ())] == 3
    assert [got[("took_bucket", (("le", le),))] for le in ("1.0", "2.0", "+Inf")] == [1, 3, 4]
    assert got[("took_count", ())] == 4 and got[("took_sum", ())] == pytest.approx(12.7)
    assert got[("shmring_metrics_processes", ())] == 1


def test_a_full_table_a_full_value_area(make_registry: Make) -> None:
    reg = make_registry(entries=4, values=16)
    c = m.Counter("c", "x", ["k"], registry=reg)  # 1 family entry
    c.labels("a").inc()
    c.labels("b").inc()
    c.labels("c").inc()
    with pytest.raises(m.MetricsFull, match="table is full") as e:
        c.labels("d").inc()
    assert e.value.what == "entries" and isinstance(e.value, shmring.ShmringError)
    reg2 = make_registry(entries=16, values=16)
    m.Histogram("h", "x", buckets=range(1, 10), registry=reg2)  # 9 + 2 words
    with pytest.raises(m.MetricsFull, match="value words") as e:
        m.Histogram("h2", "x", buckets=range(1, 10), registry=reg2)
    assert e.value.what == "values"
    m.Counter("fits", "x", registry=reg2).inc()  # 5 words were left: a counter fits


def test_text_too_long_for_an_entry_is_invalid(make_registry: Make) -> None:
    with pytest.raises(shmring.InvalidArgument, match="bytes"):
        m.Counter("c", "x" * 1000, registry=make_registry())


def test_a_closed_registry_refuses_updates_and_reopening_counts_on(make_registry: Make) -> None:
    name = mname()
    reg = make_registry(name)
    c = m.Counter("c", "x", registry=reg)
    c.inc(5)
    reg.close()
    with pytest.raises(shmring.Closed):
        c.inc()
    with pytest.raises(shmring.Closed):
        reg.read()
    again = make_registry(name)
    c2 = m.Counter("c", "x", registry=again)
    c2.inc()
    assert c2.get() == 6  # this process's slab, kept while it lives
    assert again.read().live == 1


def test_sizes_must_be_sensible(make_registry: Make) -> None:
    for kw in ({"entries": 0}, {"slabs": -1}, {"values": 1.5}, {"entry_bytes": 100}):
        with pytest.raises(shmring.InvalidArgument):
            make_registry(**kw)


def test_an_ordinary_channel_is_not_a_metrics_region(make_registry: Make) -> None:
    name = mname()
    ch = shmring.Channel.create(name, 4096)
    try:
        with pytest.raises(shmring.CorruptRegion, match="not a metrics region"):
            Registry(name)
    finally:
        ch.close()
        ch.unlink()


def test_status_and_create_false(make_registry: Make) -> None:
    with pytest.raises(shmring.RegionNotFound):
        Registry(mname(), create=False)
    reg = make_registry(slabs=8)
    m.Counter("c", "x", registry=reg).inc()
    st = reg.status()
    assert st["metrics"] == 1 and st["series"] == 1 and st["processes"] == 1
    assert st["slabs"] == 8 and st["folded"] == 0 and st["daemon"] is None
    assert st["segment"].endswith("." + reg.name)


def test_the_daemon_role_is_one_process(make_registry: Make) -> None:
    reg = make_registry()
    reg.take_daemon(1234)
    reg.take_daemon(1234)  # again by the same process: still its
    assert reg.status()["daemon"]["port"] == 1234
    reg.drop_daemon()
    assert reg.status()["daemon"] is None
