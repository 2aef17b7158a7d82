"""`ocsp-stapler cleanup`: remove every trace the operator left in a cluster, after uninstall.

`helm uninstall` removes the operator but not what it wrote: the staple key in each managed
Secret, its ``ocsp-stapler.dev/`` annotations beside it, and the OCSPStaple objects (the CRD
is kept by default, and with it the objects). This finds exactly those and removes them:

* a Secret is the operator's to clean if it opts in, or carries the certificate annotation
  the operator writes with every staple (an opt-out it never finished); a staple key in a
  Secret that is neither is someone else's and is left alone;
* each Secret is patched with a JSON patch that first tests its resourceVersion, so a Secret
  changed since it was read (cert-manager renewing it) is read again, never overwritten;
* OCSPStaple objects are deleted only with the operator's ``managed-by`` label;
* the operator's Lease goes too, once no replica holds it;
* nothing is changed unless asked (``apply``), and not while an operator still runs: a
  replica holding its Lease anywhere in the cluster (not only in the namespaces cleaned), or
  a running pod of the chart's operator (leader election off). It would staple the Secrets
  again: uninstall first, or ``force``.

Each object's failure is its own: it is reported and the others go on.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from ocsp_stapler.controller import secretpatches
from ocsp_stapler.controller.bodies import Body, is_enabled, is_tls, ref_of, traces_of
from ocsp_stapler.k8s.client import (
    REQUEST_ERRORS,
    Api,
    ApiError,
    Invalid,
    NotFound,
    list_pages,
    resource_path,
)
from ocsp_stapler.names import (
    CRD_API_VERSION,
    CRD_PLURAL,
    LEASE_NAME,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TLS_SECRET_TYPE,
)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
"""The label selector of the OCSPStaple objects the operator creates (``statuses``)."""

ATTEMPTS = 3
"""Reads and patches of one Secret that keeps changing under the patch, before giving up."""


@dataclass(frozen=True)
class Step:
    """One change, made or (in a dry run) to be made."""

    kind: str
    namespace: str
    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.what}"


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    leaders: list[str] = field(default_factory=list)
    """Operators still running: ``Lease namespace/name (holder)`` or ``Pod namespace/name``."""


class OperatorStillRunning(Exception):
    """An operator still runs (it holds its Lease, or its pod runs): cleaning now would race
    its writes, and it would staple the Secrets again."""


def _collections(api_version: str, plural: str, namespaces: Sequence[str]) -> list[str]:
    if not namespaces:
        return [resource_path(api_version=api_version, plural=plural)]
    return [resource_path(api_version=api_version, plural=plural, namespace=ns)
            for ns in namespaces]  # fmt: skip


async def _items(
    api: Api, api_version: str, plural: str, namespaces: Sequence[str], **params: str
) -> AsyncIterator[Body]:
    for path in _collections(api_version, plural, namespaces):
        async for item in list_pages(api, path, params):
            yield item


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


OPERATOR_PODS = "app.kubernetes.io/name=ocsp-stapler,app.kubernetes.io/component=operator"
"""The chart's operator pods: running ones mean an operator without leader election."""


async def _cluster_wide(
    api: Api, api_version: str, plural: str, namespaces: Sequence[str], **params: str
) -> list[Body]:
    """Every object cluster-wide (an operator's Lease and pods live in its release namespace,
    not in the namespaces being cleaned); only ``namespaces`` where that is forbidden."""
    try:
        return [item async for item in _items(api, api_version, plural, (), **params)]
    except ApiError as exc:
        if exc.status != 403 or not namespaces:
            raise
        return [item async for item in _items(api, api_version, plural, namespaces, **params)]


async def running_operators(
    api: Api, namespaces: Sequence[str], now: datetime.datetime
) -> tuple[list[str], list[Body]]:
    """(operators still running, their Leases left over): a Lease whose holder renewed within
    its lease duration (wall clocks: this is a warning for people, not a fence) or a running
    pod of the chart's operator (leader election off); and the Leases no one holds."""
    running, stale = [], []
    selector = {"fieldSelector": f"metadata.name={LEASE_NAME}"}
    for lease in await _cluster_wide(api, "coordination.k8s.io/v1", "leases", namespaces,
                                     **selector):  # fmt: skip
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or 0)
        if holder and renewed is not None and (now - renewed).total_seconds() < duration:
            running.append(f"Lease {ref_of(lease)} ({holder})")
        elif not namespaces or ref_of(lease).namespace in namespaces:
            stale.append(lease)
    pods = {"labelSelector": OPERATOR_PODS, "fieldSelector": "status.phase=Running"}
    running += [f"Pod {ref_of(pod)}"
                for pod in await _cluster_wide(api, "v1", "pods", namespaces, **pods)]  # fmt: skip
    return running, stale


