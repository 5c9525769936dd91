"""The front page and the docs (README.md, docs/*.md, benchmarks/README.md): a short front page,
a license and a citation, every number from a committed run, no dead link.

Numbers in README.md and docs/ come from committed runs (results/ or benchmarks/results/). The
`x ± y` figures are the ones a hand edit most easily gets wrong, so each must be found there: written
the same way in a committed table, or as a mean and a spread in one row or record of a committed
Markdown table, CSV or JSON file that round to x and y at the precision written.
"""
import csv
import io
import json
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import yaml
from conftest import ROOT

MAX_README_LINES = 250
RESULT_DIRS = ("results", "benchmarks/results")
RESULT_SUFFIXES = (".md", ".csv", ".json")
PLUS_MINUS = re.compile(r"(\d[\d,]*\.?\d*)\s*±\s*(\d[\d,]*\.?\d*)")
NUMBER = re.compile(r"^[+-]?\d[\d,]*\.?\d*(?:[eE][+-]?\d+)?$")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


# ---- `x ± y` figures --------------------------------------------------------------------------

def _clean(s: str) -> str:
    return s.rstrip(",").replace(",", "")


def figures(text: str) -> list[tuple[int, str, str]]:
    """Every `x ± y` figure in a text, one wrapped across lines included: (the line it starts on, x,
    y), thousands separators dropped."""
    return [(text.count("\n", 0, m.start()) + 1, _clean(m.group(1)), _clean(m.group(2)))
            for m in PLUS_MINUS.finditer(text)]


