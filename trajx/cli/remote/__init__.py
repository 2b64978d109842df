"""Remote commands (HTTP client for people and CI) and `trajx demo`.

Importing this registers the commands on `trajx.cli.app.app`; nothing here
imports torch at import time.
"""

from trajx.cli import demo  # noqa: F401  (registers `trajx demo`)
from trajx.cli.remote import (
    commands,  # noqa: F401  (registers the remote commands)
    ready,  # noqa: F401  (registers `trajx ready`)
)
