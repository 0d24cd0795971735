"""The refusals an operation raises, each a :class:`UserError` with a one-line message.

Every operation of the service layer (:mod:`hgext_hosting.service`) refuses with
one of these, and changes nothing when it does.  The faces map them once each:

========================  ==========  =========  ========
error                     CLI         pages      API
========================  ==========  =========  ========
:class:`NotFound`         ``error:``  404        404
:class:`Forbidden`        ``error:``  403        403
:class:`Invalid`          ``error:``  400        422
:class:`Conflict`         ``error:``  400        409
:class:`Throttled`        ``error:``  429        429
any other UserError       ``error:``  400        400
========================  ==========  =========  ========

A private repository the actor may not read is :class:`NotFound`, with the
same message as a missing one: the answer must not tell them apart.
"""

from __future__ import annotations


class UserError(Exception):
    """A refusal with a one-line message fit for a user; nothing was changed."""


class NotFound(UserError):
    """The thing named does not exist, or the actor may not know that it does."""


class Forbidden(UserError):
    """The actor may see the thing but not do this to it."""


class Invalid(UserError):
    """A value is malformed or out of range; ``field`` names the input at fault."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Conflict(UserError):
    """The request clashes with what exists: a name taken, an owner that still owns."""


class Throttled(UserError):
    """Too many attempts; ``retry_after`` seconds until the next may succeed."""

    def __init__(self, message: str, retry_after: int = 60):
        super().__init__(message)
        self.retry_after = retry_after
