"""DaemonSet revision history as kube keeps it: one apps/v1 ControllerRevision per pod template.

A ControllerRevision named `<daemonset>-<hash>` holds, in `data`, the patch that puts its
template back — `{"spec": {"template": {..., "$patch": "replace"}}}` — and in `revision` its
place in the history. It carries the template's labels plus `controller-revision-hash=<hash>`
(so a list with the DaemonSet's selector finds it), the DaemonSet's annotations (the
change-cause `kubectl rollout history` shows) and a controller ownerReference. That is all
kubectl needs: `rollout history` lists the revisions the DaemonSet controls, `--revision=N`
applies one's data to the DaemonSet to print the template, and `rollout undo` PATCHes the
DaemonSet with one's data; the controller then finds that revision current again and moves it
to the top of the history (max + 1), as kube's constructHistory does.

Everything here is pure: `plan_history` decides which revision is current, which to create,
renumber, relabel or delete; `revisions_to_prune` applies spec.revisionHistoryLimit.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .history import compute_hash, normalize
from .util import Obj, annotations_of, int_field, labels_of, name_of, namespace_of, spec, status

REVISION_HASH_LABEL = "controller-revision-hash"
DEFAULT_REVISION_HISTORY_LIMIT = 10


def template_hash(owner: Mapping[str, Any]) -> str:
    """ComputeHash over the owner's pod template and status.collisionCount."""
    collision = status(owner).get("collisionCount")
    return compute_hash(spec(owner).get("template") or {}, collision if isinstance(collision, int) else None)


def template_patch(owner: Mapping[str, Any]) -> Obj:
    """kube's getPatch: the strategic merge patch that replaces spec.template with the owner's."""
    template = copy.deepcopy(dict(spec(owner).get("template") or {}))
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def revision_number(rev: Mapping[str, Any]) -> int:
    return int_field(rev, "revision")


def revision_hash(rev: Mapping[str, Any]) -> str:
    return labels_of(rev).get(REVISION_HASH_LABEL, "")


def matches(owner: Mapping[str, Any], rev: Mapping[str, Any]) -> bool:
    """history.Match: the revision's data is the patch the owner's template makes (compared as
    JSON with empty values dropped, so key order and `null` vs missing do not count)."""
    return normalize(rev.get("data")) == normalize(template_patch(owner))


def max_revision(revs: Iterable[Mapping[str, Any]]) -> int:
    return max((revision_number(r) for r in revs), default=0)


def new_revision(owner: Mapping[str, Any], number: int, ref: Mapping[str, Any], hash_: str) -> Obj:
    """kube's snapshot: the ControllerRevision of the owner's current template."""
    template_labels = labels_of(spec(owner).get("template") or {})
    meta: Obj = {
        "name": f"{name_of(owner)}-{hash_}",
        "namespace": namespace_of(owner),
        "labels": {**template_labels, REVISION_HASH_LABEL: hash_},
        "ownerReferences": [dict(ref)],
    }
    annotations = annotations_of(owner)
    if annotations:
        meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta,
        "data": template_patch(owner),
        "revision": number,
    }


@dataclass
class HistoryPlan:
    """What constructHistory decided for one sync.

    `current` is the revision of the owner's template (None: `create` it); `renumber` is set when
    the current one must move to the top of the history; `duplicates` are other revisions of the
    same template, to delete after relabelling their pods to `current`'s hash; `label` are
    revisions without the hash label (they get their own name as hash); `old` is the rest."""

    current: Obj | None = None
    create: Obj | None = None
    renumber: int | None = None
    duplicates: list[Obj] = field(default_factory=list)
    label: list[Obj] = field(default_factory=list)
    old: list[Obj] = field(default_factory=list)

    @property
    def hash(self) -> str:
        rev = self.current if self.current is not None else self.create
        return revision_hash(rev) if rev is not None else ""


def plan_history(
    owner: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]], ref: Mapping[str, Any]
) -> HistoryPlan:
    """Split the owner's revisions into current and old, and say what to write to get exactly
    one current revision at the top of the history."""
    plan = HistoryPlan()
    current: list[Obj] = []
    for rev in revisions:
        rev = copy.deepcopy(dict(rev))
        if not revision_hash(rev):
            labels = dict(labels_of(rev))
            labels[REVISION_HASH_LABEL] = name_of(rev)
            rev.setdefault("metadata", {})["labels"] = labels
            plan.label.append(rev)
        (current if matches(owner, rev) else plan.old).append(rev)
    top = max_revision(plan.old) + 1
    if not current:
        plan.create = new_revision(owner, top, ref, template_hash(owner))
        return plan
    current.sort(key=lambda r: (revision_number(r), name_of(r)))
    plan.current, plan.duplicates = current[-1], current[:-1]
    if revision_number(plan.current) < top:
        plan.renumber = top
    return plan


def revision_history_limit(owner: Mapping[str, Any]) -> int:
    limit = spec(owner).get("revisionHistoryLimit")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else DEFAULT_REVISION_HISTORY_LIMIT


def revisions_to_prune(
    owner: Mapping[str, Any], old: Sequence[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """cleanupHistory: the oldest old revisions beyond revisionHistoryLimit, never one a pod
    still runs (its hash is on a live pod)."""
    excess = len(old) - max(0, revision_history_limit(owner))
    if excess <= 0:
        return []
    live = {labels_of(p).get(REVISION_HASH_LABEL) for p in pods} - {None, ""}
    out: list[Mapping[str, Any]] = []
    for rev in sorted(old, key=lambda r: (revision_number(r), name_of(r))):
        if len(out) >= excess:
            break
        if revision_hash(rev) not in live:
            out.append(rev)
    return out
