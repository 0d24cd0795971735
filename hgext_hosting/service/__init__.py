"""The service layer: every operation of the site, for every face.

The CLI (:mod:`hgext_hosting.admin`), the pages (:mod:`daemon.pages`) and the
API only parse their input, call one function here and render the result.
Each operation takes an :class:`~hgext_hosting.service.actors.Actor` (a user,
anonymous, or the console: the site administrator at the command line), decides
with :mod:`hgext_hosting.policy` whether the actor may, normalises and checks
its input, and refuses with a typed error from :mod:`hgext_hosting.errors`
(nothing changed), so that each face maps a refusal to its own status once.

- :mod:`.actors`: who acts, and the policy snapshots loaded for them;
- :mod:`.repos`: repositories (find, list, create, rename/transfer, fork,
  settings, remove), grants and protected refs;
- :mod:`.accounts`: users, teams and memberships, tokens, SSH keys;
- :mod:`.pushes`: the push log, read side;
- :mod:`.hooks`: webhooks (of a repository, a user, a team) and watching.

The disk-and-database mechanics of moving repositories stay in
:mod:`hgext_hosting.repositories`, credential checks for logging in in
:mod:`hgext_hosting.accounts`; this layer owns the rules.
"""
