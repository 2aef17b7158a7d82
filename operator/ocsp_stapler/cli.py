"""The ``ocsp-stapler`` command line: one click group, one sub-command per job.

``check`` and ``verify`` are how users debug a certificate or a staple taken out of a
Secret. Both exit 0 for good, 1 for revoked, 3 for unknown and 2 for any failure (with a
one-line reason on stderr), so scripts can branch on the verdict.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ocsp_stapler import __version__
from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from ocsp_stapler.ocsp.bundles import UserChain, read_user_chain, staple_hint, validity_warning
from ocsp_stapler.ocsp.chains import Chain
from ocsp_stapler.ocsp.errors import IssuerNotFound, OCSPError, ResponseMalformed
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import VerifyPolicy, verify_response
from ocsp_stapler.ocsp.schedules import RefreshPolicy
from ocsp_stapler.ocsp.stapling import Fetched, StaplingConfig, obtain_staple
from ocsp_stapler.reports import Report, refresh_decision


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _emit(report: Report, as_json: bool) -> None:
    """The report on stdout (JSON, or text for a verdict); an error once, on stderr."""
    if as_json:
        click.echo(report.as_json())
    elif report.error is None:
        click.echo(report.as_text())
    if report.error is not None:
        note = f" ({report.certificate_warning})" if report.certificate_warning else ""
        click.echo(f"ocsp-stapler: {report.error}{note}", err=True)
    sys.exit(report.exit_code)


class UsageProblem(OCSPError):
    """A command line click refused (a missing file, an unknown option, a bad value)."""

    reason = "UsageError"


class _JsonAwareGroup(click.Group):
    """With ``--json`` anywhere on the line, even a usage error answers in JSON (exit 2)."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, **kwargs: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if kwargs.get("standalone_mode") is False:
            return super().main(argv, **kwargs)
        as_json = "--json" in argv
        try:
            return super().main(argv, **{**kwargs, "standalone_mode": False})
        except click.ClickException as exc:
            problem: OCSPError = UsageProblem(exc.format_message())
        except (click.exceptions.Abort, KeyboardInterrupt):
            problem = UsageProblem("interrupted")
        # One line on stderr (and one JSON object with --json), exit 2: never 1 (revoked).
        _emit(Report(staple=None, error=problem, responder_url=None, refresh=None), as_json)
        return None


MAX_INPUT_BYTES = 1024 * 1024
"""No certificate bundle or OCSP response a user hands us is this large: refused unread."""


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageProblem(f"{path} is larger than {MAX_INPUT_BYTES} bytes: not a certificate "
                           "or an OCSP response")  # fmt: skip
    return data


def _failed(
    error: OCSPError,
    as_json: bool,
    url: str | None = None,
    *,
    user: UserChain | None = None,
    now: datetime.datetime | None = None,
) -> None:
    """The failure, with which certificate was taken as the leaf and whether it is itself
    out of its validity (an expired certificate is often why a responder refuses)."""
    leaf = user.leaf_note if user is not None else None
    warning = validity_warning(user.chain.leaf, now or _now()) if user is not None else None
    report = Report(staple=None, error=error, responder_url=url, refresh=None, leaf=leaf,
                    certificate_warning=warning)  # fmt: skip
    _emit(report, as_json)


