"""What the shipped dashboard and alert rules may refer to: the metric names a real server exports.

The names come from scraping a demo server after a small workload (chat, a
cache hit, a stored conversation, errors), so a renamed or removed metric
breaks these tests instead of a dashboard panel in production.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import unavailable
from tests.connection.http.conftest import demo_settings, register
from tests.server import running_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target."""

_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exposed_names(exposition: str) -> frozenset[str]:
    """Every series name a scrape of `exposition` can produce, from its `# TYPE` lines."""
    names: set[str] = set()
    for name, kind in _TYPE_LINE.findall(exposition):
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return frozenset(names)


@pytest.fixture(scope="session")
def exported_metrics(tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    with running_server(demo_settings(tmp_path_factory.mktemp("scrape"))) as server:
        account = register(server.base_url, "metrics@example.com")
        with httpx.Client(base_url=server.base_url, headers=account.key_headers, timeout=30) as client:
            body = {
                "model": "ziggurat-demo",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0,
            }
            for _ in range(2):  # a miss, then a cache hit
                assert client.post("/v1/chat/completions", json=body).status_code == 200
            assert client.post("/v1/chat/completions", json={**body, "stream": True}).status_code == 200
            assert client.post("/v1/chat/completions", json={**body, "model": "nope"}).status_code == 404
            conversation = client.post("/api/conversations", json={}).json()["id"]
            with client.stream(
                "POST", f"/api/conversations/{conversation}/messages", json={"content": "hello"}
            ) as stream:
                stream.read()
        assert httpx.get(server.base_url + "/v1/models").status_code == 401
        exposition = httpx.get(server.base_url + "/metrics").text
    return exposed_names(exposition)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The `promtool` binary (Debian: `apt-get install prometheus`); its absence fails under `CI=true`."""
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return path


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_DURATIONS = re.compile(r"\[[^\[\]]*\]")
_NUMBERS = re.compile(r"\b\d[\w.]*")  # numbers and durations (`offset 5m`)
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_CALL = re.compile(r"\s*\(")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _GROUPINGS.sub(" ", bare)
    bare = _DURATIONS.sub(" ", bare)
    bare = _NUMBERS.sub(" ", bare)
    return {
        match.group()
        for match in _IDENTIFIER.finditer(bare)
        if match.group().lower() not in _KEYWORDS and not _CALL.match(bare, match.end())
    }
