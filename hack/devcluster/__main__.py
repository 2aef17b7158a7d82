"""`python -m devcluster` (what `make run` runs): the local control plane and, unless
--cluster-only, the whole demo (see ``devcluster.demo``). Everything stays up until Ctrl-C;
--exit-when-ready checks and stops at once (exit 0 only when both TLS clients saw a good staple).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from devcluster.controlplane import bin_dir, ensure_binaries, running
from devcluster.demo import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".cache/run"), help="state folder")
    parser.add_argument("--exit-when-ready", action="store_true", help="check, report and stop")
    parser.add_argument(
        "--cluster-only", action="store_true", help="no demo: only the control plane"
    )
    args = parser.parse_args()
    print(
        "==> preparing the control plane (the first build compiles from source: about 5 min)",
        flush=True,
    )
    ensure_binaries()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with running(workdir / "cluster") as cp:
        print(
            f"==> kube-apiserver is ready at {cp.url}\n"
            f"    kubeconfig: {cp.kubeconfig}\n"
            f"    kubectl:    {bin_dir() / 'kubectl'} --kubeconfig {cp.kubeconfig} get ns",
            flush=True,
        )
        demo = None
        ok = True
        try:
            if not args.cluster_only:
                demo, ok, report = run_demo(cp, workdir)
                print(report, flush=True)
            if args.exit_when_ready:
                return 0 if ok else 1
            print("\nEverything is running. Press Ctrl-C to stop and clean up.", flush=True)
            try:
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
            print("\n==> stopping", flush=True)
        finally:
            if demo is not None:
                demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
