"""The project stands alone: no machine path (the folder holding the checkout, where
worktrees and sibling checkouts live; a home directory; the shared folder beside the
repository) in code, tests, docs or results."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_HOLDER = [re.escape(str(ROOT.parent) + "/")] if ROOT.parent != ROOT.parent.parent else []
MACHINE_PATH = re.compile(r"(?<![\w.])(" + "|".join(_HOLDER + [r"/home/\w", "/root/", r"\.\./shared/"]) + ")")
SUFFIXES = {".py", ".md", ".json", ".toml", ".txt", ".yaml", ".yml", ".sh", ".cfg"}


def test_no_machine_path_in_tracked_files():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in files:
        path = ROOT / name
        if path.suffix not in SUFFIXES or name == "tests/test_repo_paths.py" or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{name}:{n}: {line.strip()[:120]}")
    assert not hits, "machine paths:\n" + "\n".join(hits[:20])
