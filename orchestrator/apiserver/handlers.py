"""The REST verbs over the registry: get, list, create, update, patch, delete, deletecollection,
and the subresources status, scale, binding and namespaces/finalize.

Every write goes the same way kube-apiserver's generic registry goes: decode, check fields
(fieldValidation), admission (namespace exists and is not terminating, service allocations),
server-owned metadata (strategy), defaults, validation, then one compare-and-swap in the store;
an update-like request (PUT, PATCH, a subresource write) is a function from the current object
to the new one, retried on a conflict it did not ask for. Deletion honours finalizers, grace
periods (pods wait for their node agent) and propagationPolicy (recorded as the `orphan` /
`foregroundDeletion` finalizers the garbage collector acts on).
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from orchestrator import openapi, selectors, validation
from orchestrator import patch as patching
from orchestrator.defaults import apply_defaults
from orchestrator.resources import DEFAULT_REGISTRY, Registry, Resource
from orchestrator.tables import INCLUDE_OBJECT_CHOICES, to_table

from . import codec, errors, strategy
from .allocators import AllocationError, ServiceAllocator, allocation_error
from .codec import Accept
from .config import ServerConfig
from .events import EventAggregator
from .namespaces import NamespaceLifecycle
from .routing import RequestInfo, is_true
from .storage import Storage, decode_value, resource_version
from .typecheck import is_clean, type_error
from .watchcache import WatchCaches

_MAX_RETRIES = 8
_FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
_PROPAGATION = ("Orphan", "Background", "Foreground")
ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"


# --- request options ---------------------------------------------------------------------------


@dataclass(slots=True)
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"
    warnings: list[str] = field(default_factory=list)


def write_options(query: Any, verb: str, user_agent: str = "") -> WriteOptions:
    dry = query.getall("dryRun", [])
    for value in dry:
        if value != "All":
            raise errors.bad_request(
                f'unsupported dry run option "{value}"; the only supported option is "All"'
            )
    manager = query.get("fieldManager", "")
    if len(manager) > 128:
        raise errors.bad_request("fieldManager: Too long: must have at most 128 bytes")
    if manager and not manager.isprintable():
        raise errors.bad_request("fieldManager: Invalid value: must only contain printable characters")
    if not manager:
        # kube names the manager after the client's user agent (its program name).
        manager = (user_agent.split("/", 1)[0] or "unknown")[:128]
    fv = query.get("fieldValidation", "") or "Warn"
    if fv not in _FIELD_VALIDATION:
        raise errors.bad_request(
            f"fieldValidation: Invalid value: {fv!r}: must be one of Ignore, Warn, Strict"
        )
    return WriteOptions(bool(dry), manager, fv)


def _int_param(query: Any, name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.bad_request(f'{name}: Invalid value: "{raw}": must be an integer') from None


@dataclass(slots=True)
class DeleteOptions:
    grace_period: int | None = None
    propagation: str | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


def delete_options(query: Any, body: bytes, content_type: str | None) -> DeleteOptions:
    opts = DeleteOptions()
    doc: dict[str, Any] = {}
    if body.strip():
        decoded = codec.decode_body(body, content_type)
        if decoded is not None and not isinstance(decoded, dict):
            raise errors.bad_request("the DeleteOptions body must be a JSON object")
        doc = decoded or {}
    grace = doc.get("gracePeriodSeconds")
    if grace is not None and not isinstance(grace, int):
        raise errors.bad_request("gracePeriodSeconds must be an integer")
    q_grace = _int_param(query, "gracePeriodSeconds")
    opts.grace_period = q_grace if q_grace is not None else grace
    if opts.grace_period is not None and opts.grace_period < 0:
        opts.grace_period = max(opts.grace_period, 0)
    policy = query.get("propagationPolicy") or doc.get("propagationPolicy")
    orphan = query.get("orphanDependents")
    orphan_flag = doc.get("orphanDependents") if orphan is None else is_true(orphan)
    if policy is not None:
        if policy not in _PROPAGATION:
            raise errors.bad_request(
                f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                '"Foreground", "Background", "Orphan"'
            )
        if orphan_flag is not None:
            raise errors.bad_request(
                "propagationPolicy: Invalid value: cannot set both OrphanDependents and PropagationPolicy"
            )
        opts.propagation = policy
    elif orphan_flag is not None:
        opts.propagation = "Orphan" if orphan_flag else "Background"
    pre = doc.get("preconditions") or {}
    if isinstance(pre, dict):
        opts.precondition_uid = pre.get("uid")
        opts.precondition_rv = pre.get("resourceVersion")
    dry = query.getall("dryRun", []) or doc.get("dryRun") or []
    for value in dry:
        if value != "All":
            raise errors.bad_request(
                f'unsupported dry run option "{value}"; the only supported option is "All"'
            )
    opts.dry_run = bool(dry)
    return opts


# --- helpers -----------------------------------------------------------------------------------


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(obj))


def _name_of(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


def invalid_error(res: Resource, name: str, causes: list[Any]) -> errors.ApiError:
    body = validation.invalid_status(res.kind, name, causes)
    return errors.ApiError(422, "Invalid", body["message"], body["details"])


def _status_success(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    details: dict[str, Any] = {"name": meta.get("name", "")}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.resource
    details["uid"] = meta.get("uid", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def check_type(res: Resource, obj: dict[str, Any], expect_kind: str | None = None) -> None:
    """apiVersion/kind of a body must be the resource's (filled in when absent)."""
    kind = expect_kind or res.kind
    api_version = res.group_version if expect_kind is None else obj.get("apiVersion") or res.group_version
    body_kind = obj.get("kind")
    body_version = obj.get("apiVersion")
    if body_kind in (None, ""):
        obj["kind"] = kind
    elif body_kind != kind:
        raise errors.bad_request(
            f"the kind of the object in the body ({body_kind}) does not match the kind of the resource "
            f"at this URL ({kind}, {res.resource})"
        )
    if body_version in (None, ""):
        obj["apiVersion"] = api_version
    elif expect_kind is None and body_version != api_version:
        raise errors.bad_request(
            f"the API version in the data ({body_version}) does not match the expected API version ({api_version})"
        )
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = {}
    elif not isinstance(meta, dict):
        raise errors.bad_request(
            f'{kind} in version "{res.version}" cannot be handled as a {kind}: metadata must be an object'
        )


