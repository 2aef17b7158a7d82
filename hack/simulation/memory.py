"""An in-memory API server for the simulation and fast operator tests, with the same answers
the real one gives to what the operator sends.

It keeps objects as JSON dicts by path and answers ``get``, ``create``, ``patch`` (JSON patch
and merge patch, the status subresource apart) and ``delete`` the way kube-apiserver does for
the operator's calls: a failed JSON-patch ``test`` (or a ``remove`` of nothing) is 422
Invalid and changes nothing, a merge patch carrying a stale ``metadata.resourceVersion`` is
409 Conflict, a create of an existing name is 409, a missing object 404. Every write bumps
one cluster-wide resourceVersion and is told to watchers, in order, as ``ADDED``,
``MODIFIED`` or ``DELETED`` with the object: what a watch stream delivers.

Objects are never changed in place: a write stores a new dict that shares what it did not
change with the old one (10,000 Secrets written for a month are then cheap), so the dicts
handed out stay as they were answered. Whoever receives one must not change it either (the
operator never does; tests change objects through the API).

What it leaves out, because the operator does not depend on it: field selectors, label
selectors, admission, defaulting and garbage collection (``delete`` removes one object).
"""

from __future__ import annotations

import collections
import itertools
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from ocsp_stapler.k8s.client import Conflict, Invalid, JsonObject, NotFound, PatchType

Watcher = Callable[[str, str, JsonObject], None]
"""(plural, event type, object) after each write, in the order of the writes."""


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _split(path: str) -> tuple[str, str, str | None, str | None]:
    """(collection path, plural, name, subresource) of an API path."""
    parts = path.strip("/").split("/")
    # api/v1/namespaces/NS/PLURAL[/NAME[/SUB]] or apis/G/V/namespaces/NS/PLURAL[/NAME[/SUB]]
    base = 2 if parts[0] == "api" else 3
    if len(parts) > base and parts[base] == "namespaces":
        base += 2
    plural = parts[base]
    collection = "/" + "/".join(parts[: base + 1])
    name = unquote(parts[base + 1]) if len(parts) > base + 1 else None
    sub = parts[base + 2] if len(parts) > base + 2 else None
    return collection, plural, name, sub


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _walk(doc: Any, pointer: str) -> tuple[Any, str]:
    """The container of the pointer's last token, and that token."""
    if not pointer.startswith("/"):
        raise Invalid(422, "Invalid", f"bad JSON pointer {pointer!r}")
    tokens = [_unescape(t) for t in pointer[1:].split("/")]
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise Invalid(422, "Invalid", f"doc is missing path: {pointer}")
    return node, tokens[-1]


def _writable(doc: JsonObject, pointer: str, copied: set[int]) -> None:
    """Copy the dicts along ``pointer`` (once each) so that it can be changed in the copy."""
    node = doc
    for token in [_unescape(t) for t in pointer[1:].split("/")][:-1]:
        child = node.get(token) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            return
        if id(child) not in copied:
            child = dict(child)
            node[token] = child
            copied.add(id(child))
        node = child


