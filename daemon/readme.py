"""A repository's README as HTML, with bounded cost whatever was pushed.

Markdown (``README.md``, ``README.markdown``) is rendered by markdown-it
(CommonMark and tables, raw HTML disabled); every other README name is plain
text, escaped inside ``<pre>``.  Only the first :data:`MAX_MARKDOWN_BYTES`
(Markdown) or :data:`MAX_BYTES` (text) are shown, decoded as UTF-8 with
invalid bytes replaced, with a note when the file was cut.

markdown-it costs 20-40 µs of CPU per byte on some inputs (``![`` repeated:
every ``[`` scans ahead for its label; ``[``, ``*_``, ``*a`` and long tables
are close behind): 5-18 s for a 512 KB README.  So the render runs under a CPU
budget, :data:`BUDGET_SECONDS` of this thread's time, checked every few calls
by a rule in the block chain (first), a rule in the inline chain (right after
the rule that consumes a run of plain text, so every markup character passes
it, including those of the look-ahead for link labels) and on every block
token (one call of the table rule consumes a whole table).  Past the budget
the render is abandoned and the README shown as escaped text.  The budget
counts CPU time, not wall time, so a busy machine does not push an ordinary
README over it; it costs an ordinary README 10-20% more time.
"""

from __future__ import annotations

import html
import time

from markdown_it import MarkdownIt
from markdown_it.parser_block import ParserBlock
from markdown_it.rules_block import StateBlock

#: README file names, in order of preference (matched case-insensitively at the root).
README_NAMES = (b"README.md", b"README.markdown", b"README.rst", b"README.txt", b"README")
MARKDOWN_SUFFIXES = (b".md", b".markdown")
#: Bytes of a README that are shown; the rest is cut, with a note.
MAX_BYTES = 256 * 1024
#: Bytes of a Markdown README that are formatted (the rest is cut, with a note).
MAX_MARKDOWN_BYTES = 128 * 1024
#: CPU seconds (this thread's) a Markdown render may take before it is abandoned.
BUDGET_SECONDS = 0.5
_CHECK_EVERY = 32

_ENV_DEADLINE = "hosting_deadline"
_ENV_CALLS = "hosting_calls"


class OverBudget(Exception):
    """The render took more than its CPU budget."""


def _check(env: dict) -> None:
    calls = env[_ENV_CALLS] = env[_ENV_CALLS] + 1
    if not calls % _CHECK_EVERY and time.thread_time() > env[_ENV_DEADLINE]:
        raise OverBudget


def _block_rule(state, start_line: int, end_line: int, silent: bool) -> bool:
    _check(state.env)
    return False


def _inline_rule(state, silent: bool) -> bool:
    _check(state.env)
    return False


class _BudgetedStateBlock(StateBlock):
    """Checks the budget on every block token: one table rule call consumes a whole table."""

    def push(self, ttype, tag, nesting):
        _check(self.env)
        return super().push(ttype, tag, nesting)


class _BudgetedParserBlock(ParserBlock):
    def parse(self, src, md, env, outTokens):
        if not src:
            return None
        state = _BudgetedStateBlock(src, md, env, outTokens)
        self.tokenize(state, state.line, state.lineMax)
        return state.tokens


def _make_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    block = _BudgetedParserBlock()
    block.ruler = md.block.ruler  # the rules as "commonmark" and .enable() configured them
    md.block = block
    md.block.ruler.before(md.block.ruler.get_all_rules()[0], "hosting_budget", _block_rule)
    # After "text", which consumes a run of ordinary characters in one call: every
    # other position (all of them in the slow inputs, which are made of markup) comes here.
    md.inline.ruler.after("text", "hosting_budget", _inline_rule)
    return md


_markdown = _make_markdown()


def is_markdown(name: bytes) -> bool:
    return name.lower().endswith(MARKDOWN_SUFFIXES)


def render(name: bytes, data: bytes, budget: float = BUDGET_SECONDS) -> str:
    """The HTML of a README called ``name`` holding ``data`` (safe to insert as is)."""
    markdown = is_markdown(name)
    limit = MAX_MARKDOWN_BYTES if markdown else MAX_BYTES
    text = data[:limit].decode("utf-8", "replace")
    note = (f'<p class="note">Only the first {limit // 1024} KB of this file '
            f"({len(data) // 1024} KB) are shown.</p>") if len(data) > limit else ""
    if markdown:
        env = {_ENV_DEADLINE: time.thread_time() + budget, _ENV_CALLS: 0}
        try:
            return note + _markdown.render(text, env)
        except OverBudget:
            note += '<p class="note">This file is shown as plain text: it takes too long to format.</p>'
        except RecursionError:
            note += '<p class="note">This file is shown as plain text: it is nested too deeply to format.</p>'
    return note + "<pre>" + html.escape(text, quote=False) + "</pre>"
