"""The push log, read side: what the CLI, ``hg pushlog``, the pages and the API list."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import pushlog
from ..errors import Invalid
from ..models import Repository
from .actors import Actor
from .repos import find


def check_limit(limit: int | None) -> int | None:
    """``limit`` as the push log takes it: None for all, else at least 1 (Invalid otherwise)."""
    if limit is not None and limit < 1:
        raise Invalid("--limit must be at least 1", "limit")
    return limit


def recent(actor: Actor, full_name: str, limit: int | None = None) -> list[pushlog.PushView]:
    """The newest ``limit`` pushes (None: all) of a repository the actor may read, newest first."""
    repo = find(actor, full_name, "read")
    return pushlog.recent_pushes(repo, check_limit(limit))


@dataclass
class PushPage:
    pushes: list[pushlog.PushView]
    page: int
    pages: int
    total: int


def page(repo: Repository, number: int, per_page: int) -> PushPage:
    """Page ``number`` of a repository's push log, newest first.

    Push ids are contiguous per repository (a rolled-back push's id is reused),
    so the highest done id is the number of pushes and page N holds the ids from
    that id minus (N-1) pages down: an index probe and a range, whatever the
    history's length.  (Only ``check --repair`` leaves gaps, dropping pushes a
    strip emptied: the count then includes them and their pages show fewer rows.)
    ``repo`` was found for the actor already (the pages' and API's routing).
    """
    if number < 1:
        raise Invalid("page must be at least 1", "page")
    total = pushlog.last_push_id(repo)
    pushes = pushlog.pushes_up_to(repo, total - (number - 1) * per_page, per_page)
    return PushPage(pushes, number, max(1, math.ceil(total / per_page)), total)
