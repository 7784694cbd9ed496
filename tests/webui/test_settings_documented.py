"""Every environment variable config.py reads is in the README's configuration table."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented():
    source = (ROOT / "services" / "webui" / "config.py").read_text()
    names = set(re.findall(r'_(?:int|float|bool)\(env, "([A-Z_]+)"', source))
    names |= set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    assert {"MAX_MESSAGE_CHARS", "SECRET_KEY"} <= names  # the pattern still finds settings
    table = "\n".join(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `"))
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert not missing, f"not in the README's configuration table: {missing}"
