"""Rewrites the README's configuration table from the schema, so the two never drift
(tests/test_docs.py checks the README lists every key)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitor.config import describe

README = Path(__file__).resolve().parents[1] / "README.md"


def table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    rows += [f"| `{key}` | `{json.dumps(default)}` | {help.replace('|', '/')} |" for key, default, help in describe()]
    return "\n".join(rows)


def main() -> None:
    text = README.read_text()
    text = re.sub(r"(<!-- config-table:start -->\n).*?(<!-- config-table:end -->)",
                  lambda m: m.group(1) + table() + "\n" + m.group(2), text, flags=re.S)
    README.write_text(text)


if __name__ == "__main__":
    main()
