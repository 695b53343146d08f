"""The code blocks of the README and docs/, as the documents mark them for the tests.

A block is marked by the HTML comment before it (invisible when rendered):

* ``<!-- readme-test: file NAME -->``: a module, written to NAME as it stands;
* ``<!-- readme-test: output of NAME -->``: what running NAME prints;
* ``<!-- readme-test: in a workflow, with shop.py[; workers on Q1, Q2]; succeeds -->`` or
  ``...; undoes A, B -->``: statements that run inside a workflow's run method, with
  the README's ``shop.py`` in scope (and workers serving its activities on the task
  queues named), and how the saga ends: it succeeds, or it is undone (the shop's card
  is always declined), with the steps named compensated;
* ``<!-- readme-test: excerpt of PATH -->``: lines of PATH in this repository, as they
  stand there (that file is tested on its own).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"^(?:[ ]*<!-- readme-test: (?P<mark>[^>]*?) -->\n)?"
    r"(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<code>.*?)^[ ]*```",
    re.M | re.S,
)


@dataclass(frozen=True)
class Block:
    document: str
    mark: str | None
    lang: str
    code: str


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of the document, with its mark if it has one."""
    return [
        Block(path.name, m["mark"], m["lang"], textwrap.dedent(m["code"]))
        for m in _BLOCK.finditer(path.read_text())
    ]


def marked(mark: str) -> str:
    """The code of the one block marked ``mark``, in the README or docs/."""
    [found] = [b.code for document in DOCUMENTS for b in blocks(document) if b.mark == mark]
    return found
