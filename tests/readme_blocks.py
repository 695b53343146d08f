"""The README's code blocks, as the README marks them for its tests.

A block is marked by the HTML comment before it (invisible on GitHub):

* ``<!-- readme-test: file NAME -->``: a module, written to NAME as it stands;
* ``<!-- readme-test: output of NAME -->``: what running NAME prints;
* ``<!-- readme-test: in a workflow, with NAME -->``: statements that run inside a
  workflow's run method, in module NAME's namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S
)


@dataclass(frozen=True)
class Block:
    mark: str | None
    lang: str
    code: str


def blocks(path: Path = README) -> list[Block]:
    """Every fenced block of the file, with its mark if it has one."""
    return [Block(m["mark"], m["lang"], m["code"]) for m in _BLOCK.finditer(path.read_text())]


def marked(mark: str, path: Path = README) -> str:
    """The code of the one block marked ``mark``."""
    [found] = [b.code for b in blocks(path) if b.mark == mark]
    return found
