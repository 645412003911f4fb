"""Which resources the API server serves, from its discovery documents.

The namespace controller deletes "everything in the namespace" and the garbage collector
follows ownerReferences of any kind; both learn the resources (and which are namespaced,
which verbs they allow, which kind each one stores) from `/api/v1` and `/apis/<group>/<v>`,
exactly as kube's controllers use the discovery client, rather than from a list compiled in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator.apiclient import ApiClient, ApiError, GroupVersionResource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiResource:
    gvr: GroupVersionResource
    kind: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.gvr.group}/{self.gvr.version}" if self.gvr.group else self.gvr.version

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps` (schema.GroupResource.String())."""
        return f"{self.gvr.resource}.{self.gvr.group}" if self.gvr.group else self.gvr.resource


async def discover(client: ApiClient) -> list[ApiResource]:
    """Every top-level resource of the preferred version of each group (subresources left out)."""
    versions: list[tuple[str, str]] = []
    core = await client.get("/api")
    for v in core.get("versions") or ["v1"]:
        versions.append(("", str(v)))
        break  # the core group has one served version
    groups = await client.get("/apis")
    for group in groups.get("groups") or ():
        preferred = (group.get("preferredVersion") or {}).get("version")
        if not preferred and group.get("versions"):
            preferred = group["versions"][0].get("version")
        if preferred:
            versions.append((str(group.get("name", "")), str(preferred)))
    out: list[ApiResource] = []
    for group, version in versions:
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            doc = await client.get(path)
        except ApiError as exc:
            log.info("discovery of %s failed: %s", path, exc)
            continue
        for res in doc.get("resources") or ():
            name = str(res.get("name", ""))
            if not name or "/" in name:
                continue
            out.append(
                ApiResource(
                    GroupVersionResource(group, version, name),
                    str(res.get("kind", "")),
                    bool(res.get("namespaced")),
                    frozenset(res.get("verbs") or ()),
                )
            )
    return out
