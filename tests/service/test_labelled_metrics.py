from prometheus_client import CollectorRegistry, generate_latest

from ziggurat.service.labelled_metrics import Counter, Gauge, Histogram


def test_the_same_values_give_the_same_child_and_count_once_each() -> None:
    registry = CollectorRegistry()
    requests = Counter("t_requests_total", "requests", ["model", "status"], registry=registry)

    first = requests.labels("m", "ok")
    first.inc()
    requests.labels("m", "ok").inc(2)
    requests.labels(model="m", status="error").inc()

    assert requests.labels("m", "ok") is first
    text = generate_latest(registry).decode()
    assert 't_requests_total{model="m",status="ok"} 3.0' in text
    assert 't_requests_total{model="m",status="error"} 1.0' in text


def test_a_removed_child_is_not_handed_out_again() -> None:
    registry = CollectorRegistry()
    active = Gauge("t_active", "active", ["model"], registry=registry)
    old = active.labels("m")
    old.set(5)

    active.remove("m")
    fresh = active.labels("m")
    fresh.inc()

    assert fresh is not old
    assert 't_active{model="m"} 1.0' in generate_latest(registry).decode()


def test_clear_forgets_every_child() -> None:
    registry = CollectorRegistry()
    latency = Histogram("t_latency_seconds", "latency", ["model"], buckets=(1.0,), registry=registry)
    old = latency.labels("m")
    latency.clear()

    assert latency.labels("m") is not old
