"""The ``ocsp-stapler`` command line: one click group, one sub-command per job."""

from __future__ import annotations

import click

from ocsp_stapler import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocsp-stapler")
def main() -> None:
    """Keep verified OCSP staples in Kubernetes TLS Secrets, and serve them."""
