"""The files a contributor reads first: the license named by pyproject.toml, and a pre-commit
configuration that runs exactly the Makefile's lint and typecheck commands."""

from __future__ import annotations

import re
import tomllib

import yaml
from devcluster.controlplane import REPO_ROOT


def _make_recipe(target: str) -> list[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    block = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert block, target
    return [line.strip().replace("$(BIN)/", ".venv/bin/") for line in block.group(1).splitlines()]


def test_pre_commit_runs_the_same_checks_as_make_test() -> None:
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    assert sorted(entries) == sorted(_make_recipe("lint") + _make_recipe("typecheck"))


def test_the_license_file_is_the_one_pyproject_names() -> None:
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    for name in ("CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md"):
        assert (REPO_ROOT / name).stat().st_size > 500, name
    assert "## [Unreleased]" in (REPO_ROOT / "CHANGELOG.md").read_text()
