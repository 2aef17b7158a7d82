"""`python -m devcluster`: start the local control plane and keep it up until Ctrl-C.

This is what `make run` calls. It prints the kubeconfig path so that kubectl (built next to
the API server) can be pointed at it from another terminal.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from devcluster.controlplane import bin_dir, ensure_binaries, running


def main() -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".cache/run"), help="state folder")
    parser.add_argument(
        "--exit-when-ready", action="store_true", help="start, print, and stop (non-interactive)"
    )
    args = parser.parse_args()
    print("Preparing the control plane (the first build compiles from source: 20-40 min)...")
    ensure_binaries()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running(args.workdir.resolve()) as cp:
        kubectl = bin_dir() / "kubectl"
        print(
            f"\nkube-apiserver is ready at {cp.url}\n"
            f"  kubeconfig: {cp.kubeconfig}\n"
            f"  logs:       {cp.log_dir}\n\n"
            f"Try:\n  {kubectl} --kubeconfig {cp.kubeconfig} get ns\n"
            f"  export KUBECONFIG={cp.kubeconfig} PATH={bin_dir()}:$PATH\n",
            flush=True,
        )
        if args.exit_when_ready:
            return 0
        print("Press Ctrl-C to stop and clean up.", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        print("\nStopping...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
