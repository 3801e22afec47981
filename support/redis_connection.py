"""Connecting to Redis: one node, a Redis Cluster, or Azure Managed Redis with Microsoft Entra ID.

Every Redis client the sample creates comes from here, so the worker, the
readers and the start-up check all connect the same way. Two options ride in
the query of REDIS_CONNECTION_STRING (they are removed before redis-py sees
the URL), or come from their own variables, which add them for you:

    ?cluster=true    REDIS_CLUSTER=true     redis-py's `RedisCluster`: it learns which node owns which
                                            hash slot and sends each stream's commands there. For Azure
                                            Managed Redis with the OSS clustering policy, or any Redis Cluster.
    ?auth=entra-id   REDIS_AUTH=entra-id    no password: a Microsoft Entra ID token from
                                            `DefaultAzureCredential` (managed identity, workload identity,
                                            `az login`), via the `redis-entraid` credential provider, which
                                            renews it in the background before it expires. Set AZURE_CLIENT_ID
                                            to use a user-assigned managed identity.

Azure Managed Redis, OSS clustering policy, managed identity:

    REDIS_CONNECTION_STRING=rediss://my-cache.westeurope.redis.azure.net:10000?cluster=true&auth=entra-id

A token is never printed: it lives only in the credential provider and the AUTH command.

Try it (PINGs the Redis that REDIS_CONNECTION_STRING names, else localhost:6379, or the URL given as its
argument, such as "redis://localhost:7000?cluster=true", and says how it connected):

    uv run python -m support.redis_connection
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from support.errors import UsageError

# What a Redis call raises when Redis, or every node of a cluster, is unreachable or refuses:
# redis-py's RedisClusterException ("cannot be connected") is not a RedisError.
REDIS_FAILURES = (RedisError, RedisClusterException, OSError)

CLUSTER_OPTION = "cluster"
AUTH_OPTION = "auth"
ENTRA_ID = "entra-id"
# The scope Azure Managed Redis and Azure Cache for Redis accept tokens for.
REDIS_TOKEN_SCOPE = "https://redis.azure.com/.default"

AsyncRedis = aioredis.Redis | aioredis.RedisCluster
SyncRedis = redis.Redis | redis.RedisCluster


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is and how to reach it: `url` is what redis-py sees (the sample's own options removed)."""

    url: str
    cluster: bool = False
    entra_id: bool = False

    def describe(self) -> str:
        """A few words for the announce line ("Redis Cluster, Entra ID"); never a secret."""
        return ", ".join(
            word for word, on in (("Redis Cluster", self.cluster), ("Microsoft Entra ID", self.entra_id)) if on
        )


def parse_target(url: str) -> RedisTarget:
    """Split the sample's options (cluster, auth) off `url`; a bad value is a UsageError naming it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {name: value for name, value in query if name in (CLUSTER_OPTION, AUTH_OPTION)}
    rest = [(name, value) for name, value in query if name not in (CLUSTER_OPTION, AUTH_OPTION)]
    cluster = ours.get(CLUSTER_OPTION, "false").lower()
    if cluster not in ("true", "false"):
        raise UsageError(f"REDIS_CONNECTION_STRING's cluster= must be true or false (got {cluster!r})")
    auth = ours.get(AUTH_OPTION, "password").lower()
    if auth not in ("password", ENTRA_ID):
        raise UsageError(f"REDIS_CONNECTION_STRING's auth= must be password or {ENTRA_ID} (got {auth!r})")
    if auth == ENTRA_ID and parts.password:
        raise UsageError(
            "REDIS_CONNECTION_STRING has a password, and auth=entra-id (or REDIS_AUTH=entra-id) asks for a token: "
            "remove one of them"
        )
    plain = _unsplit(parts._replace(query=urlencode(rest, safe="/")))
    return RedisTarget(plain, cluster=cluster == "true", entra_id=auth == ENTRA_ID)


def with_options(url: str, *, cluster: bool, entra_id: bool) -> str:
    """`url` with the sample's options added: how REDIS_CLUSTER and REDIS_AUTH reach every client."""
    parts = urlsplit(url)
    query = [(name, value) for name, value in parse_qsl(parts.query) if name not in (CLUSTER_OPTION, AUTH_OPTION)]
    query += [(CLUSTER_OPTION, "true")] if cluster else []
    query += [(AUTH_OPTION, ENTRA_ID)] if entra_id else []
    return _unsplit(parts._replace(query=urlencode(query, safe="/")))


