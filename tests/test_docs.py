"""The docs hold together: generated tables match their JSON, relative links and anchors resolve,
and the README still shows the commands .ci/run runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_code = not in_code
            continue
        if not in_code:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_every_page_exists():
    assert (REPO / "docs").is_dir()
    assert len(PAGES) > 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_generated_tables_are_current():
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "render_tables.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr + res.stdout


def test_readme_shows_the_commands_ci_runs():
    """.ci/run installs and tests "exactly as the README says": each of those lines is in the README."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    readme = (REPO / "README.md").read_text()
    wanted = []
    for i, line in enumerate(ci):
        if line.startswith("# --- the README's"):
            wanted.append(ci[i + 1].strip())
    assert wanted, "no '# --- the README's ...' sections in .ci/run"
    missing = [w for w in wanted if not re.search(rf"^{re.escape(w)}\s*$", readme, re.M)]
    assert not missing, f"in .ci/run but not a line of README.md: {missing}"


def test_the_readme_round_runs_as_written(tmp_path, monkeypatch):
    """The README's round from training to a comparison of methods runs line by line in a fresh folder,
    and its comparison has a row for every method (a method over its budget as a row with its error)."""
    import json
    import shlex

    from typer.testing import CliRunner

    from refine.cli import app

    readme = (REPO / "README.md").read_text()
    after = readme.split("A full round, from training to a comparison of methods:", 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [
        ["refine", "train"],
        ["refine", "fit-ratio"],
        ["refine", "sample"],
        ["refine", "eval"],
    ]
    for cmd in commands:
        res = CliRunner().invoke(app, cmd[1:])
        assert res.exit_code == 0, f"{shlex.join(cmd)}:\n{res.output}"
    methods = commands[-1][commands[-1].index("--methods") + 1].split(",")
    rows = json.loads((tmp_path / "runs" / "eval" / "eval.json").read_text())["rows"]
    assert [r["method"] for r in rows] == methods
    assert all(("error" in r) != ("hq_fraction" in r) for r in rows) and "error" not in rows[0]
