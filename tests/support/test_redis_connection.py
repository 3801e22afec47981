"""How the Redis connection is chosen: the URL options and their variables, checked before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.config import load_settings
from support.errors import UsageError
from support.ports import free_port
from support.private_redis import PrivateRedisServer
from support.redis_connection import RedisTarget, parse_target
from support.services import check_redis
from tests.conftest import cli_environment, run_cli
from tests.support.fake_azure_identity import FakeManagedIdentity


def test_the_sample_options_are_taken_off_the_url_redis_py_sees() -> None:
    target = parse_target("rediss://cache.example:10000/0?cluster=true&auth=entra-id&ssl_ca_certs=/ca.pem")

    assert target == RedisTarget("rediss://cache.example:10000/0?ssl_ca_certs=/ca.pem", cluster=True, entra_id=True)


def test_the_variables_add_the_options_to_the_url() -> None:
    env = {"REDIS_CONNECTION_STRING": "rediss://cache.example:10000", "REDIS_CLUSTER": "true", "REDIS_AUTH": "entra-id"}

    assert load_settings(env).redis_url == "rediss://cache.example:10000?cluster=true&auth=entra-id"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_CONNECTION_STRING": "redis://h:1", "REDIS_CLUSTER": "yes"}, "REDIS_CLUSTER"),
        ({"REDIS_CONNECTION_STRING": "redis://h:1", "REDIS_AUTH": "token"}, "REDIS_AUTH"),
        ({"REDIS_CLUSTER": "true"}, "REDIS_CONNECTION_STRING"),
        ({"REDIS_CONNECTION_STRING": "redis://h:1?cluster=on"}, "cluster="),
        ({"REDIS_CONNECTION_STRING": "redis://u:secret@h:1", "REDIS_AUTH": "entra-id"}, "REDIS_AUTH=entra-id"),
        ({"WORKER_MAX_CONCURRENT_RUNS": "0"}, "WORKER_MAX_CONCURRENT_RUNS"),
        ({"WORKER_MAX_CONCURRENT_RUNS": "100000"}, "WORKER_MAX_CONCURRENT_RUNS"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError) as raised:
        load_settings(env)

    assert named in str(raised.value) and "\n" not in str(raised.value) and "secret" not in str(raised.value)


def test_entra_id_without_an_azure_identity_is_one_error_line(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeManagedIdentity(admin=None) as no_identity:  # an App Service with no identity assigned
        for name, value in no_identity.environment.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(UsageError) as raised:  # what every entry point prints as `error: ...`, exit 2
            check_redis(f"{redis_url}?auth=entra-id", "REDIS_CONNECTION_STRING")

    assert "\n" not in str(raised.value)
    assert "could not get a Microsoft Entra ID token for the Redis in REDIS_CONNECTION_STRING" in str(raised.value)


def test_a_unix_socket_url_works_end_to_end(tmp_path: Path) -> None:
    # The form .env.example documents; urlunsplit once turned it into unix:/path, which redis-py refuses.
    socket_path = tmp_path / "redis.sock"
    with PrivateRedisServer(free_port(), extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]):
        env = cli_environment(REDIS_CONNECTION_STRING=f"unix://{socket_path}")
        result = run_cli("sample.py", "-m", "Plan a 1-day trip to Oslo", "--verify", env=env)

    assert result.returncode == 0, result.stderr
    assert f"using Redis at unix://{socket_path}" in result.stderr
    assert "# Your 1-day trip to Oslo" in result.stdout


def test_a_cluster_url_against_a_single_server_is_one_usage_line(redis_url: str) -> None:
    env = cli_environment(REDIS_CONNECTION_STRING=f"{redis_url}?cluster=true")
    result = run_cli("client.py", "-m", "hi", env=env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: Redis at {redis_url}?cluster=true (REDIS_CONNECTION_STRING) is not a cluster: "
        "remove ?cluster=true from REDIS_CONNECTION_STRING (and unset REDIS_CLUSTER)"
    ]