def _unsplit(parts: SplitResult) -> str:
    # urlunsplit drops the '//' of a URL with no host: unix:///run/redis.sock became unix:/run/redis.sock,
    # which redis-py rejects. Put it back.
    url = urlunsplit(parts)
    if parts.scheme and not parts.netloc and not url.startswith(f"{parts.scheme}://"):
        url = f"{parts.scheme}://{url.removeprefix(parts.scheme + ':')}"
    return url


def async_client(
    url: str, *, wait_for_connection: bool = False, single_connection: bool = False, **options: Any
) -> AsyncRedis:
    """A `redis.asyncio` client for `url`: `RedisCluster` or `Redis`, with an Entra ID token if asked.

    `wait_for_connection`: with `max_connections`, a command waits for a free connection (redis-py's
    BlockingConnectionPool) instead of failing with MaxConnectionsError; one node only (ignored for a
    cluster, whose client keeps a pool per node).
    `single_connection`: every command goes through ONE connection (redis-py's `single_connection_client`),
    without the pool's check-out, liveness check and check-in around each (a pipeline still takes one from
    the pool): for a client whose commands follow one another (the worker's flusher,
    reliability/flusher_thread.py); one node only, ignored for a cluster as above.
    """
    target = parse_target(url)
    if target.entra_id:
        options["credential_provider"] = entra_id_credentials()
    if target.cluster:
        return aioredis.RedisCluster.from_url(target.url, **options)
    if target.entra_id or wait_for_connection:
        return _async_client_with_pool(target.url, options, wait_for_connection, single_connection)
    return aioredis.Redis.from_url(target.url, single_connection_client=single_connection, **options)


def _async_client_with_pool(
    url: str, options: dict[str, Any], wait_for_connection: bool, single_connection: bool
) -> aioredis.Redis:
    """A client on a pool built here: a BlockingConnectionPool, or an Entra ID provider that renews its token.

    Workaround, redis-py 8.1–8.2: `Redis.from_url` keeps `credential_provider` for the pool only.
    The client it builds never sees the provider, so it does not subscribe to
    token renewals: connections are authenticated with the first token and the
    renewal task stops ("No registered callback for token renewal task").
    Passing the provider to the constructor, beside the pool, subscribes it.
    """
    pool_class = aioredis.BlockingConnectionPool if wait_for_connection else aioredis.ConnectionPool
    pool = pool_class.from_url(url, **options)
    client = aioredis.Redis(
        connection_pool=pool,
        credential_provider=options.get("credential_provider"),
        single_connection_client=single_connection,
    )
    client.auto_close_connection_pool = True  # as from_url does: closing the client closes its pool
    return client


def sync_client(url: str, **options: Any) -> SyncRedis:
    """The blocking twin of `async_client` (start-up checks, tests, benchmarks)."""
    target = parse_target(url)
    if target.entra_id:
        options["credential_provider"] = entra_id_credentials()
    if target.cluster:
        return redis.RedisCluster.from_url(target.url, **options)
    if target.entra_id:  # the same renewal workaround as the asyncio client's
        pool = redis.ConnectionPool.from_url(target.url, **options)
        client = redis.Redis(connection_pool=pool, credential_provider=options["credential_provider"])
        client.auto_close_connection_pool = True
        return client
    return redis.Redis.from_url(target.url, **options)


def entra_id_credentials() -> Any:
    """A redis-py credential provider that sends a Microsoft Entra ID token as the password.

    `DefaultAzureCredential` finds the identity (managed identity in Azure,
    `az login` on a laptop); the user name is the token's `oid` claim, the
    identity's object id, which is how Azure Managed Redis names its access
    policy assignment. The provider fetches a token on first connect and renews
    it at 70% of its lifetime, re-authenticating open connections.
    """
    from redis_entraid.cred_provider import create_from_default_azure_credential  # only Entra ID users load it

    return create_from_default_azure_credential((REDIS_TOKEN_SCOPE,))


def explain_token_failure(name: str, error: Exception) -> str:
    """One line for a Microsoft Entra ID token that could not be had (the cause names the credential tried)."""
    cause = str(error.__cause__ or error.__context__ or error).splitlines()[0]
    return (
        f"could not get a Microsoft Entra ID token for the Redis in {name}: {cause}; "
        "in Azure, give the app a managed identity (AZURE_CLIENT_ID for a user-assigned one); locally, `az login`"
    )


if __name__ == "__main__":
    # The variable as set: support/config.py (which imports this module) would also fold in REDIS_CLUSTER, REDIS_AUTH.
    configured = os.environ.get("REDIS_CONNECTION_STRING") or "redis://localhost:6379"
    demo_url = sys.argv[1] if len(sys.argv) > 1 else configured
    print(sync_client(demo_url, socket_connect_timeout=2).ping(), parse_target(demo_url).describe() or "one node")
