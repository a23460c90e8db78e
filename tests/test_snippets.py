"""Every snippet of the documentation runs: README.md, docs/*.md, the rendered dataset card and
the usage lines of examples/*.py, read from the text itself and run against tests/hubserver.py.

Convention (docs/development.md, "Snippets"): every fenced block has a language. `python` and
`bash` blocks run; `json` blocks must name the file they show (`shape-of PATH`) and are compared
with it; `text` blocks (output, trees, synopses) are not code. A block that cannot run here has
`<!-- snippet: skip (reason) -->` just before it and is still checked statically (it compiles;
every program it calls exists). `<!-- snippet: new-repo -->` runs a block against a repo id that
does not exist yet (uploads). In an example's docstring a usage line ending in
`# snippet: skip (reason)` is skipped the same way.

Each document runs top to bottom in its own folder with its own Hub repo (public, holding the
packed example), so bash blocks see the files earlier blocks made, as a reader following it
would. Substituted in the text: `USER/SOUSA`-style repo ids (USER|user|me / SOUSA|NAME) by the
document's repo, `https://huggingface.co` by the test server, `/data/` by the folder's `data/`
(which holds the example dataset as `data/sousa`); in examples, `PACKED_FOLDER_OR_REPO` and
`SOURCE` by the repo and `OUT_DIR` by a folder.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sousa_wds.pack import pack

from .hubserver import DEFAULT_TOKEN, HubServer

ROOT = Path(__file__).resolve().parents[1]
CARDS = {"dataset card": "shards", "dataset card (loose)": "loose"}  # document -> layout
DOCUMENTS = ["README.md", *(p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("docs/*.md"))),
             *CARDS, *(p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("examples/*.py")))]
RUN = {"python", "bash"}
NOT_CODE = {"text"}
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^<!--\s*snippet:\s*([\w-]+)\s*(.*?)\s*-->$")
LINE_MARKER = re.compile(r"#\s*snippet:\s*([\w-]+)\s*(.*)$")
REPO_ID = re.compile(r"\b(?:USER|user|me)/(?:SOUSA|NAME)\b")
DATA_PATH = re.compile(r"(?<![\w.])/data/")  # a path from the root, not a URL's /data/ part
TIMEOUT = 600
SEARCH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


# Runs python snippets one after the other, each as __main__ with its own globals.
DRIVER = r"""
import json, runpy, sys, traceback
results = []
for path in sys.argv[2:]:
    try:
        runpy.run_path(path, run_name="__main__")
        results.append(None)
    except SystemExit as exc:
        results.append(None if exc.code in (None, 0) else f"SystemExit({exc.code!r})")
    except BaseException:
        results.append(traceback.format_exc()[-3000:])
json.dump(results, open(sys.argv[1], "w"))
"""


@dataclass
class Block:
    where: str  # "file:line"
    lang: str
    code: str
    kind: str = "run"  # run | skip | new-repo | shape-of
    arg: str = ""  # the skip reason, or the file a json block shows


def markdown_blocks(text: str, name: str) -> list[Block]:
    """Fenced blocks with the marker (if any) on the last non-blank line before each."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang, start = match.group(1), match.group(2), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence))
        before = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = MARKER.match(before)
        kind, arg = (marker.group(1), marker.group(2)) if marker else ("run", "")
        blocks.append(Block(f"{name}:{start + 1}", lang, "\n".join(lines[start + 1:end]) + "\n",
                            kind, arg.strip("()")))
        i = end + 1
    return blocks