async def clean(
    api: Api,
    *,
    namespaces: Sequence[str] = (),
    staple_key: str,
    user_annotations: bool = False,
    apply: bool = False,
    force: bool = False,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> Outcome:
    """Find (and with ``apply``, remove) the operator's traces in ``namespaces`` (all when
    empty); ``user_annotations``: the opt-in and responder override annotations too. A
    collection that cannot be listed is a failure of the outcome, which still reports every
    change made before it."""
    leaders, stale = await running_operators(api, namespaces, clock())
    outcome = Outcome(leaders=leaders)
    if apply and outcome.leaders and not force:
        raise OperatorStillRunning(", ".join(outcome.leaders))
    cleaner = _Cleaner(api, staple_key, user_annotations, apply, outcome)
    tls = {"fieldSelector": f"type={TLS_SECRET_TYPE}"}
    try:
        async for secret in _items(api, "v1", "secrets", namespaces, **tls):
            await cleaner.secret(secret)
    except REQUEST_ERRORS as exc:
        outcome.failures.append(f"listing Secrets: {exc}")
    try:
        async for staple in _items(api, CRD_API_VERSION, CRD_PLURAL, namespaces,
                                   labelSelector=MANAGED_SELECTOR):  # fmt: skip
            await cleaner.delete("OCSPStaple", staple, CRD_API_VERSION, CRD_PLURAL)
    except NotFound:
        pass  # no OCSPStaple CRD (never installed, or deleted): no objects either
    except REQUEST_ERRORS as exc:
        outcome.failures.append(f"listing OCSPStaples: {exc}")
    for lease in stale:  # the operator's own, left by its last replica
        await cleaner.delete("Lease", lease, "coordination.k8s.io/v1", "leases")
    return outcome


@dataclass
class _Cleaner:
    api: Api
    staple_key: str
    user_annotations: bool
    apply: bool
    outcome: Outcome

    async def secret(self, secret: Body) -> None:
        ref = ref_of(secret)
        path = resource_path(api_version="v1", plural="secrets", namespace=ref.namespace,
                             name=ref.name)  # fmt: skip
        current: Body | None = secret
        for _ in range(ATTEMPTS):
            if current is None:
                return
            try:
                current = await self._patch(path, current)
            except REQUEST_ERRORS as exc:
                self.outcome.failures.append(f"Secret {ref}: {exc}")
                return
        if current is not None:
            self.outcome.failures.append(f"Secret {ref}: changed under {ATTEMPTS} patches")

    async def _patch(self, path: str, secret: Body) -> Body | None:
        """One try: None when done (cleaned, nothing to clean, or gone); the Secret as it is
        now when it changed since it was read."""
        traces = traces_of(secret, self.staple_key, opted_in=is_enabled(secret),
                           user_annotations=self.user_annotations)  # fmt: skip
        if not is_tls(secret) or not traces:
            return None
        ref = ref_of(secret)
        what = ", ".join([f"remove data {k}" for k in traces.data_keys]
                         + [f"remove annotation {k}" for k in traces.annotation_keys])  # fmt: skip
        if self.apply:
            version = str((secret.get("metadata") or {}).get("resourceVersion") or "")
            patch = secretpatches.cleanup(traces, resource_version=version)
            try:
                await self.api.patch(path, patch, patch_type="json")
            except Invalid:  # the resourceVersion test failed: read it again
                return await _get_or_none(self.api, path)
            except NotFound:
                return None  # deleted meanwhile: nothing left to clean
        self.outcome.steps.append(Step("Secret", ref.namespace, ref.name, what))
        return None

    async def delete(self, kind: str, obj: Body, api_version: str, plural: str) -> None:
        ref = ref_of(obj)
        if self.apply:
            path = resource_path(api_version=api_version, plural=plural,
                                 namespace=ref.namespace, name=ref.name)  # fmt: skip
            try:
                await self.api.delete(path)
            except NotFound:
                return
            except REQUEST_ERRORS as exc:
                self.outcome.failures.append(f"{kind} {ref}: {exc}")
                return
        self.outcome.steps.append(Step(kind, ref.namespace, ref.name, "delete"))


async def _get_or_none(api: Api, path: str) -> Body | None:
    try:
        return await api.get(path)
    except NotFound:
        return None
