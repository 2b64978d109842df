"""The client and the remote CLI never import torch (a client-only install has none)."""

import subprocess
import sys


def test_client_and_cli_import_without_torch():
    code = ("import sys, trajx, trajx.client, trajx.cli.remote; "
            "trajx.Client; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
