"""Load shedding: a job that would wait past its class's deadline is refused at once, with a hint."""

import pytest

from ziggurat.connection.broker.base import Priority
from ziggurat.errors import Overloaded
from ziggurat.service.admission import LoadShedder, QueueDeadlines


def shedder(depth: int, slots: int | None, deadlines: QueueDeadlines | None = None) -> LoadShedder:
    return LoadShedder(
        deadlines=deadlines or QueueDeadlines(interactive_s=10, api_s=20, background_s=40),
        queue_depth=lambda model: depth,
        capacity=lambda model: slots,
    )


def test_nothing_is_shed_before_a_service_time_is_known() -> None:
    cold = shedder(depth=10_000, slots=1)
    assert cold.expected_wait_s("m") is None
    cold.check("m", Priority.BACKGROUND)  # no exception


def test_the_expected_wait_is_depth_times_service_time_over_slots() -> None:
    busy = shedder(depth=30, slots=4)
    busy.observe("m", 2.0)
    assert busy.expected_wait_s("m") == pytest.approx(15.0)
    busy.check("m", Priority.API)  # 15 s ≤ 20 s
    busy.check("m", Priority.BACKGROUND)
    with pytest.raises(Overloaded) as refused:
        busy.check("m", Priority.INTERACTIVE)  # 15 s > 10 s
    assert refused.value.retry_after_s == 5
    assert "expected wait" in refused.value.message


def test_background_work_is_shed_first_as_the_queue_grows() -> None:
    deadlines = QueueDeadlines(interactive_s=30, api_s=30, background_s=5)
    busy = shedder(depth=10, slots=2, deadlines=deadlines)
    busy.observe("m", 2.0)  # 10 s expected
    busy.check("m", Priority.INTERACTIVE)
    with pytest.raises(Overloaded):
        busy.check("m", Priority.BACKGROUND)


def test_the_service_time_is_a_moving_average() -> None:
    busy = shedder(depth=1, slots=1)
    busy.observe("m", 10.0)
    for _ in range(30):
        busy.observe("m", 1.0)
    assert busy.averages()["m"] == pytest.approx(1.0, abs=0.05)
    busy.observe("m", float("nan"))
    busy.observe("m", -1)
    assert busy.averages()["m"] == pytest.approx(1.0, abs=0.05)


def test_unknown_capacity_or_no_deadline_never_sheds() -> None:
    unknown = shedder(depth=1000, slots=None)
    unknown.observe("m", 5.0)
    unknown.check("m", Priority.INTERACTIVE)
    unlimited = shedder(depth=1000, slots=1, deadlines=QueueDeadlines(None, None, None))
    unlimited.observe("m", 5.0)
    unlimited.check("m", Priority.BACKGROUND)