def committed_result_files(root: Path = ROOT) -> list[Path]:
    """The Markdown, CSV and JSON files under results/ and benchmarks/results/ that git tracks
    (without git, every such file there)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *RESULT_DIRS], cwd=root, check=True,
                             capture_output=True, text=True).stdout
        paths = [root / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for d in RESULT_DIRS for p in (root / d).rglob("*")]
    return sorted(p for p in paths if p.suffix in RESULT_SUFFIXES and p.is_file())


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and NUMBER.match(value.strip()):
        return float(value.strip().replace(",", ""))
    return None


def _json_records(node):
    """Each dict's (and each list's) own scalar values form a record; recurse into containers."""
    children = list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
    if not children:
        return
    numbers = [x for x in map(_number, children) if x is not None]
    if len(numbers) >= 2:
        yield numbers
    for child in children:
        if isinstance(child, (dict, list)):
            yield from _json_records(child)


def _table_records(text: str):
    """The numeric cells of each row of each Markdown table."""
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            numbers = [x for x in map(_number, line.strip().strip("|").split("|")) if x is not None]
            if len(numbers) >= 2:
                yield numbers


def _csv_records(text: str):
    for row in csv.reader(io.StringIO(text)):
        numbers = [x for x in map(_number, row) if x is not None]
        if len(numbers) >= 2:
            yield numbers


class Evidence:
    """What the committed result files hold: the literal `x ± y` strings, and numeric records."""

    def __init__(self, texts: dict[str, str]):
        self.literal: set[tuple[str, str]] = set()
        self.records: list[list[float]] = []
        for name, text in texts.items():
            self.literal.update((x, y) for _, x, y in figures(text))
            self.records.extend([float(x), float(y)] for _, x, y in figures(text))
            if name.endswith(".md"):
                self.records.extend(_table_records(text))
            elif name.endswith(".csv"):
                self.records.extend(_csv_records(text))
            elif name.endswith(".json"):
                try:
                    self.records.extend(_json_records(json.loads(text)))
                except json.JSONDecodeError:
                    pass

    @classmethod
    def of_files(cls, paths) -> "Evidence":
        return cls({str(p): p.read_text(encoding="utf-8", errors="replace") for p in paths})

    def holds(self, x: str, y: str) -> bool:
        if (x, y) in self.literal:
            return True
        return any(_rounds_pair(record, x, y) for record in self.records)


def _tolerance(written: str) -> float:
    decimals = len(written.split(".")[1]) if "." in written else 0
    return 0.5 * 10 ** -decimals + 1e-9


def _rounds_to(value: float, written: str) -> bool:
    return abs(value - float(written)) <= _tolerance(written)


def _rounds_pair(record: list[float], x: str, y: str) -> bool:
    """Two different fields of one record that round to x and to y as written."""
    xs = [i for i, v in enumerate(record) if _rounds_to(v, x)]
    return bool(xs) and any(_rounds_to(v, y) and any(i != j for i in xs) for j, v in enumerate(record))


def missing_figures(docs: dict[str, str], evidence: Evidence) -> list[str]:
    return [f"{name}:{line}: {x} ± {y}" for name, text in docs.items()
            for line, x, y in figures(text) if not evidence.holds(x, y)]


@lru_cache(maxsize=1)
def committed_evidence() -> Evidence:
    return Evidence.of_files(committed_result_files())


def test_every_plus_minus_figure_comes_from_a_committed_result():
    docs = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in doc_files()}
    assert sum(len(figures(t)) for t in docs.values()) > 20, "the checker found hardly any figures to check"
    missing = missing_figures(docs, committed_evidence())
    assert not missing, "figures that no committed file under results/ or benchmarks/results/ holds:\n" + "\n".join(missing)


def test_the_figure_checker_reports_what_no_result_holds():
    evidence = Evidence({
        "t.md": "| a | b |\n|---|---|\n| 22.13 ± 0.50 | x |\n| 11.38 | 1.625 |\n",
        "t.csv": "source,fid,fid_std\nvit-p,27.04,2.395\n",
        "t.json": json.dumps([{"fid": 38.67, "fid_std": 2.009, "n": 450}]),
    })
    text = ("found literally: 22.13 ± 0.50; rounded from a table row: 11.4 ± 1.6; from CSV: 27.0 ± 2.4;\n"
            "from JSON: 38.7 ± 2.0; made up: 12.34 ± 5.67\n"
            "rounded wrongly: 22.1 ± 0.4 and 27.04 ± 2.41; mean without its spread: 11.38 ± 11.38\n")
    assert missing_figures({"doc.md": text}, evidence) == [
        "doc.md:2: 12.34 ± 5.67", "doc.md:3: 22.1 ± 0.4", "doc.md:3: 27.04 ± 2.41", "doc.md:3: 11.38 ± 11.38"]
    assert figures("1,425.75 ± 2.88, and 2 se 0.5") == [(1, "1425.75", "2.88")]
    # a figure wrapped across lines is checked too, on the line it starts on
    assert missing_figures({"doc.md": "a line\nwrapped: 12.34 ±\n  5.67, found: 27.0 ±\n2.4"}, evidence) == [
        "doc.md:2: 12.34 ± 5.67"]
    # and against the committed results: a made-up figure is reported, a real one is not
    real = committed_evidence()
    assert missing_figures({"doc.md": "12.34 ± 5.67"}, real) == ["doc.md:1: 12.34 ± 5.67"]
    assert missing_figures({"doc.md": "22.9 ± 3.2 (GET-P/2 in the default's comparison)"}, real) == []


# ---- links -------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _strip_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    name = path.relative_to(root)
    for n, line in enumerate(_strip_code(path.read_text(encoding="utf-8")).splitlines(), 1):
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = Path(os.path.normpath(path.parent / file)) if file else path
            if "shared/" in file or not dest.is_relative_to(Path(os.path.normpath(root))):
                problems.append(f"{name}:{n}: {target} (outside the project)")
            elif not dest.exists():
                problems.append(f"{name}:{n}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{name}:{n}: {target} (no such heading)")
    return problems


def test_every_relative_link_resolves():
    links = sum(len(LINK.findall(_strip_code(p.read_text(encoding="utf-8")))) for p in doc_files())
    assert links > 20, "the checker found hardly any links to check"
    problems = [p for path in doc_files() for p in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_reports_dead_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.md").write_text("# A table\n")
    doc = tmp_path / "docs" / "d.md"
    doc.write_text(
        "# The `claims` profile: protocol\n"
        "[ok](../results/t.md) [ok](../results/t.md#a-table) [ok](#the-claims-profile-protocol) "
        "[ok](https://example.org/x.md) ![ok](../results/t.md)\n"
        "[dead](../results/u.md) ![dead](fig.png) [no heading](../results/t.md#b-table)\n"
        "`[in code](nowhere.md)` [outside](../../elsewhere.md)\n"
        "```\n[in a code block](nowhere.md)\n```\n")
    assert broken_links(doc, tmp_path) == [
        "docs/d.md:3: ../results/u.md (no such file)", "docs/d.md:3: fig.png (no such file)",
        "docs/d.md:3: ../results/t.md#b-table (no such heading)",
        "docs/d.md:4: ../../elsewhere.md (outside the project)"]


# ---- front page, license, citation -------------------------------------------------------------

def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= MAX_README_LINES
    for command in ("make repro", "make test"):
        assert command in readme
    # the claims table is linked, not copied by hand
    assert "results/claims/tables/claims.md" in readme
    assert "| claim |" not in readme


def test_the_readmes_reproduction_report_is_a_committed_one():
    """The report the README shows is a committed report file's text, line for line."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    path = re.search(r"\[the report\]\((results/reproduction-[^)]+\.md)\)", readme).group(1)
    shown = re.search(r"```text\n\$ make report\n(.*?)```", readme, re.S).group(1)
    assert shown.strip() == (ROOT / path).read_text(encoding="utf-8").strip()


