"""``redis+sentinel://`` URLs: what they mean, what they refuse, and that no secret of theirs is shown.

Pure parsing (no server): the failover itself is ``tests/faults/test_sentinel.py``.
"""

from __future__ import annotations

import traceback
from typing import Any

import pytest

pytest.importorskip("redis")

import dbtbus
from dbtbus._exceptions import ConfigurationError
from dbtbus._format import redact_url
from dbtbus.backends.redis import RedisBackend

SECRET = "s3cret-Pw-7q"
SENTINEL_SECRET = "s3nt1nel-Pw-4k"


def test_hosts_service_db_and_credentials() -> None:
    backend = RedisBackend.from_url(
        f"redis+sentinel://app:{SECRET}@s1:5000,s2,[::1]:5002/mymaster/2"
        f"?prefix=acme:&sentinel_password={SENTINEL_SECRET}&retries=1"
    )
    s = backend.settings
    assert s.sentinels == (("s1", 5000), ("s2", 26379), ("::1", 5002))  # 26379: Sentinel's default port
    assert s.service == "mymaster"
    # The userinfo is the data nodes' (master and replicas), as in redis://; sentinel_* is the sentinels'.
    assert s.client == {"username": "app", "password": SECRET, "db": 2}
    assert s.sentinel_client == {"password": SENTINEL_SECRET}
    assert (backend.prefix, s.retries, backend.cluster) == ("acme:", 1, False)
    assert backend.log_key("r1") == "acme:{r1}:log"
    for shown in (repr(backend), repr(s), s.display_url, s.url):
        assert SECRET not in shown and SENTINEL_SECRET not in shown, shown
    assert s.display_url == (
        "redis+sentinel://app:***@s1:5000,s2,[::1]:5002/mymaster/2?prefix=acme:&sentinel_password=***&retries=1"
    )


def test_defaults_and_overrides() -> None:
    s = RedisBackend.from_url("redis+sentinel://s1/mymaster").settings
    assert (s.sentinels, s.service, s.client) == ((("s1", 26379),), "mymaster", {"db": 0})
    # Keyword options win over the URL's, the sentinel ones too.
    s = RedisBackend.from_url("redis+sentinel://s1/m?sentinel_username=a", sentinel_username="b", db=4).settings
    assert s.sentinel_client == {"username": "b"} and s.client["db"] == 4


def test_tls_covers_data_nodes_and_sentinels() -> None:
    s = RedisBackend.from_url("rediss+sentinel://s1:1,s2:2/m/0?ssl_ca_certs=/ca.pem").settings
    assert s.client["ssl"] is True and s.client["ssl_ca_certs"] == "/ca.pem"
    assert s.sentinel_client == {"ssl": True, "ssl_ca_certs": "/ca.pem"}


def test_connect_builds_a_sentinel_bus() -> None:
    bus = dbtbus.connect("redis+sentinel://s1:26379,s2:26379/mymaster/0")
    assert isinstance(bus.backend, RedisBackend)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis+sentinel://s1:26379", {}),  # no service name
        ("redis+sentinel://s1:26379/", {}),
        ("redis+sentinel://s1/m/0/extra", {}),
        ("redis+sentinel://s1/m/zero", {}),
        ("redis+sentinel:///m/0", {}),  # no sentinel
        ("redis+sentinel://s1,,s2/m", {}),
        ("redis+sentinel://s1:99999/m", {}),
        ("redis+sentinel://s1:port/m", {}),
        ("redis+sentinel://s1/m?cluster=true", {}),  # one master: not a cluster
        ("redis+sentinel://s1/m", {"cluster": False}),
        ("redis+sentinel://s1/m?ssl_ca_certs=/ca.pem", {}),  # TLS options need rediss+sentinel://
        ("redis+sentinel://s1/m?bogus=1", {}),
        ("redis+sentinel://s1/m?prefix=a", {}),
        ("redis+sentinel://s1/m#frag", {}),
    ],
)
def test_bad_sentinel_urls_raise_configuration_error(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend.from_url(url, **options)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://:{SECRET}@s1,s2/m/0?sentinel_password={SENTINEL_SECRET}&bogus=1",
        f"redis+sentinel://u:{SECRET}@s1/m/0?password={SECRET}&ssl_ca_certs=/ca.pem",
        f"redis+sentinel://u:{SECRET}@s1:port/m",
        f"redis+sentinel://u:{SECRET}@s1/m/x?sentinel_password={SENTINEL_SECRET}",
    ],
)
def test_a_refused_sentinel_url_shows_no_secret(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisBackend.from_url(url)
    text = repr(caught.value) + "".join(traceback.format_exception(caught.value))
    assert SECRET not in text and SENTINEL_SECRET not in text, text
    # What every other part of dbtbus shows of a URL (the CLI, Airflow's logs) masks it too.
    assert SECRET not in redact_url(url) and SENTINEL_SECRET not in redact_url(url)


@pytest.mark.anyio
async def test_a_master_switch_is_reported_once_per_run_claimed_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The FailoverWatch behind renew_lease's False after a Sentinel failover: the first master a client hears
    of is no switch; a change of the writing client's master is, once for each run, and never for reads."""
    from dbtbus.backends import _sentinel

    monkeypatch.setattr(_sentinel, "MASTER_CHECK_INTERVAL", 0.0)

    class Pool:
        master = ("10.0.0.1", 6379)

        async def get_master_address(self) -> tuple[str, int]:
            return self.master

    class Client:
        def __init__(self) -> None:
            self.connection_pool = Pool()

    writer, reader = Client(), Client()
    watch = _sentinel.FailoverWatch()
    await watch.follow(writer, writes=True)
    await watch.follow(reader, writes=False)
    watch.claimed("a")
    watch.claimed("b")
    assert watch.writes_kept("a") and watch.writes_kept("b")
    writer.connection_pool.master = reader.connection_pool.master = ("10.0.0.2", 6379)
    await watch.follow(reader, writes=False)  # a reader's view changes nothing
    assert watch.switches == 0
    await watch.follow(writer, writes=True)
    assert watch.switches == 1
    assert not watch.writes_kept("a") and watch.writes_kept("a")  # told once...
    assert not watch.writes_kept("b")  # ...to each run
    watch.claimed("c")  # claimed after the switch: nothing of it was on the old master
    assert watch.writes_kept("c")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the Redis backend runs on asyncio only
async def test_an_older_redis_py_is_refused_at_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py 7.3's Sentinel left 5 connections open and took 34 s to fail on a wrong sentinel_password (the
    lowest-dependencies suite): below MIN_REDIS_PY a Sentinel URL is a clear ConfigurationError, not half-working."""
    import redis

    from dbtbus.backends import backend_from_url
    from dbtbus.backends._sentinel import MIN_REDIS_PY

    monkeypatch.setattr(redis, "__version__", "7.3.0")
    backend = backend_from_url("redis+sentinel://:s3cr3t-Pw@127.0.0.1:1/mymaster/0")
    with pytest.raises(ConfigurationError, match=r"needs redis-py >= 8\.2 \(installed: 7\.3\.0\)") as caught:
        await backend.open()
    assert "s3cr3t-Pw" not in str(caught.value)
    assert MIN_REDIS_PY == (8, 2)
