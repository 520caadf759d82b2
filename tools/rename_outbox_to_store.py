"""Re-runnable rename for the store split: `gateway.outbox` -> `gateway.store`, class `Outbox` -> `Store`.

Run from the repository root: `python tools/rename_outbox_to_store.py [paths...]` (default: gateway tests
benchmarks and benchmarks/README.md). Idempotent: a file already renamed is left as it is, so it can be run
again after a rebase on whatever files others changed.

- Python: the module path everywhere (imports, strings, comments); the NAME token `Outbox` (the class);
  in comments and docstrings `Outbox` only where it names the class (`Outbox`, Outbox.x, Outbox(...)), not
  the concept ("a real Outbox file" stays). `OutboxRow`, `OutboxStats` and variables named `outbox` stay.
- A file that already imports the emulator's `Store` gets that one as `CloudStore`.
- Markdown: the module path and the class where it is code (`Outbox`, `Outbox.x`).
- Then ruff sorts the imports and formats the Python files it changed.
The store itself (gateway/store/) and tests/unit/test_architecture.py's layer table are edited by hand.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

MODULE = re.compile(r"(?<![\w.])gateway\.outbox\b")  # not `self.gateway.outbox` (an attribute)
IMPORT = re.compile(r"^(\s*)(from|import) gateway\.outbox\b", re.MULTILINE)
CLASS_IN_TEXT = re.compile(r"`Outbox`|\bOutbox(?=[.(])|(?<=\bimport )Outbox\b")  # also in a child's script
EMULATOR_IMPORT = re.compile(r"^from gateway\.emulator\.store import Store$", re.MULTILINE)
SKIP = {"tests/unit/test_architecture.py", "tools/rename_outbox_to_store.py"}


def _class_in_text(text: str) -> str:
    text = text.replace("an `Outbox`", "a `Store`")
    return CLASS_IN_TEXT.sub(lambda m: m.group(0).replace("Outbox", "Store"), text)


def rename_python(source: str) -> str:
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    rename = {"Outbox": "Store"}
    if any(t.type == tokenize.NAME and t.string == "Outbox" for t in tokens) and EMULATOR_IMPORT.search(source):
        rename["Store"] = "CloudStore"  # the emulator's Store, in a file that is about to meet ours
    starts = [0]  # offset of each line in source
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits: list[tuple[int, int, str]] = []  # (start offset, end offset, new text)
    for tok in tokens:
        start = starts[tok.start[0] - 1] + tok.start[1]
        end = starts[tok.end[0] - 1] + tok.end[1]
        if tok.type == tokenize.NAME and tok.string in rename:
            line = tok.line.lstrip()
            if tok.string == "Store" and line.startswith("from gateway.emulator.store import"):
                edits.append((start, end, "Store as CloudStore"))
            else:
                edits.append((start, end, rename[tok.string]))
        elif tok.type in (tokenize.COMMENT, tokenize.STRING):
            text = _class_in_text(MODULE.sub("gateway.store", tok.string))
            if text != tok.string:
                edits.append((start, end, text))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return IMPORT.sub(r"\1\2 gateway.store", source)  # `from gateway.outbox import`: a dotted path, not one token


def rename_markdown(text: str) -> str:
    return _class_in_text(MODULE.sub("gateway.store", text))


def main(argv: list[str]) -> int:
    targets = [Path(a) for a in argv] or [Path("gateway"), Path("tests"), Path("benchmarks")]
    files: list[Path] = []
    for target in targets:
        files += sorted(target.rglob("*.py")) + sorted(target.rglob("*.md")) if target.is_dir() else [target]
    changed: list[str] = []
    for path in files:
        rel = path.as_posix()
        if rel in SKIP or rel.startswith("gateway/store/") or rel == "gateway/outbox.py":
            continue
        old = path.read_text(encoding="utf-8")
        new = rename_python(old) if path.suffix == ".py" else rename_markdown(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(rel)
            print(f"renamed in {rel}")
    python = [f for f in changed if f.endswith(".py")]
    ruff = shutil.which("ruff", path=".venv/bin") or shutil.which("ruff")
    if python and ruff:  # `gateway.store` sorts elsewhere than `gateway.outbox` did; lines changed length
        subprocess.run([ruff, "check", "--select", "I", "--fix", "--quiet", *python], check=False)
        subprocess.run([ruff, "format", "--quiet", *python], check=False)
    print(f"{len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