def _decode_error(res: Resource, detail: str) -> errors.ApiError:
    return errors.bad_request(
        f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {detail}'
    )


def _prune(obj: Any, path: str) -> None:
    """Remove the field at a dotted path such as `.spec.containers[0].foo` (unknown-field pruning)."""
    tokens: list[str | int] = []
    for part in path.lstrip(".").split("."):
        while "[" in part and part.endswith("]"):
            head, _, idx = part.partition("[")
            if head:
                tokens.append(head)
            rest = "[" + idx
            for chunk in rest.strip("[]").split("]["):
                tokens.append(int(chunk))
            part = ""
        if part:
            tokens.append(part)
    cur = obj
    for tok in tokens[:-1]:
        try:
            cur = cur[tok]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(cur, dict) and isinstance(tokens[-1], str):
        cur.pop(tokens[-1], None)


# --- the API ---------------------------------------------------------------------------------


class Api:
    """The resource handlers of one API server."""

    def __init__(self, storage: Storage, config: ServerConfig, registry: Registry = DEFAULT_REGISTRY) -> None:
        self.storage = storage
        self.config = config
        self.registry = registry
        from .allocators import NodePortRange, ServiceIPRange

        self.services = ServiceAllocator(
            ServiceIPRange(storage, config.service_cluster_ip_range),
            NodePortRange(storage, config.service_node_port_range),
        )
        self.namespaces = NamespaceLifecycle(storage, registry.get("", "v1", "namespaces"))  # type: ignore[arg-type]
        self.events = EventAggregator(storage)
        self.caches: WatchCaches | None = None  # set by the server: the watch caches reads may use

    # --- field validation -----------------------------------------------------------------

    def check_body_fields(
        self, res: Resource, raw: bytes, content_type: str | None, obj: dict[str, Any], opts: WriteOptions
    ) -> None:
        """fieldValidation for a create/update body: Strict -> 400, Warn -> warnings, Ignore -> nothing.
        Unknown fields are dropped in every mode but Strict (which refuses them). Wrongly typed
        fields are refused in every mode, as kube-apiserver's decoder refuses them."""
        if is_clean(res, obj) and not codec.may_have_duplicates(raw, content_type, obj):
            return  # the usual body: nothing to refuse, warn about or drop
        wrong = type_error(res, obj)
        if wrong:
            raise _decode_error(res, wrong)
        if opts.field_validation == "Ignore" or codec.media_type(content_type) == codec.PROTOBUF:
            # (a protobuf body has no unknown or duplicate fields: its schema is the server's)
            for path in openapi.unknown_fields(res, obj):
                _prune(obj, path)
            return
        try:
            found = openapi.check_fields(res, raw, content_type, self.registry)
        except openapi.BodyDecodeError as exc:
            raise _decode_error(res, str(exc)) from None
        if opts.field_validation == "Strict" and found.errors:
            raise _decode_error(res, found.strict_error() or "")
        opts.warnings.extend(found.warnings)
        for path in openapi.unknown_fields(res, obj):
            _prune(obj, path)

    def check_result_fields(self, res: Resource, obj: dict[str, Any], opts: WriteOptions) -> None:
        """fieldValidation (and type checks) for the result of a patch."""
        if is_clean(res, obj):
            return
        wrong = type_error(res, obj)
        if wrong:
            raise _decode_error(res, wrong)
        unknown = openapi.unknown_fields(res, obj)
        if not unknown:
            return
        if opts.field_validation == "Strict":
            raise errors.bad_request(
                "strict decoding error: " + ", ".join(f'unknown field "{p.lstrip(".")}"' for p in unknown)
            )
        if opts.field_validation == "Warn":
            opts.warnings.extend(f'unknown field "{p.lstrip(".")}"' for p in unknown)
        for path in unknown:
            _prune(obj, path)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, info: RequestInfo) -> dict[str, Any]:
        return await self.storage.get(info.res, info.namespace, info.name)  # type: ignore[arg-type]

    async def list(
        self, info: RequestInfo, query: Any
    ) -> tuple[list[dict[str, Any]], str, str | None, int | None]:
        """(items, resourceVersion, continue token, remainingItemCount) of a list request."""
        res = info.res
        match = selection(res, query)
        limit = _int_param(query, "limit") or 0
        limit = max(limit, 0)
        token = query.get("continue") or ""
        start_key = ""
        list_rv: int | None = None
        if token:
            list_rv, start_key = decode_continue(token)
        items, rv = await self.storage.list(res, info.namespace)
        if list_rv is None:
            list_rv = rv
        if start_key:
            items = [o for o in items if _sort_key(o) > start_key]
        if match is not None:
            items = [o for o in items if match(o)]
        next_token = None
        remaining = None
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            next_token = encode_continue(list_rv, _sort_key(items[-1]))
        return items, str(list_rv), next_token, remaining

    # --- create ---------------------------------------------------------------------------

    async def create(
        self, res: Resource, namespace: str | None, obj: dict[str, Any], opts: WriteOptions
    ) -> dict[str, Any]:
        check_type(res, obj)
        meta = obj["metadata"]
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        generated = False
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = strategy.generate_name(str(meta["generateName"]))
            generated = True
        name = _name_of(obj)
        if res.namespaced:
            await self.namespaces.admit_create(namespace or "", res, name)
        strategy.prepare_create(res, obj)
        obj = apply_defaults(res.kind, obj)
        meta = obj["metadata"]
        causes = validation.validate(res.kind, obj)
        if causes:
            raise invalid_error(res, name, causes)
        if res.resource == "events":
            merged = await self.events.aggregate(res, obj, self.config.event_ttl, dry_run=opts.dry_run)
            if merged is not None:
                return merged
        if opts.field_manager:
            record_create(obj, opts.field_manager, strategy.now_rfc3339())
        alloc = None
        if res.resource == "services":
            try:
                alloc = await self.services.on_create(obj)
            except AllocationError as exc:
                raise allocation_error(res, name, exc) from None
        if opts.dry_run:
            if alloc is not None:
                await self.services.rollback(obj, alloc)
            return obj
        ttl = self.config.event_ttl if strategy.strategy_for(res).ttl else None
        try:
            for attempt in range(3):
                try:
                    created = await self.storage.create(res, obj, ttl=ttl)
                    break
                except errors.ApiError as exc:
                    if exc.reason != "AlreadyExists" or not generated or attempt == 2:
                        if exc.reason == "AlreadyExists" and generated:
                            exc.message += (
                                ", the server was not able to generate a unique name for the object"
                            )
                        raise
                    meta["name"] = strategy.generate_name(str(meta["generateName"]))
        except BaseException:
            if alloc is not None:
                await self.services.rollback(obj, alloc)
            raise
        if self.caches is not None:
            self.caches.written(res, created)
        if res.resource == "events":
            self.events.remember(created)
        elif res.resource == "namespaces":
            self.namespaces.observe(created)
        return created

    # --- update-like writes ----------------------------------------------------------------

    async def guaranteed_update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]],
        opts: WriteOptions,
        *,
        subresource: str | None = None,
        retry: Callable[[], bool] = lambda: True,
        on_missing: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        cached: bool = True,
        pure: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Read, transform, check and compare-and-swap until it sticks; (object, created).

        A `pure` transform (the binding's) builds its result without changing the object it is
        given, sharing what it leaves alone, so that object is not copied, and not even decoded
        when a recent watch event holds it decoded already; the steps after it must then not change
        the result in place either, which holds for the subresources that skip preparation and
        defaults. The stored result and the object it replaced are handed to the watch cache, which
        then need not decode them for its watchers.

        With `cached` (the default), the first attempt starts from the watch cache's copy of
        the object instead of a store read, as kube-apiserver does: the compare-and-swap fails
        if that copy was stale, and a transform that refuses it, or finds nothing to change, is
        asked again with what the store holds, so the cache only ever saves a read. (A
        transform may thus run once more than the store's conflicts alone would make it.)"""
        strat = strategy.strategy_for(res)
        # (A dry run answers with what the store holds; allocations are not worth a second try.)
        cached = cached and not opts.dry_run and res.resource != "services"
        for attempt in range(_MAX_RETRIES):
            current = None
            hinted = None
            if cached and attempt == 0 and self.caches is not None:
                hinted = self.caches.latest(res, namespace, name)
                if hinted is not None:
                    # (a pure transform can start from the object the cache holds, unchanged)
                    shared = self.caches.decoded(res, namespace, name, hinted[0]) if pure else None
                    current = shared if shared is not None else decode_value(hinted[1], hinted[0])
            if current is None:
                hinted = None
                current = await self.storage.try_get(res, namespace, name)
            if current is None:
                if on_missing is not None:
                    return await on_missing(), True
                raise errors.not_found(res, name)
            if hinted is not None:
                try:
                    new = transform(current if pure else decode_value(hinted[1], hinted[0]))  # type: ignore[arg-type]
                except errors.ApiError:
                    continue  # maybe only the cached copy is refused: ask the store
            else:
                new = transform(current if pure else _copy(current))
            if subresource is None:
                strategy.prepare_update(res, new, current)
            elif subresource == "status":
                new = strategy.prepare_status_update(res, new, current)
            elif subresource == "finalize":
                new = strategy.prepare_finalize(new, current)
            # other subresources (scale, binding) build the whole new object themselves
            # A binding or a finalize only sets fields of an already defaulted object (and
            # defaulting a namespace would put back the `kubernetes` finalizer just removed).
            if subresource not in ("binding", "finalize"):
                new = apply_defaults(res.kind, new, current)
            if opts.field_manager:
                # managedFields are the server's: a client may only reset them (send []).
                old_fields = current["metadata"].get("managedFields")
                if new["metadata"].get("managedFields") != [] and old_fields is not None:
                    new["metadata"]["managedFields"] = old_fields
                elif new["metadata"].get("managedFields") != []:
                    new["metadata"].pop("managedFields", None)
            if subresource in (None, "scale"):
                causes = validation.validate_update(res.kind, new, current)
            else:
                # status, binding and finalize write fields the main resource may not change.
                causes = validation.validate_object_meta_update(new.get("metadata"), current.get("metadata"))
            if causes:
                raise invalid_error(res, name, causes)
            alloc = None
            if res.resource == "services" and subresource is None:
                try:
                    alloc = await self.services.on_update(new, current)
                except AllocationError as exc:
                    raise allocation_error(res, name, exc) from None
            if strategy.same_object(new, current):
                if alloc is not None:
                    await self.services.rollback(new, alloc)
                if hinted is not None:
                    continue  # nothing to write, says the cache: make sure of it
                return current, False
            if opts.field_manager:
                record_update(current, new, opts.field_manager, strategy.now_rfc3339(), subresource or "")
            if opts.dry_run:
                if alloc is not None:
                    await self.services.rollback(new, alloc)
                return new, False
            meta = new["metadata"]
            try:
                if (
                    meta.get("deletionTimestamp")
                    and not meta.get("finalizers")
                    and not self._still_graceful(res, new)
                ):
                    new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    result = await self.storage.delete(res, new)
                    await self._after_delete(res, result)
                    return result, False
                ttl = self.config.event_ttl if strat.ttl else None
                result = await self.storage.update(res, new, resource_version(current), ttl=ttl)
            except errors.ApiError as exc:
                if alloc is not None:
                    await self.services.rollback(new, alloc)
                if (
                    exc.reason == "Conflict"
                    and attempt < _MAX_RETRIES - 1
                    and (hinted is not None or retry())
                ):
                    continue
                if exc.reason == "NotFound" and attempt < _MAX_RETRIES - 1:
                    continue  # deleted meanwhile: the next read decides
                raise
            if alloc is not None:
                await self.services.commit(result, alloc)
            if pure and self.caches is not None:
                self.caches.written(res, result, current)
            if res.resource == "namespaces":
                self.namespaces.observe(result)
            return result, False
        raise errors.conflict(res, name, "too many concurrent writes; try again")  # pragma: no cover

    def _still_graceful(self, res: Resource, obj: dict[str, Any]) -> bool:
        """A pod whose grace period has not been confirmed (set to 0) by its node stays."""
        if res.resource == "namespaces":
            return bool((obj.get("spec") or {}).get("finalizers"))
        grace = obj["metadata"].get("deletionGracePeriodSeconds")
        return bool(grace) and strategy.strategy_for(res).graceful_delete

    async def update(
        self, res: Resource, namespace: str | None, name: str, body: dict[str, Any], opts: WriteOptions
    ) -> tuple[dict[str, Any], bool]:
        check_type(res, body)
        meta = body["metadata"]
        body_name = meta.get("name")
        if body_name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        precondition = meta.get("resourceVersion") or ""

        def transform(current: dict[str, Any]) -> dict[str, Any]:
            if precondition and precondition != current["metadata"].get("resourceVersion"):
                raise errors.stale_conflict(res, name)
            return _copy(body)

        on_missing = None
        if strategy.strategy_for(res).allow_create_on_update:

            async def on_missing() -> dict[str, Any]:
                if precondition:
                    raise errors.not_found(res, name)
                return await self.create(res, namespace, _copy(body), opts)

        return await self.guaranteed_update(
            res, namespace, name, transform, opts, retry=lambda: not precondition, on_missing=on_missing
        )

    def _apply_patch(
        self,
        res: Resource,
        current: dict[str, Any],
        patch_type: str,
        patch_body: Any,
        kind: str | None = None,
    ) -> dict[str, Any]:
        kind = kind or res.kind
        try:
            if patch_type == codec.MERGE_PATCH:
                if not isinstance(patch_body, dict):
                    return patching.json_merge_patch(current, patch_body)  # (its error)
                return merge_patch_into(current, patch_body)
            if patch_type == codec.JSON_PATCH:
                return patching.json_patch(current, patch_body)
            return patching.strategic_merge_patch(current, patch_body, kind)
        except patching.PatchError as exc:
            raise _patch_error(exc) from None

    async def patch(
        self,
        info: RequestInfo,
        patch_type: str,
        patch_body: Any,
        opts: WriteOptions,
        force: bool,
    ) -> tuple[dict[str, Any], bool]:
        res, namespace, name = info.res, info.namespace, info.name
        assert name is not None
        if patch_type == codec.APPLY_PATCH:
            return await self._apply(info, patch_body, opts, force)
        if force:
            raise errors.bad_request("force: Forbidden: may not be specified for non-apply patch")
        precondition: list[str] = []

        def transform(current: dict[str, Any]) -> dict[str, Any]:
            rv = current["metadata"].get("resourceVersion")
            patched = self._apply_patch(res, current, patch_type, patch_body)
            if not isinstance(patched, dict):
                raise errors.bad_request("the patch turns the object into something that is not an object")
            check_type(res, patched)
            meta = patched["metadata"]
            if meta.get("name") != name:
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            new_rv = meta.get("resourceVersion")
            if new_rv and new_rv != rv:
                precondition.append(new_rv)
                raise errors.stale_conflict(res, name)
            if new_rv and _patch_sets_rv(patch_body):
                precondition.append(new_rv)
            self.check_result_fields(res, patched, opts)
            return patched

        return await self.guaranteed_update(
            res,
            namespace,
            name,
            transform,
            opts,
            subresource=info.subresource,
            retry=lambda: not precondition,
        )

    async def _apply(
        self, info: RequestInfo, applied: Any, opts: WriteOptions, force: bool
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply: merge the applied configuration, tracking field ownership."""
        res, namespace, name = info.res, info.namespace, info.name
        assert name is not None
        if not isinstance(applied, dict):
            raise errors.bad_request("the applied configuration must be an object")
        check_type(res, applied)
        meta = applied["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        self.check_result_fields(res, applied, opts)
        precondition = bool(meta.get("resourceVersion"))

        def transform(current: dict[str, Any]) -> dict[str, Any]:
            if precondition and meta["resourceVersion"] != current["metadata"].get("resourceVersion"):
                raise errors.stale_conflict(res, name)
            try:
                merged, _entry = patching.server_side_apply(
                    current,
                    _copy(applied),
                    opts.field_manager,
                    force,
                    strategy.now_rfc3339(),
                    info.subresource or "",
                )
            except patching.ApplyConflict as exc:
                raise _apply_conflict(exc) from None
            except patching.PatchError as exc:
                raise _patch_error(exc) from None
            return merged

        async def on_missing() -> dict[str, Any]:
            if info.subresource is not None:
                raise errors.not_found(res, name)
            try:
                merged, _entry = patching.server_side_apply(
                    None, _copy(applied), opts.field_manager, force, strategy.now_rfc3339(), ""
                )
            except patching.ApplyConflict as exc:
                raise _apply_conflict(exc) from None
            except patching.PatchError as exc:
                raise _patch_error(exc) from None
            return await self.create(res, namespace, merged, _without_manager_record(opts))

        return await self.guaranteed_update(
            res,
            namespace,
            name,
            transform,
            _without_manager_record(opts),
            subresource=info.subresource,
            retry=lambda: not precondition,
            on_missing=on_missing,
        )

    # --- delete ---------------------------------------------------------------------------

    async def delete(
        self, res: Resource, namespace: str | None, name: str, opts: DeleteOptions
    ) -> tuple[dict[str, Any], int]:
        """Delete (or start deleting) an object: (response body, HTTP status)."""
        strat = strategy.strategy_for(res)
        if res.resource == "namespaces" and name in NamespaceLifecycle.IMMORTAL:
            raise errors.forbidden(
                res, name, f'namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        for attempt in range(_MAX_RETRIES):
            current = await self.storage.get(res, namespace, name)
            meta = current["metadata"]
            if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                    f"UID in object meta: {meta.get('uid')}",
                )
            if opts.precondition_rv and opts.precondition_rv != meta.get("resourceVersion"):
                raise errors.conflict(
                    res,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {opts.precondition_rv}, "
                    f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            grace = 0
            if strat.graceful_delete:
                grace = self._grace_period(current, opts.grace_period)
            new = _copy(current)
            new_meta = new["metadata"]
            finalizers = list(new_meta.get("finalizers") or [])
            if opts.propagation == "Orphan":
                finalizers = [f for f in finalizers if f != FOREGROUND_FINALIZER]
                if ORPHAN_FINALIZER not in finalizers:
                    finalizers.append(ORPHAN_FINALIZER)
            elif opts.propagation == "Foreground":
                finalizers = [f for f in finalizers if f != ORPHAN_FINALIZER]
                if FOREGROUND_FINALIZER not in finalizers:
                    finalizers.append(FOREGROUND_FINALIZER)
            elif opts.propagation == "Background" and meta.get("deletionTimestamp"):
                finalizers = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
            ns_pending = res.resource == "namespaces" and bool((current.get("spec") or {}).get("finalizers"))
            if not finalizers and grace == 0 and not ns_pending:
                if opts.dry_run:
                    return (current if strat.return_deleted_object else _status_success(res, current)), 200
                try:
                    deleted = await self.storage.delete(res, current)
                except errors.ApiError as exc:
                    if exc.reason == "Conflict" and not opts.precondition_rv and attempt < _MAX_RETRIES - 1:
                        continue
                    raise
                await self._after_delete(res, deleted)
                return (deleted if strat.return_deleted_object else _status_success(res, deleted)), 200
            # Graceful or held by finalizers: mark it, someone else finishes the deletion.
            now = time.time()
            if (
                not meta.get("deletionTimestamp")
                or strat.graceful_delete
                and grace < int(meta.get("deletionGracePeriodSeconds") or 0)
            ):
                new_meta["deletionTimestamp"] = strategy.now_rfc3339(now + grace)
                new_meta["deletionGracePeriodSeconds"] = grace
            if finalizers:
                new_meta["finalizers"] = finalizers
            else:
                new_meta.pop("finalizers", None)
            if res.resource == "namespaces":
                new.setdefault("status", {})["phase"] = "Terminating"
            if strategy.same_object(new, current):
                return current, 202
            if opts.dry_run:
                return new, 200
            if not finalizers and grace == 0 and not ns_pending:
                continue  # pragma: no cover - handled above
            try:
                if not finalizers and not self._still_graceful(res, new) and not ns_pending:
                    deleted = await self.storage.delete(res, current)
                    await self._after_delete(res, deleted)
                    return (deleted if strat.return_deleted_object else _status_success(res, deleted)), 200
                updated = await self.storage.update(res, new, resource_version(current))
            except errors.ApiError as exc:
                if exc.reason == "Conflict" and not opts.precondition_rv and attempt < _MAX_RETRIES - 1:
                    continue
                raise
            if res.resource == "namespaces":
                self.namespaces.observe(updated)
            return updated, 200
        raise errors.conflict(res, name, "too many concurrent writes; try again")  # pragma: no cover

    def _grace_period(self, pod: dict[str, Any], requested: int | None) -> int:
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0  # never started on a node (or already finished): nothing to wait for
        if requested is not None:
            return max(requested, 0)
        value = spec.get("terminationGracePeriodSeconds")
        return int(value) if isinstance(value, int) and value >= 0 else 30

    async def _after_delete(self, res: Resource, deleted: dict[str, Any]) -> None:
        if res.resource == "services":
            await self.services.on_delete(deleted)
        elif res.resource == "namespaces":
            self.namespaces.forget(_name_of(deleted))
        elif res.resource == "events":
            self.events.forget(deleted)

    async def delete_collection(
        self, info: RequestInfo, query: Any, opts: DeleteOptions
    ) -> list[dict[str, Any]]:
        items, _rv, _token, _remaining = await self.list(info, query)
        out = []
        for obj in items:
            meta = obj["metadata"]
            try:
                body, _status = await self.delete(info.res, meta.get("namespace"), meta["name"], opts)
            except errors.ApiError as exc:
                if exc.code == 404:
                    continue
                raise
            out.append(obj if body.get("kind") == "Status" else body)
        return out

    # --- subresources ---------------------------------------------------------------------

    async def get_scale(self, info: RequestInfo) -> dict[str, Any]:
        obj = await self.get(info)
        return to_scale(obj)

    async def update_scale(
        self, info: RequestInfo, new_scale: Callable[[dict[str, Any]], dict[str, Any]], opts: WriteOptions
    ) -> dict[str, Any]:
        res, name = info.res, info.name
        assert name is not None

        precondition: list[str] = []

        def transform(current: dict[str, Any]) -> dict[str, Any]:
            scale = new_scale(to_scale(current))
            if not isinstance(scale, dict):
                raise errors.bad_request("the Scale body must be an object")
            rv = (scale.get("metadata") or {}).get("resourceVersion")
            if rv and rv != current["metadata"].get("resourceVersion"):
                precondition.append(rv)
                raise errors.stale_conflict(res, name)
            replicas = (scale.get("spec") or {}).get("replicas", 0)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas}: '
                    "must be greater than or equal to 0",
                    {
                        "name": name,
                        "group": "autoscaling",
                        "kind": "Scale",
                        "causes": [
                            {
                                "reason": "FieldValueInvalid",
                                "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                                "field": "spec.replicas",
                            }
                        ],
                    },
                )
            spec = current.setdefault("spec", {})
            if spec.get("replicas") != replicas:
                spec["replicas"] = replicas
                meta = current["metadata"]
                meta["generation"] = int(meta.get("generation") or 1) + 1
            return current

        obj, _created = await self.guaranteed_update(
            res, info.namespace, name, transform, opts, subresource="scale", retry=lambda: not precondition
        )
        return to_scale(obj)

    async def bind(self, info: RequestInfo, binding: dict[str, Any], opts: WriteOptions) -> dict[str, Any]:
        res, name = info.res, info.name
        assert name is not None
        meta = binding.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        target = binding.get("target") if isinstance(binding.get("target"), dict) else {}
        node = target.get("name") or ""
        if not node:
            raise errors.ApiError(
                422,
                "Invalid",
                f'Binding "{name}" is invalid: target.name: Required value',
                {
                    "name": name,
                    "kind": "Binding",
                    "causes": [
                        {"reason": "FieldValueRequired", "message": "Required value", "field": "target.name"}
                    ],
                },
            )
        if target.get("kind") not in (None, "", "Node"):
            raise errors.ApiError(
                422,
                "Invalid",
                f'Binding "{name}" is invalid: target.kind: Invalid value: "{target.get("kind")}": must be empty or \'Node\'',
                {"name": name, "kind": "Binding"},
            )
        uid = meta.get("uid")

        def transform(pod: dict[str, Any]) -> dict[str, Any]:
            return bind_pod(res, pod, name, node, uid, meta.get("annotations"))

        await self.guaranteed_update(
            res,
            info.namespace,
            name,
            transform,
            _without_manager_record(opts),
            subresource="binding",
            pure=True,
        )
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def bind_pod(
    res: Resource,
    pod: dict[str, Any],
    name: str,
    node: str,
    uid: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The pod after a Binding to `node` (409 Conflict when it cannot be bound), built without
    changing `pod`: the result shares every part the binding leaves alone (the containers, most
    of the metadata), so a binding decodes the cached pod once and copies nothing else."""
    pmeta = pod["metadata"]
    if uid and pmeta.get("uid") != uid:
        raise errors.conflict(
            res,
            name,
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {pmeta.get('uid')}",
        )
    if pmeta.get("deletionTimestamp"):
        raise errors.conflict(res, name, f"pod {name} is being deleted, cannot be assigned to a host")
    spec = pod.get("spec", {})
    if spec.get("nodeName"):
        raise errors.conflict(res, name, f'pod {name} is already assigned to node "{spec["nodeName"]}"')
    bound = dict(pod)
    bound["metadata"] = new_meta = dict(pmeta)
    if annotations:
        new_meta["annotations"] = {**(pmeta.get("annotations") or {}), **annotations}
    bound["spec"] = {**spec, "nodeName": node}
    status = dict(pod.get("status", {}))
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": strategy.now_rfc3339(),
        }
    )
    status["conditions"] = conditions
    bound["status"] = status
    return bound


def record_create(obj: dict[str, Any], manager: str, now: str) -> None:
    """The managedFields of a new object: one Update entry owning every field it sets.

    What `patch.track_update(None, obj, ...)` computes (every field of a new object is changed by
    the write that creates it), without copying the object and comparing each field with nothing.
    """
    paths = patching.field_paths(obj, str(obj.get("kind") or ""))
    entry = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": str(obj.get("apiVersion") or ""),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": patching.paths_to_fields_v1(paths),
    }
    obj["metadata"]["managedFields"] = [entry] if paths else []


