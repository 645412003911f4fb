"""Bootstrap through etcd's discovery protocol.

The discovery URL names a directory on any etcd-v2-compatible store (grove's own or etcd):
`<url>/_config/size` holds the expected cluster size; each member registers itself as
`<url>/<member id>` = `<name>=<peer URL>` and waits until `size` members have registered.
The first `size` registrations (by createdIndex) are the cluster; a later member is told the
cluster is full, as etcd tells it.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

log = logging.getLogger("grove.kv.discovery")


class DiscoveryError(Exception):
    pass


async def discover(url: str, member_id: str, name: str, peer_url: str, timeout: float = 300.0) -> str:
    """Register at `url` and return the `--initial-cluster` string once the cluster is complete."""
    url = url.rstrip("/")
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as http:

        async def call(method: str, target: str, **kw) -> tuple[int, dict, dict]:
            while True:
                try:
                    async with http.request(method, target, **kw) as resp:
                        body = await resp.read()
                        data = orjson.loads(body) if body.strip() else {}
                        return resp.status, data, dict(resp.headers)
                except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
                    if asyncio.get_running_loop().time() > deadline:
                        raise DiscoveryError(f"discovery: cannot reach {target}: {exc}") from exc
                    log.warning("discovery: %s unreachable (%s); retrying", target, exc)
                    await asyncio.sleep(1.0)

        status, data, _ = await call("GET", f"{url}/_config/size")
        if status != 200:
            raise DiscoveryError(f"discovery: size key not found at {url}/_config/size ({data.get('message', status)})")
        try:
            size = int(data["node"]["value"])
        except (KeyError, ValueError) as exc:
            raise DiscoveryError(f"discovery: bad size value at {url}/_config/size") from exc

        value = f"{name}={peer_url}"
        status, data, _ = await call(
            "PUT", f"{url}/{member_id}", data={"value": value, "prevExist": "false"}
        )
        if status not in (200, 201) and data.get("errorCode") != 105:
            raise DiscoveryError(f"discovery: registering failed: {data}")

        while True:
            status, data, headers = await call("GET", f"{url}?recursive=true")
            nodes = [n for n in data.get("node", {}).get("nodes", []) if not n["key"].endswith("/_config")]
            nodes.sort(key=lambda n: n["createdIndex"])
            if len(nodes) >= size:
                chosen = nodes[:size]
                if not any(n["key"].rsplit("/", 1)[-1] == member_id for n in chosen):
                    raise DiscoveryError("discovery: cluster is full")
                return ",".join(n["value"] for n in chosen)
            log.info("discovery: %d of %d members registered; waiting", len(nodes), size)
            index = int(headers.get("X-Etcd-Index", "0")) + 1
            if asyncio.get_running_loop().time() > deadline:
                raise DiscoveryError(f"discovery: only {len(nodes)} of {size} members registered in time")
            try:
                await asyncio.wait_for(
                    call("GET", f"{url}?wait=true&recursive=true&waitIndex={index}"), timeout=5.0
                )
            except TimeoutError:
                pass