@click.group(cls=_JsonAwareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocsp-stapler")
def main() -> None:
    """Keep verified OCSP staples in Kubernetes TLS Secrets, and serve them."""


@main.command()
@click.argument("chain", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--issuer",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Issuer certificate (PEM, DER or PKCS#7), when CHAIN does not carry it.",
)
@click.option("--url", help="Responder URL; overrides the certificate's AIA OCSP URLs.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the verified response (DER) here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--hash",
    "hash_name",
    type=click.Choice(["sha1", "sha256"]),
    default="sha1",
    show_default=True,
    help="CertID hash algorithm.",
)
@click.option("--nonce", is_flag=True, help="Send a nonce (most CA responders ignore it).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=10.0,
    show_default=True,
    help="Seconds in all.",
)
@click.option("--proxy", help="HTTP proxy URL (HTTP_PROXY/HTTPS_PROXY/NO_PROXY apply otherwise).")
@click.option("--deny-cidr", multiple=True, help="Refuse responders in this range (repeatable).")
@click.option("--allow-cidr", multiple=True, help="Allow responders only in these ranges.")
def check(
    *,
    chain: Path,
    issuer: Path | None,
    url: str | None,
    out: Path | None,
    as_json: bool,
    hash_name: str,
    nonce: bool,
    timeout: float,
    proxy: str | None,
    deny_cidr: tuple[str, ...],
    allow_cidr: tuple[str, ...],
) -> None:
    """Fetch and verify an OCSP response for the leaf of CHAIN (PEM, DER or PKCS#7; a bundle
    in any order: the leaf is found by the chain, and named)."""
    try:
        guard = DestinationGuard.from_lists(allow=allow_cidr, deny=deny_cidr)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    settings = FetchSettings(
        total_timeout=timeout, connect_timeout=min(5.0, timeout), proxy=proxy, guard=guard
    )
    config = StaplingConfig(hash_name="sha256" if hash_name == "sha256" else "sha1", nonce=nonce)
    user: UserChain | None = None
    try:
        user = read_user_chain(
            _read(chain),
            what=str(chain),
            issuer_data=_read(issuer) if issuer else None,
            issuer_what=str(issuer),
        )
        fetched = asyncio.run(_fetch(user.chain, settings, config, url))
    except OCSPError as exc:
        _failed(exc, as_json, url, user=user)
        return
    if out is not None:
        try:
            out.write_bytes(fetched.staple.der)
        except OSError as exc:
            _failed(UsageProblem(f"cannot write {out}: {exc.strerror}"), as_json, url, user=user)
    report = Report(
        staple=fetched.staple,
        error=None,
        responder_url=fetched.responder_url,
        refresh=refresh_decision(fetched.staple, _now(), RefreshPolicy()),
        leaf=user.leaf_note,
        certificate_warning=validity_warning(user.chain.leaf, _now()),
    )
    _emit(report, as_json)


async def _fetch(
    chain: Chain, settings: FetchSettings, config: StaplingConfig, url: str | None
) -> Fetched:
    async with HttpFetcher(settings) as fetch:
        return await obtain_staple(chain, fetch=fetch, clock=_now, config=config, override_url=url)


@main.command()
@click.option(
    "--response",
    "response_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The OCSP response (DER), e.g. a Secret's tls.ocsp-staple.",
)
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate (PEM, DER or PKCS#7); a bundle with its issuer, in any order, is fine.",
)
@click.option(
    "--issuer",
    "issuer_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Issuer certificate (PEM, DER or PKCS#7), when --cert does not carry it.",
)
@click.option(
    "--at",
    "at",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    help="Check as of this time (ISO 8601; UTC when no offset).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--allow-no-next-update", is_flag=True, help="Accept responses without nextUpdate.")
def verify(
    *,
    response_path: Path,
    cert_path: Path,
    issuer_path: Path | None,
    at: datetime.datetime | None,
    as_json: bool,
    allow_no_next_update: bool,
) -> None:
    """Verify an existing OCSP response offline against its certificate."""
    now = _now() if at is None else (at if at.tzinfo else at.replace(tzinfo=datetime.UTC))
    der = b""
    user: UserChain | None = None
    try:
        der = _read(response_path)
        user = read_user_chain(
            _read(cert_path),
            what=str(cert_path),
            issuer_data=_read(issuer_path) if issuer_path is not None else None,
            issuer_what=str(issuer_path),
        )
        leaf, issuer = user.chain.leaf, user.chain.issuer
        if issuer is None:
            raise IssuerNotFound(f"no issuer for the certificate in {cert_path}: pass --issuer")
        staple = verify_response(
            der,
            cert_id=CertID.of(leaf, issuer),
            issuer=issuer,
            now=now,
            policy=VerifyPolicy(require_next_update=not allow_no_next_update),
        )
    except ResponseMalformed as exc:
        hint = staple_hint(der)
        exc.message = f"{response_path}: " + (f"{hint} ({exc.message})" if hint else exc.message)
        _failed(exc, as_json, user=user, now=now)
        return
    except OCSPError as exc:
        _failed(exc, as_json, user=user, now=now)
        return
    _emit(
        Report(
            staple=staple,
            error=None,
            responder_url=None,
            refresh=refresh_decision(staple, now, RefreshPolicy()),
            leaf=user.leaf_note,
            certificate_warning=validity_warning(leaf, now),
        ),
        as_json,
    )


@main.command("operator")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch this namespace (repeatable). Default: OCSP_STAPLER_NAMESPACES, else all.",
)
@click.option(
    "--all-namespaces", is_flag=True, help="Watch all namespaces (overrides the environment)."
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig; default as kubectl, then in-cluster.",
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    help="Log format (OCSP_STAPLER_LOG_FORMAT).",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def operator_command(
    *,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    kubeconfig: str | None,
    log_format: str | None,
    verbose: bool,
) -> None:
    """Run the operator: keep a verified staple in every opted-in TLS Secret."""
    from ocsp_stapler.config import ConfigError, from_environment  # noqa: PLC0415 (kopf is heavy)
    from ocsp_stapler.controller.running import LeadershipLost, run_operator  # noqa: PLC0415
    from ocsp_stapler.controller.settings import OperatorSettings  # noqa: PLC0415
    from ocsp_stapler.k8s.client import load_credentials  # noqa: PLC0415
    from ocsp_stapler.logs import configure_logging  # noqa: PLC0415

    try:
        settings = from_environment(
            OperatorSettings,
            os.environ,
            namespaces=() if all_namespaces else (namespaces or None),
            log_format=log_format,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_format, debug=verbose)
    try:
        asyncio.run(run_operator(settings, credentials=load_credentials(kubeconfig)))
    except LeadershipLost:
        sys.exit(1)  # logged where it was lost; the restart begins as a standby


@main.command("ingress")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch this namespace (repeatable). Default: OCSP_STAPLER_NAMESPACES, else all.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig; default as kubectl, then in-cluster.",
)
@click.option("--https-port", type=int, help="TLS port (OCSP_STAPLER_HTTPS_PORT, default 8443).")
@click.option("--http-port", type=int, help="Redirecting HTTP port; 0 disables (default 8080).")
@click.option("--health-port", type=int, help="/healthz, /readyz, /metrics port (default 10254).")
@click.option("--workers", type=int, help="Worker processes (default: one per CPU).")
@click.option("--bind-address", help="Listen address (default 0.0.0.0).")
@click.option("--log-format", type=click.Choice(["plain", "json"]), help="Log format.")
def ingress_command(
    *,
    namespaces: tuple[str, ...],
    kubeconfig: str | None,
    https_port: int | None,
    http_port: int | None,
    health_port: int | None,
    workers: int | None,
    bind_address: str | None,
    log_format: str | None,
) -> None:
    """Run the ingress: serve Ingresses of class ocsp-stapler over TLS, stapling from Secrets."""
    from ocsp_stapler.config import ConfigError, from_environment  # noqa: PLC0415
    from ocsp_stapler.ingress.settings import IngressSettings  # noqa: PLC0415
    from ocsp_stapler.ingress.supervisor import Supervisor  # noqa: PLC0415
    from ocsp_stapler.k8s.client import load_credentials  # noqa: PLC0415
    from ocsp_stapler.logs import configure_logging  # noqa: PLC0415

    try:
        settings = from_environment(
            IngressSettings,
            os.environ,
            namespaces=namespaces or None,
            https_port=https_port,
            http_port=http_port,
            health_port=health_port,
            workers=workers,
            bind_address=bind_address,
            log_format=log_format,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_format)
    asyncio.run(Supervisor(settings, credentials=load_credentials(kubeconfig)).run())


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _file_option(name: str, text: str, **kwargs: Any) -> Callable[[_Command], _Command]:
    return click.option(name, type=click.Path(dir_okay=False, path_type=Path), help=text, **kwargs)


