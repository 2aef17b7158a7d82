"""List-then-watch caches of Kubernetes objects (what client-go calls an informer).

Each ``Informer`` keeps ``objects`` (keyed "namespace/name", or "name" when cluster-scoped)
equal to the server's state: it lists, then watches from the list's resourceVersion with
bookmarks, resumes from the last version it saw when a watch ends, and lists again when the
server says that version is gone (410). Errors back off from 0.5 s to 30 s and never end the
loop. ``synced`` is set after the first complete list; ``on_change`` is called after every
change (the caller debounces).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ocsp_stapler.k8s.client import ApiClient, ApiError

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]


def object_key(obj: JsonObject) -> str:
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Informer:
    def __init__(
        self,
        api: ApiClient,
        path: str,
        *,
        on_change: Callable[[], None],
        field_selector: str | None = None,
        name: str = "",
        watch_timeout: int = 300,
    ) -> None:
        self.api = api
        self.path = path
        self.on_change = on_change
        self.field_selector = field_selector
        self.name = name or path
        self.watch_timeout = watch_timeout
        self.objects: dict[str, JsonObject] = {}
        self.synced = asyncio.Event()
        self.resource_version: str | None = None

    async def _list(self) -> None:
        params = {"fieldSelector": self.field_selector} if self.field_selector else {}
        listed = await self.api.get(self.path, **params)
        self.objects = {object_key(o): o for o in listed.get("items", [])}
        self.resource_version = listed["metadata"]["resourceVersion"]
        self.synced.set()
        self.on_change()

    async def _watch(self) -> None:
        params = {"fieldSelector": self.field_selector} if self.field_selector else None
        async for event in self.api.watch(
            self.path,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout,
            params=params,
        ):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(obj.get("message", "resourceVersion too old"))
                raise ApiError(
                    int(obj.get("code", 500)), str(obj.get("reason")), str(obj.get("message"))
                )
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            if kind == "BOOKMARK":
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.on_change()

    async def run(self) -> None:
        delay = 0.5
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                delay = 0.5  # a watch that ended normally: resume at once
            except asyncio.CancelledError:
                raise
            except Gone:
                need_list = True
            except (ApiError, OSError, TimeoutError, ValueError) as exc:
                logger.warning("watch of %s failed (%s); retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                if isinstance(exc, ApiError) and exc.status == 410:
                    need_list = True
            except Exception as exc:
                logger.warning(
                    "watch of %s broke (%r); listing again in %.1f s", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                need_list = True