def merge_patch_into(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch applied to `target` in place (the caller's own copy), which is
    what `patch.json_merge_patch` returns without copying the whole object first. Values taken
    from the patch are copied: a retried write applies the same patch again."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            sub = target.get(key)
            target[key] = merge_patch_into(sub if isinstance(sub, dict) else {}, value)
        else:
            target[key] = strategy.json_copy(value) if isinstance(value, list) else value
    return target


_ABSENT = object()
_UNOWNED_META = ("managedFields", "resourceVersion")


def record_update(
    current: dict[str, Any], new: dict[str, Any], manager: str, now: str, subresource: str = ""
) -> None:
    """Record an update by `manager` in `new`'s managedFields, as `patch.track_update` does.

    Only the top-level fields the write changed are handed to track_update: a field path lies
    under one top-level field, and where that field is equal before and after, no path is changed
    or removed, so no owner is gained or lost there. A status update of a pod compares its
    status instead of the whole pod, several times faster, with the same result.
    """
    changed = {
        key: None
        for key in (*current, *new)
        if key not in ("apiVersion", "kind", "metadata")
        and current.get(key, _ABSENT) != new.get(key, _ABSENT)
    }
    old_meta = current.get("metadata") if isinstance(current.get("metadata"), dict) else {}
    new_meta = new["metadata"]
    meta_changed = {k: v for k, v in old_meta.items() if k not in _UNOWNED_META} != {
        k: v for k, v in new_meta.items() if k not in _UNOWNED_META
    }

    def part(obj: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        out = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
        out["metadata"] = meta
        out.update((k, obj[k]) for k in changed if k in obj)
        return out

    # (track_update reads the owners from the old object's metadata only.)
    old_part = part(current, old_meta if meta_changed else {"managedFields": old_meta.get("managedFields")})
    new_part = part(new, {k: v for k, v in new_meta.items() if k != "managedFields"} if meta_changed else {})
    result = patching.track_update(old_part, new_part, manager, now, subresource)
    new_meta["managedFields"] = result["metadata"]["managedFields"]


def _without_manager_record(opts: WriteOptions) -> WriteOptions:
    """SSA writes its own managedFields entry; the generic Update record must not run on top."""
    return WriteOptions(opts.dry_run, "", opts.field_validation, opts.warnings)


def _patch_sets_rv(patch_body: Any) -> bool:
    if isinstance(patch_body, dict):
        meta = patch_body.get("metadata")
        return isinstance(meta, dict) and bool(meta.get("resourceVersion"))
    if isinstance(patch_body, list):
        return any(
            isinstance(op, dict)
            and str(op.get("path", "")).startswith("/metadata/resourceVersion")
            and op.get("op") in ("replace", "add", "test")
            for op in patch_body
        )
    return False


def _patch_error(exc: Exception) -> errors.ApiError:
    code = getattr(exc, "code", None) or 422
    if code == 400:
        return errors.bad_request(str(exc))
    return errors.ApiError(
        422, "Invalid", str(exc), {"causes": [{"reason": "FieldValueInvalid", "message": str(exc)}]}
    )


def _apply_conflict(exc: patching.ApplyConflict) -> errors.ApiError:
    body = exc.status()
    return errors.ApiError(409, "Conflict", body["message"], body["details"])


def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": selectors.selector_to_string(spec.get("selector")),
        },
    }


# --- selection and paging ------------------------------------------------------------------


def selection(res: Resource, query: Any) -> Callable[[dict[str, Any]], bool] | None:
    """The label/field selector filter of a list or watch request (None: everything)."""
    try:
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(query.get("fieldSelector"))
        selectors.check_field_selector(res.kind, fields)
    except selectors.SelectorError as exc:
        raise errors.bad_request(str(exc)) from None
    if labels.empty and fields.empty:
        return None
    kind = res.kind

    def match(obj: dict[str, Any]) -> bool:
        if not labels.empty and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        return fields.empty or selectors.matches_fields(kind, fields, obj)

    return match


def field_selector_name(query: Any) -> str | None:
    """The one object a `metadata.name=x` field selector names (lets a watch narrow its key)."""
    return field_selector_value(query, "metadata.name")


def field_selector_value(query: Any, field_name: str) -> str | None:
    """The value a field selector requires a field to equal (`spec.nodeName=x`), or None."""
    try:
        fields = selectors.parse_field_selector(query.get("fieldSelector"))
    except selectors.SelectorError:
        return None
    return fields.value_for(field_name)


def _sort_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def encode_continue(rv: int, key: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"v": "grove/v1", "rv": rv, "start": key})).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        return int(doc["rv"]), str(doc["start"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise errors.bad_request(
            "continue key is not valid: the token was not issued by this server"
        ) from None


# --- response shaping ------------------------------------------------------------------------


def list_object(
    res: Resource, items: list[dict[str, Any]], rv: str, token: str | None, remaining: int | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {"kind": res.list_kind, "apiVersion": res.group_version, "metadata": meta, "items": items}


def partial(obj: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj.get("metadata") or {},
    }


def include_object(query: Any) -> str:
    value = query.get("includeObject") or "Metadata"
    if value not in INCLUDE_OBJECT_CHOICES:
        raise errors.bad_request(
            f'includeObject: Unsupported value: "{value}": supported values: "None", "Metadata", "Object"'
        )
    return value


def shape_object(res: Resource, obj: dict[str, Any], accept: Accept, query: Any) -> dict[str, Any]:
    if accept.as_kind == "Table":
        return to_table(res, [obj], include_object=include_object(query), registry=DEFAULT_REGISTRY)
    if accept.as_kind == "PartialObjectMetadata":
        return partial(obj, accept.version)
    if accept.as_kind == "PartialObjectMetadataList":
        raise errors.not_acceptable("PartialObjectMetadataList is only served for lists")
    return obj


def shape_list(
    res: Resource,
    items: list[dict[str, Any]],
    rv: str,
    token: str | None,
    remaining: int | None,
    accept: Accept,
    query: Any,
) -> dict[str, Any]:
    if accept.as_kind == "Table":
        return to_table(
            res, items, include_object=include_object(query), resource_version=rv, continue_token=token
        )
    if accept.as_kind in ("PartialObjectMetadataList", "PartialObjectMetadata"):
        meta: dict[str, Any] = {"resourceVersion": rv}
        if token:
            meta["continue"] = token
        return {
            "kind": "PartialObjectMetadataList",
            "apiVersion": f"meta.k8s.io/{accept.version}",
            "metadata": meta,
            "items": [partial(o, accept.version) for o in items],
        }
    return list_object(res, items, rv, token, remaining)


def respond(body: Any, accept: Accept, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    resp = web.Response(body=codec.encode(body, accept), status=status, content_type=None)
    resp.headers["Content-Type"] = (
        accept.content_type
        if isinstance(body, dict)
        and body.get("kind") in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
        else (codec.YAML if accept.format == "yaml" else codec.JSON)
    )
    for w in dict.fromkeys(warnings or ()):  # (a retried write may have warned twice)
        resp.headers.add("Warning", f'299 - "{_warning_text(w)}"')
    return resp


def _warning_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


__all__ = ["Api", "DeleteOptions", "WriteOptions", "copy", "delete_options", "write_options"]