def test_license_and_citation():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "Permission is hereby granted" in license_text
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    for key in ("cff-version", "title", "authors", "version", "license"):
        assert key in cff, key
    assert cff["license"] == "MIT"
    import tomllib
    assert str(cff["version"]) == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    papers = ([cff["preferred-citation"]] if "preferred-citation" in cff else []) + cff.get("references", [])
    assert papers, "CITATION.cff names no paper"
    assert any("2401.08639" in json.dumps(p, default=str) for p in papers)
    assert any(a.get("family-names") == "Geng" for p in papers for a in p.get("authors", []))


# ---- the pipeline's module table ---------------------------------------------------------------

STAGES = ("check", "data", "features", "teacher", "pairs", "distill", "evaluate", "figures")


def documented_module_stages(text: str) -> dict[str, set[str]]:
    """docs/pipeline.md's table `| module | stages that can run it |`: module -> stages."""
    table = text[text.index("| module | stages that can run it |"):].split("\n\n")[0].splitlines()[2:]
    out = {}
    for row in table:
        modules, stages = [c.strip() for c in row.strip().strip("|").split("|")]
        stages = re.sub(r"\(.*?\)", "", stages).strip()
        named = (set(STAGES) if stages == "all" else set(STAGES) - {s.strip() for s in stages.removeprefix("all but ").split(",")}
                 if stages.startswith("all but ") else {s.strip() for s in stages.split(",")})
        assert named <= set(STAGES), row
        for module in re.findall(r"`([^`]+\.py)`", modules):
            assert module not in out, f"{module} is listed twice"
            out[module] = named
    return out


def test_the_pipeline_docs_module_table_is_dvc_yamls():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed: dict[str, set[str]] = {}
    for name, stage in stages.items():
        for dep in (stage["do"] if "foreach" in stage else stage)["deps"]:
            if isinstance(dep, str) and dep.startswith("getlib/"):
                listed.setdefault(dep.removeprefix("getlib/"), set()).add(name)
    assert documented_module_stages((ROOT / "docs" / "pipeline.md").read_text(encoding="utf-8")) == listed
