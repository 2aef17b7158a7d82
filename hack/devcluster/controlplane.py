"""A real, throwaway Kubernetes control plane on loopback: etcd plus kube-apiserver.

Why: the operator and the ingress are only worth something against the real API server's
semantics (resourceVersion preconditions, watch bookmarks, RBAC, CRD validation, the
TokenRequest API). This machine has no Docker and cannot download kind or envtest, so the
binaries are compiled from Go modules by ``hack/controlplane/build.sh`` and started here, in
the spirit of controller-runtime's envtest: one generated CA for serving and client
certificates, an admin client certificate in ``system:masters``, RBAC authorization, a
service-account signing key, and no controllers (nothing reconciles Deployments or Pods).

Everything lives in one temporary directory that is removed on ``stop()``. Ports are picked
free on 127.0.0.1; a start that loses a port race is retried.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"


def bin_dir() -> Path:
    """Where build.sh caches the binaries (OCSP_STAPLER_BIN_DIR overrides)."""
    return Path(os.environ.get("OCSP_STAPLER_BIN_DIR", REPO_ROOT / ".cache" / "bin"))


def ensure_binaries(*names: str) -> dict[str, Path]:
    """Build whatever is missing (first run only) and return the paths by name."""
    names = names or ("etcd", "kube-apiserver", "kubectl", "helm")
    paths = {name: bin_dir() / name for name in names}
    if not all(p.exists() for p in paths.values()):
        subprocess.run([str(BUILD_SCRIPT), *names], check=True)
    return paths


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    *,
    subject: x509.Name,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    ca: bool,
    usage: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Credentials:
    """The PKI of one control plane: a CA, the server's certificate, an admin client."""

    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    admin_cert_pem: bytes
    admin_key_pem: bytes
    sa_key_pem: bytes

    @classmethod
    def generate(cls) -> Credentials:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocsp-stapler-devcluster-ca")])
        ca = _issue(subject=ca_name, issuer_name=ca_name, issuer_key=ca_key, key=ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _issue(
            subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            issuer_name=ca_name,
            issuer_key=ca_key,
            key=server_key,
            ca=False,
            usage=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=[
                x509.DNSName("localhost"),
                x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
        )
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _issue(
            subject=x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "devcluster-admin"),
                ]
            ),
            issuer_name=ca_name,
            issuer_key=ca_key,
            key=admin_key,
            ca=False,
            usage=[ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        # The API server wants an RSA key for signing service-account tokens (RS256).
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            ca_pem=_pem_cert(ca),
            server_cert_pem=_pem_cert(server),
            server_key_pem=_pem_key(server_key),
            admin_cert_pem=_pem_cert(admin),
            admin_key_pem=_pem_key(admin_key),
            sa_key_pem=_pem_key(sa_key),
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in ``workdir``; ``start()`` blocks until /readyz answers ok."""

    workdir: Path
    binaries: dict[str, Path] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    argv: dict[str, list[str]] = field(default_factory=dict)
    start_timeout: float = 120.0

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def start(self) -> None:
        self.binaries = self.binaries or ensure_binaries("etcd", "kube-apiserver", "kubectl")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        creds = Credentials.generate()
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        files = {
            "ca.crt": creds.ca_pem,
            "server.crt": creds.server_cert_pem,
            "server.key": creds.server_key_pem,
            "sa.key": creds.sa_key_pem,
            "admin.crt": creds.admin_cert_pem,
            "admin.key": creds.admin_key_pem,
        }
        for name, data in files.items():
            (pki / name).write_bytes(data)
            (pki / name).chmod(0o600)
        self._write_kubeconfig(creds)
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between probe and bind
            try:
                self._start_etcd()
                self._start_apiserver(pki)
                self._wait_ready(pki)
                return
            except (RuntimeError, TimeoutError) as exc:
                last_error = exc
                self._kill_all()
        raise RuntimeError(f"control plane did not start: {last_error}")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.argv[name] = argv
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        data = self.workdir / "etcd"
        shutil.rmtree(data, ignore_errors=True)
        self._spawn(
            "etcd",
            [
                str(self.binaries["etcd"]),
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync=true",  # throwaway data: durability buys nothing here
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, pki: Path) -> None:
        self.port = free_port()
        self._write_kubeconfig_server()
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--etcd-prefix=/registry-{self.port}",
                f"--secure-port={self.port}",
                f"--bind-address={self.host}",
                f"--advertise-address={self.host}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                "--v=1",
            ],
        )

    def _ssl_context(self, pki: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _wait_ready(self, pki: Path) -> None:
        ctx = self._ssl_context(pki)
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited with {proc.returncode}: {self.log_tail()}"
                    )
            try:
                with urllib.request.urlopen(  # noqa: S310 (our own https URL)
                    f"{self.url}/readyz", context=ctx, timeout=2
                ) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {self.start_timeout} s ({last})")

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for log in sorted(self.log_dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def _write_kubeconfig(self, creds: Credentials) -> None:
        self._kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "devcluster",
                    "cluster": {"server": "", "certificate-authority-data": _b64(creds.ca_pem)},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": _b64(creds.admin_cert_pem),
                        "client-key-data": _b64(creds.admin_key_pem),
                    },
                }
            ],
            "contexts": [
                {"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin"}}
            ],
            "current-context": "devcluster",
        }

    def _write_kubeconfig_server(self) -> None:
        self._kubeconfig["clusters"][0]["cluster"]["server"] = self.url  # type: ignore[index]
        self.kubeconfig.write_text(json.dumps(self._kubeconfig, indent=2))
        self.kubeconfig.chmod(0o600)

    def kubectl(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        """Run the real kubectl against this cluster and return its stdout."""
        proc = subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            check=False,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode()

    def _kill_all(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=3)  # throwaway state: no need for a graceful drain
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.processes.clear()

    def restart_apiserver(self, *, down_for: float = 1.0) -> None:
        """Kill kube-apiserver with SIGKILL (a crash, not a shutdown) and start it again on the
        same port and etcd: what clients see when the control plane fails over."""
        for proc in self.processes:
            if "kube-apiserver" in str(proc.args[0]) and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.processes = [p for p in self.processes if p.poll() is None]
        time.sleep(down_for)
        self._spawn("kube-apiserver", self.argv["kube-apiserver"])
        self._wait_ready(self.workdir / "pki")

    def stop(self) -> None:
        self._kill_all()


@contextlib.contextmanager
def running(workdir: Path | None = None, *, keep: bool = False) -> Iterator[ControlPlane]:
    """Start a control plane in ``workdir`` (a fresh temporary one by default), stop it after."""
    owned = workdir is None
    path = Path(tempfile.mkdtemp(prefix="ocsp-stapler-cp-")) if workdir is None else workdir
    path.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir=path)
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()
        if owned and not keep:
            shutil.rmtree(path, ignore_errors=True)
