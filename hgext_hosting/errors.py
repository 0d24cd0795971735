"""The one exception type whose message is shown to a user as ``error: ...``."""


class UserError(Exception):
    """A refusal with a one-line message fit for a user; nothing was changed."""
