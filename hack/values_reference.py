"""Generates the README's configuration reference from the chart's values.yaml comments.

`python hack/values_reference.py` prints the Markdown table; `--check README.md` exits 1 when
the README's copy (between the two markers) is stale. The test suite runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "charts" / "ocsp-stapler" / "values.yaml"
BEGIN, END = "<!-- values-reference:begin -->", "<!-- values-reference:end -->"
# Maps passed through to Kubernetes as they are: documented as a whole, not key by key.
FREE_FORM = {"resources", "podAnnotations", "nodeSelector", "tolerations", "affinity", "labels",
             "podSecurityContext", "containerSecurityContext"}  # fmt: skip


def rows() -> list[tuple[str, str, str]]:
    lines = VALUES.read_text().splitlines()
    values = yaml.safe_load(VALUES.read_text())
    out: list[tuple[str, str, str]] = []
    path: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip().removeprefix("-- ").strip())
            continue
        key = re.match(r"^(\s*)([A-Za-z]+):", line)
        if not key:
            comment = []
            continue
        indent = len(key.group(1))
        path = [(d, k) for d, k in path if d < indent] + [(indent, key.group(2))]
        names = [k for _, k in path]
        node: object = values
        for name in names:
            node = node[name] if isinstance(node, dict) else None  # type: ignore[index]
        if any(n in FREE_FORM for n in names[:-1]) or (
            isinstance(node, dict) and node and names[-1] not in FREE_FORM
        ):
            comment = []
            continue
        default = (
            yaml.safe_dump(node, default_flow_style=True, width=1000)
            .strip()
            .removesuffix("...")
            .strip()
        )
        out.append((".".join(names), f"`{default}`", " ".join(comment)))
        comment = []
    return out


def table() -> str:
    lines = ["| value | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {default} | {text} |" for name, default, text in rows()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    generated = f"{BEGIN}\n{table()}\n{END}"
    if len(argv) == 3 and argv[1] == "--check":
        readme = Path(argv[2]).read_text()
        current = readme[readme.index(BEGIN) : readme.index(END) + len(END)]
        if current != generated:
            print("README.md's configuration reference is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 3 and argv[1] == "--write":
        path = Path(argv[2])
        readme = path.read_text()
        start, end = readme.index(BEGIN), readme.index(END) + len(END)
        path.write_text(readme[:start] + generated + readme[end:])
        return 0
    print(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
