# The name under which Mercurial loads the extension ([extensions] hosting =), in
# Mercurial's namespace for third-party extensions; the code is in hgext_hosting.
import hgext_hosting as _impl
from hgext_hosting import (  # noqa: F401 - the extension's interface to Mercurial
    cmdtable,
    configtable,
    minimumhgversion,
    reposetup,
    testedwith,
    uisetup,
)

__doc__ = _impl.__doc__