@main.command("sync")
@click.option(
    "--secret-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A mounted TLS Secret (tls.crt, ca.crt, tls.ocsp-staple), as the kubelet writes it.",
)
@_file_option("--cert", "Instead of --secret-dir: the certificate chain (PEM).")
@_file_option("--staple", "Instead of --secret-dir: the staple (DER) the operator keeps.")
@_file_option("--ca", "With --cert: more certificates, the issuer among them (PEM).")
@_file_option("--issuer", "The issuer (PEM, DER or PKCS#7) when the Secret has none.")
@_file_option("--out", "The consumer's staple file (HAProxy: <crt>.ocsp).", required=True)
@_file_option("--haproxy-socket", "HAProxy's stats socket (level admin): staples pushed.")
@_file_option("--nginx-include", "Names the staple file while it is valid; nothing otherwise.")
@_file_option("--nginx-pidfile", "With --nginx-include: reload this nginx master (SIGHUP).")
@click.option("--exec", "command", help="Run this command (no shell) after each change.")
@click.option(
    "--poll",
    type=click.FloatRange(0.1, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between looks at the source.",
)
@click.option("--once", is_flag=True, help="Look once, hand over, exit (2 if a consumer failed).")
@click.option("--expiry-margin", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="Seconds before nextUpdate at which consumers let a staple go.")  # fmt: skip
@click.option("--health-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="/healthz, /readyz and /metrics on this port (0: none).")  # fmt: skip
@click.option("--health-address", default="0.0.0.0", show_default=True,  # noqa: S104
              help="The address the health port listens on.")  # fmt: skip
def sync_command(
    *,
    secret_dir: Path | None,
    cert: Path | None,
    staple: Path | None,
    ca: Path | None,
    issuer: Path | None,
    out: Path,
    haproxy_socket: Path | None,
    nginx_include: Path | None,
    nginx_pidfile: Path | None,
    command: str | None,
    poll: float,
    once: bool,
    expiry_margin: float,
    health_port: int,
    health_address: str,
) -> None:
    """Bring each verified staple from a mounted Secret to nginx, HAProxy or a command."""
    import shlex  # noqa: PLC0415

    from ocsp_stapler.config import ConfigError, from_environment  # noqa: PLC0415
    from ocsp_stapler.consumers.delivery import Delivery  # noqa: PLC0415
    from ocsp_stapler.consumers.errors import ConsumerError  # noqa: PLC0415
    from ocsp_stapler.controller.settings import OperatorSettings  # noqa: PLC0415
    from ocsp_stapler.logs import configure_logging  # noqa: PLC0415
    from ocsp_stapler.standalone.sync import Source, run_sync  # noqa: PLC0415

    if nginx_pidfile is not None and nginx_include is None:
        raise click.UsageError("--nginx-pidfile needs --nginx-include")
    try:
        settings = from_environment(OperatorSettings, os.environ)
        argv = tuple(shlex.split(command)) if command else ()
        source = Source.given(secret_dir=secret_dir, cert=cert, staple=staple, ca=ca,
                              issuer=issuer, staple_key=settings.staple_key)  # fmt: skip
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_format)
    delivery = Delivery(
        staple_file=out,
        haproxy_socket=haproxy_socket,
        nginx_include=nginx_include,
        nginx_pidfile=nginx_pidfile,
        command=argv,
    )
    try:
        delivery.check_target()
    except ConsumerError as exc:
        raise click.UsageError(str(exc)) from None
    run = run_sync(source, delivery, settings=settings, clock=_now, poll=poll, once=once,
                   health=(health_address, health_port),
                   expiry_margin=datetime.timedelta(seconds=expiry_margin))  # fmt: skip
    sys.exit(asyncio.run(run))


@main.command("staple")
@click.argument("chains", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))  # fmt: skip
@_file_option("--out", "The staple file (one chain only; default: <chain>.ocsp beside it).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write <chain file name>.ocsp here for each chain.")  # fmt: skip
@_file_option("--haproxy-socket", "HAProxy's stats socket (level admin): staples pushed; each "
              "chain file is the crt HAProxy serves.")  # fmt: skip