def example_blocks(path: Path) -> list[Block]:
    """The usage lines of an example's docstring, one bash block each."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    blocks = []
    for n, line in enumerate(doc.splitlines(), 2):
        command = line.strip()
        if command.startswith(("python examples/", "torchrun ")):
            marker = LINE_MARKER.search(command)
            kind, arg = (marker.group(1), marker.group(2).strip("()")) if marker else ("run", "")
            blocks.append(Block(f"{path.relative_to(ROOT)}:{n}", "bash", command + "\n", kind,
                                arg))
    return blocks


def json_shape_problems(shown: object, real: object, where: str = "$") -> list[str]:
    """Where the example's structure differs from the real file's (keys, lists, scalars)."""
    if isinstance(real, dict):
        if not isinstance(shown, dict):
            return [f"{where}: shown {type(shown).__name__}, real object"]
        problems = [f"{where}: key {k!r} {'missing' if k in real else 'not in the real file'}"
                    for k in sorted(set(real) ^ set(shown))]
        for key in set(real) & set(shown):
            problems += json_shape_problems(shown[key], real[key], f"{where}.{key}")
        return problems
    if isinstance(real, list):
        if not isinstance(shown, list) or not shown or not real:
            return [] if shown == real == [] else [f"{where}: shown and real lists differ"]
        return [p for item in shown for p in json_shape_problems(item, real[0], f"{where}[]")]
    if isinstance(shown, (dict, list)):
        return [f"{where}: shown {type(shown).__name__}, real {type(real).__name__}"]
    return []


def program_problems(code: str) -> list[str]:
    """Programs a skipped bash block calls that exist neither on PATH nor in the checkout."""
    problems = []
    for line in code.splitlines():
        for command in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
            words = shlex.split(command, comments=True)
            while words and "=" in words[0]:
                words = words[1:]  # VAR=value prefixes
            found = words and (shutil.which(words[0], path=SEARCH) or (ROOT / words[0]).is_file())
            if words and not found:
                problems.append(f"no program {words[0]!r} (not on PATH, not in the checkout)")
    return problems


def static_problems(block: Block) -> list[str]:
    if block.lang == "python":
        try:
            compile(block.code, block.where, "exec")
        except SyntaxError as exc:
            return [f"does not compile: {exc}"]
        return []
    if block.lang == "bash":
        proc = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        return ([proc.stderr.strip()] if proc.returncode else []) + program_problems(block.code)
    return []


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    with HubServer(tmp_path_factory.mktemp("snippet-hub")) as server:
        yield server


@pytest.fixture(scope="module")
def cards(example_dataset: Path, hub: HubServer,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each layout's card as pack renders it for the repo it is uploaded to (uploaded there)."""
    texts = {}
    for document, layout in CARDS.items():
        out = tmp_path_factory.mktemp("card") / "out"
        pack(example_dataset, out, shard_size=2_000_000, workers=1,
             no_sharding=layout == "loose", repo_id=repo_for(document))
        upload_files(hub, repo_for(document), out)
        texts[document] = (out / "README.md").read_text()
    return texts


def repo_for(document: str) -> str:
    return "testuser/" + re.sub(r"[^A-Za-z0-9]+", "-", document).strip("-").lower()


def upload_files(hub: HubServer, repo: str, folder: Path) -> None:
    hub.create_repo(repo)
    hub.put_files(repo, {p.relative_to(folder).as_posix(): p.read_bytes()
                         for p in sorted(folder.rglob("*")) if p.is_file()})


def document_blocks(document: str, cards: dict[str, str]) -> list[Block]:
    if document in CARDS:
        return markdown_blocks(cards[document], document)
    if document.endswith(".py"):
        return example_blocks(ROOT / document)
    return markdown_blocks((ROOT / document).read_text(), document)


# --- running one block ----------------------------------------------------------------------


