"""The production image holds the product only: no lab, no benchmarks (`bench` drops databases), no tests."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pattern(line: str) -> re.Pattern:
    # .dockerignore's syntax (Go's filepath.Match plus **): * and ? stay inside one path segment.
    parts = re.split(r"(\*\*/?|\*|\?)", line.strip().strip("/"))
    regex = "".join(
        ".*" if part.startswith("**") else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
        for part in parts
    )
    return re.compile(regex + "$")


def image_files() -> list[str]:
    """What `COPY . .` puts into the image from a clean clone: the tracked files .dockerignore lets through."""
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    rules = [(line.startswith("!"), _pattern(line.lstrip("!"))) for line in rules if not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    kept = []
    for path in tracked.split():
        prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
        excluded = False
        for negated, pattern in rules:
            if any(pattern.match(prefix) for prefix in prefixes):
                excluded = not negated
        if not excluded:
            kept.append(path)
    return kept


def test_the_image_has_the_product_and_nothing_to_try_or_measure_it():
    files = image_files()
    assert {"manage.py", "requirements.txt", "vxlanmgr/settings.py", "machines/models.py", "monitoring/checks.py",
            "templates/base.html", "static/css/app.css", "locale/ja/LC_MESSAGES/django.mo"} <= set(files)
    assert not [f for f in files if f.startswith("lab/")]
    assert not [f for f in files if "/tests/" in f or f.startswith("tests/") or f.endswith("conftest.py")]
    assert not [f for f in files if f.startswith((".ci/", ".git/", "docs/screenshots/"))]


def test_the_lab_commands_exist_only_with_the_lab_installed(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VXLANMGR_", "DATABASE_URL", "REDIS_URL"))}
    env.update(VXLANMGR_VAR_DIR=str(tmp_path), VXLANMGR_SECRET_KEY="x")

    def commands(**extra) -> str:
        return subprocess.run([sys.executable, "manage.py", "help", "--commands"], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.split()

    product = commands()
    assert "bench" not in product and "vxlanlab" not in product
    assert {"serve", "monitor", "bootstrap"} <= set(product)
    assert {"bench", "vxlanlab"} <= set(commands(VXLANMGR_LAB="1"))
