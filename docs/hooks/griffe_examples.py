"""Griffe extension for the API page: render ``Example:`` docstring sections as doctest code.

The package's docstrings use Google style with a singular ``Example:`` heading, which Griffe
treats as a free-text admonition: the ``>>>`` lines would be rendered as Markdown paragraphs (and
``[0, 1]`` read as a link). Renaming the heading to ``Examples:`` when the docs are built makes
Griffe parse them as an examples section, rendered as highlighted Python console blocks. The
source files are not touched. Loaded by ``mkdocs.yml`` (mkdocstrings ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rewrite each docstring's ``Example:`` heading to ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