def apply_json_patch(doc: JsonObject, ops: list[dict[str, Any]]) -> JsonObject:
    """RFC 6902 (test, add, remove, replace) into a new object sharing what it does not
    change; Invalid when any op fails, and then nothing changed."""
    doc = dict(doc)
    copied = {id(doc)}
    for op in ops:
        if op.get("op") != "test":
            _writable(doc, str(op.get("path", "")), copied)
    for op in ops:
        kind, pointer = op.get("op"), str(op.get("path", ""))
        parent, key = _walk(doc, pointer)
        present = isinstance(parent, dict) and key in parent
        if kind == "test":
            if not present or parent[key] != op.get("value"):
                raise Invalid(422, "Invalid", f"testing value {pointer} failed")
        elif kind in ("add", "replace"):
            if kind == "replace" and not present:
                raise Invalid(422, "Invalid", f"replace operation does not apply: {pointer}")
            if not isinstance(parent, dict):
                raise Invalid(422, "Invalid", f"unsupported patch target {pointer}")
            parent[key] = _copy(op.get("value"))
        elif kind == "remove":
            if not present:
                raise Invalid(422, "Invalid", f"remove operation does not apply: {pointer}")
            del parent[key]
        else:
            raise Invalid(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


def apply_merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386 (null removes, objects merge, anything else replaces) into a new object
    sharing what the patch does not touch."""
    if not isinstance(patch, dict):
        return _copy(patch)
    result = dict(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


class MemoryApi:
    """The ``ocsp_stapler.k8s.client.Api`` protocol, answered from memory."""

    def __init__(self, *, clock: Callable[[], str] | None = None) -> None:
        self.objects: dict[str, dict[str, JsonObject]] = {}
        """collection path -> name -> object."""
        self._versions = itertools.count(1)
        self._watchers: list[Watcher] = []
        self._clock = clock or (lambda: "2026-01-01T00:00:00Z")
        self.writes = 0
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        """(verb, plural) -> requests made, answered or refused (what a client costs)."""

    def watch(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    def _stored(self, path: str) -> tuple[str, str, str, str | None, JsonObject]:
        collection, plural, name, sub = _split(path)
        if name is None:
            raise NotFound(404, "NotFound", f"{path}: not an object path")
        found = self.objects.get(collection, {}).get(name)
        if found is None:
            raise NotFound(404, "NotFound", f'{plural} "{name}" not found')
        return collection, plural, name, sub, found

    def _store(self, collection: str, plural: str, obj: JsonObject, event: str) -> JsonObject:
        obj["metadata"] = {**obj["metadata"], "resourceVersion": str(next(self._versions))}
        self.objects.setdefault(collection, {})[obj["metadata"]["name"]] = obj
        self.writes += 1
        for watcher in self._watchers:
            watcher(plural, event, obj)
        return obj

    async def get(self, path: str, **params: str) -> JsonObject:
        self.requests["get", _split(path)[1]] += 1
        return self._stored(path)[4]

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        collection, plural, _name, _sub = _split(path)
        self.requests["create", plural] += 1
        obj = _copy(body)
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise Invalid(422, "Invalid", "metadata.name or generateName is required")
            name = meta["name"] = f"{prefix}{uuid.uuid4().hex[:5]}"
        if name in self.objects.get(collection, {}):
            raise Conflict(409, "AlreadyExists", f'{plural} "{name}" already exists')
        parts = collection.strip("/").split("/")
        if "namespaces" in parts:
            meta["namespace"] = unquote(parts[parts.index("namespaces") + 1])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._clock()
        return self._store(collection, plural, obj, "ADDED")

    async def patch(self, path: str, body: Any, *, patch_type: PatchType = "merge") -> JsonObject:
        self.requests["patch", _split(path)[1]] += 1
        collection, plural, _name, sub, current = self._stored(path)
        if patch_type == "json":
            updated = apply_json_patch(current, list(body))
        else:
            wanted = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get(
                "resourceVersion"
            )
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise Conflict(409, "Conflict", "the object has been modified")
            if sub == "status":  # the status subresource changes nothing but status
                body = {"status": body.get("status")} if isinstance(body, dict) else {}
            updated = apply_merge_patch(current, body)
        meta = updated.get("metadata") or {}
        for field in ("name", "namespace", "uid"):
            if meta.get(field) != current["metadata"].get(field):
                raise Invalid(422, "Invalid", f"metadata.{field} is immutable")
        if updated == current:
            return current  # a no-op patch is no write (no new resourceVersion)
        return self._store(collection, plural, updated, "MODIFIED")

    async def delete(self, path: str) -> JsonObject:
        self.requests["delete", _split(path)[1]] += 1
        collection, plural, name, _sub, current = self._stored(path)
        del self.objects[collection][name]
        self.writes += 1
        for watcher in self._watchers:
            watcher(plural, "DELETED", current)
        return {"kind": "Status", "status": "Success"}

    def replace_now(self, path: str, obj: JsonObject) -> JsonObject:
        """A user's write (``kubectl apply``): the object as given, a new resourceVersion."""
        collection, plural, _name, _sub, current = self._stored(path)
        updated = _copy(obj)
        updated.setdefault("metadata", {}).update(
            {k: current["metadata"][k] for k in ("name", "namespace", "uid", "creationTimestamp")}
        )
        return self._store(collection, plural, updated, "MODIFIED")
