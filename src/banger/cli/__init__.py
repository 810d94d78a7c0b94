"""banger.cli: the ``banger`` command line.

Start-up time matters here (every command pays it): `import httpx` (0.28)
eagerly imports httpx's own command-line client, which pulls in rich, pygments
and click extras, about 40 ms of every ``banger`` run (measured by
``bench/cli_latency.py``). An empty stand-in for that one module, registered
before anything imports httpx, makes httpx fall back to its "CLI not
installed" stub. banger never runs httpx's CLI.
"""

import sys
from types import ModuleType

sys.modules.setdefault("httpx._main", ModuleType("httpx._main"))