class Runner:
    """One document's folder, repo and environment; runs its blocks in order."""

    def __init__(self, document: str, hub: HubServer, work: Path, packed: Path,
                 example: Path) -> None:
        self.document, self.hub, self.work, self.packed = document, hub, work, packed
        self.repo = repo_for(document)
        (work / "data").mkdir(parents=True)
        shutil.copytree(example, work / "data" / "sousa")  # copies: snippets may write there
        shutil.copytree(packed, work / "out")  # (upload re-renders the card in place)
        for folder in ("examples", "scripts", "benchmarks"):
            (work / folder).symlink_to(ROOT / folder)
        self.env = hub.client_env(work / "hf", token=DEFAULT_TOKEN) | {
            "PATH": SEARCH,
            "PYTHONPATH": str(ROOT),
        }
        self.fresh = 0

    def substitute(self, block: Block, repo: str) -> str:
        code = REPO_ID.sub(repo, block.code).replace("https://huggingface.co", self.hub.url)
        code = DATA_PATH.sub(f"{self.work}/data/", code)
        if self.document.endswith(".py"):
            code = re.sub(r"\b(PACKED_FOLDER_OR_REPO|SOURCE)\b", repo, code)
            code = code.replace("OUT_DIR", str(self.work / "out_dir"))
        return code

    def run_python(self, blocks: list[tuple[int, Block]]) -> list[str | None]:
        """Consecutive python blocks, each as `__main__` in a fresh namespace, in one
        interpreter (imports are paid once); the failure of each as text, or None."""
        scripts = []
        for n, block in blocks:
            scripts.append(self.work / f"snippet{n}.py")
            scripts[-1].write_text(self.substitute(block, self.repo_of(block)))
        report = self.work / f"report{blocks[0][0]}.json"
        error = self.subprocess([sys.executable, "-c", DRIVER, str(report), *map(str, scripts)])
        if error:
            return [error] * len(blocks)
        return json.loads(report.read_text())

    def repo_of(self, block: Block) -> str:
        if block.kind != "new-repo":
            return self.repo
        self.fresh += 1
        return f"{self.repo}-new{self.fresh}"

    def subprocess(self, cmd: list[str]) -> str | None:
        try:
            proc = subprocess.run(cmd, cwd=self.work, env=self.env, capture_output=True,
                                  text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"timed out after {TIMEOUT} s"
        if proc.returncode:
            return f"exit {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}"
        return None

    def run(self, block: Block) -> str | None:
        """Run one json or bash block; the failure as text, or None."""
        if block.kind == "shape-of":
            real = json.loads((self.packed / block.arg).read_text())
            try:
                shown = json.loads(block.code)
            except ValueError as exc:
                return f"not valid JSON ({exc}): show a real {block.arg}"
            return "; ".join(json_shape_problems(shown, real)) or None
        code = self.substitute(block, self.repo_of(block))
        return self.subprocess(["bash", "-c", "set -euo pipefail\n" + code])


def block_problem(block: Block) -> str | None:
    """Why a block breaks the convention, before running anything."""
    if not block.lang:
        return "fence has no language: use python/bash (run), json (shape-of), or text"
    if block.kind not in ("run", "skip", "new-repo", "shape-of"):
        return f"unknown snippet marker {block.kind!r}"
    if block.kind == "skip":
        if not block.arg:
            return "skip marker without a reason in parentheses"
        return "; ".join(static_problems(block)) or None
    if block.lang == "json":
        return None if block.kind == "shape-of" else "json block without `shape-of PATH` marker"
    if block.lang not in RUN | NOT_CODE:
        return f"language {block.lang!r} cannot run here: mark it skip (reason) or use text"
    return None


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_snippet_runs(document: str, request: pytest.FixtureRequest, hub: HubServer,
                            packed: Path, example_dataset: Path, tmp_path: Path) -> None:
    cards = request.getfixturevalue("cards") if document in CARDS else {}
    blocks = document_blocks(document, cards)
    if any("load_dataset" in block.code for block in blocks):
        request.getfixturevalue("audio_decoding")  # datasets decodes the Audio column
    if document not in CARDS:
        upload_files(hub, repo_for(document), packed)
    runner = Runner(document, hub, tmp_path / "work", packed, example_dataset)
    failures, python = [], []

    def flush() -> None:
        for (_, block), problem in zip(python, runner.run_python(python) if python else []):
            if problem:
                failures.append(f"{block.where} (python): {problem}")
        python.clear()

    for n, block in enumerate(blocks):
        problem = block_problem(block)
        if problem is None and block.kind != "skip" and block.lang not in NOT_CODE:
            if block.lang == "python":
                python.append((n, block))
                continue
            flush()
            problem = runner.run(block)
        if problem:
            failures.append(f"{block.where} ({block.lang or 'no language'}): {problem}")
    flush()
    assert not failures, "\n\n".join(failures)


def test_skipped_snippets_are_listed_with_their_reasons(cards: dict[str, str]) -> None:
    skipped = [b for d in DOCUMENTS for b in document_blocks(d, cards) if b.kind == "skip"]
    for block in skipped:
        print(f"skipped {block.where}: {block.arg}")
    assert all(block.arg for block in skipped)
    assert all(len(document_blocks(d, cards)) >= 4 for d in CARDS), "a card lost its snippets"


def test_the_harness_catches_broken_snippets(tmp_path: Path) -> None:
    text = ("<!-- snippet: skip (needs a GPU) -->\n```bash\n/work/venv/bin/python x.py\n```\n"
            "```\nsousa-wds verify OUT\n```\n"
            "<!-- snippet: shape-of manifest.json -->\n```json\n{\"format\": 1}\n```\n")
    first, second, third = markdown_blocks(text, "t.md")
    assert "no program '/work/venv/bin/python'" in block_problem(first)
    assert "no language" in block_problem(second)
    assert (third.kind, third.arg) == ("shape-of", "manifest.json")
    assert json_shape_problems({"format": 1}, {"format": 1, "layout": "shards"}) == [
        "$: key 'layout' missing"]
    assert json_shape_problems({"a": [{"b": 1}]}, {"a": [{"b": 2, "c": 3}]}) == [
        "$.a[]: key 'c' missing"]