@click.option("--exec", "command", help="Run this command (no shell) after each change.")
@click.option("--poll", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
              help="Seconds between looks at the chain files (a renewal is seen).")  # fmt: skip
@click.option("--once", is_flag=True,
              help="One pass (cron, timers): 0 if every file holds a valid staple.")  # fmt: skip
def staple_command(
    *,
    chains: tuple[Path, ...],
    out: Path | None,
    out_dir: Path | None,
    haproxy_socket: Path | None,
    command: str | None,
    poll: float,
    once: bool,
) -> None:
    """Keep a verified staple beside each certificate chain (PEM, issuer included or
    reachable by caIssuers), for servers outside Kubernetes."""
    import shlex  # noqa: PLC0415

    from ocsp_stapler.config import ConfigError, from_environment  # noqa: PLC0415
    from ocsp_stapler.consumers.delivery import Delivery  # noqa: PLC0415
    from ocsp_stapler.consumers.errors import ConsumerError  # noqa: PLC0415
    from ocsp_stapler.controller.settings import OperatorSettings  # noqa: PLC0415
    from ocsp_stapler.logs import configure_logging  # noqa: PLC0415
    from ocsp_stapler.standalone.host import Certificate, run_host  # noqa: PLC0415

    if out is not None and (out_dir is not None or len(chains) > 1):
        raise click.UsageError("--out names one staple file: give one chain, or --out-dir")
    if len({c.name for c in chains}) < len(chains) and out_dir is not None:
        raise click.UsageError("with --out-dir, chain files need different names")
    try:
        settings = from_environment(OperatorSettings, os.environ)
        argv = tuple(shlex.split(command)) if command else ()
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(f"cannot create --out-dir {out_dir}: {exc.strerror}") from None

    def staple_file(chain: Path) -> Path:
        if out is not None:
            return out
        if out_dir is not None:
            return out_dir / f"{chain.name}.ocsp"
        return chain.with_name(f"{chain.name}.ocsp")

    outs = [staple_file(chain).absolute() for chain in chains]
    if len(set(outs)) < len(outs) or set(outs) & {c.absolute() for c in chains}:
        raise click.UsageError("each chain needs a staple file of its own, not a chain file")
    certificates = [
        Certificate(
            chain_file=chain,
            delivery=Delivery(
                staple_file=staple_file(chain),
                haproxy_socket=haproxy_socket,
                command=argv,
                haproxy_crt=chain,
            ),
        )
        for chain in chains
    ]
    try:
        for certificate in certificates:
            certificate.delivery.check_target()
    except ConsumerError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_format)
    sys.exit(asyncio.run(run_host(certificates, settings=settings, clock=_now, poll=poll,
                                  once=once)))  # fmt: skip


@main.command("cleanup")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Kubeconfig; default as kubectl, then in-cluster.",
)
@click.option("--context", help="Kubeconfig context (default: the current one).")
@click.option("--namespace", "namespaces", multiple=True,
              help="Only this namespace (repeatable). Default: all namespaces.")  # fmt: skip
@click.option("--staple-key", help="The Secret data key staples were written to "
              "(OCSP_STAPLER_STAPLE_KEY, else tls.ocsp-staple).")  # fmt: skip
@click.option("--include-opt-in", is_flag=True,
              help="Also remove the opt-in and responder-url annotations.")  # fmt: skip
@click.option("--apply", is_flag=True, help="Make the changes (default: only list them).")
@click.option(
    "--force",
    is_flag=True,
    help="With --apply: even while an operator runs (holds its Lease, or its pod runs).",
)
def cleanup_command(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespaces: tuple[str, ...],
    staple_key: str | None,
    include_opt_in: bool,
    apply: bool,
    force: bool,
) -> None:
    """Remove every staple, annotation and OCSPStaple the operator made (after uninstall).

    A dry run unless --apply: each change is listed, none is made. Exits 2 if any failed."""
    from ocsp_stapler.controller.uninstall import OperatorStillRunning, clean  # noqa: PLC0415
    from ocsp_stapler.k8s.client import (  # noqa: PLC0415
        REQUEST_ERRORS,
        ApiClient,
        load_credentials,
    )
    from ocsp_stapler.names import STAPLE_KEY  # noqa: PLC0415

    key = staple_key or os.environ.get("OCSP_STAPLER_STAPLE_KEY") or STAPLE_KEY

    async def run() -> int:
        async with ApiClient(load_credentials(kubeconfig, context),
                             user_agent="ocsp-stapler-cleanup") as api:  # fmt: skip
            try:
                outcome = await clean(api, namespaces=namespaces, staple_key=key,
                                      user_annotations=include_opt_in, apply=apply,
                                      force=force)  # fmt: skip
            except OperatorStillRunning as exc:
                click.echo(f"ocsp-stapler: an operator still runs: {exc}; "
                           "uninstall it first (or --force)", err=True)  # fmt: skip
                return 2
            except REQUEST_ERRORS as exc:
                click.echo(f"ocsp-stapler: cleanup failed: {exc}", err=True)
                return 2
        for leader in outcome.leaders:
            click.echo(f"warning: an operator still runs: {leader}", err=True)
        verb = "" if apply else "would "
        for step in outcome.steps:
            click.echo(f"{verb}{step}")
        for failure in outcome.failures:
            click.echo(f"failed: {failure}", err=True)
        done = f"{len(outcome.steps)} change(s) {'made' if apply else 'to make'}"
        click.echo(done + ("" if apply or not outcome.steps else "; run with --apply to make them"))
        return 2 if outcome.failures else 0

    sys.exit(asyncio.run(run()))
