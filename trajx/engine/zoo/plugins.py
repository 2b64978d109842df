"""See packages installed after this process started, so a new plug-in needs no restart.

`importlib.metadata` rescans site directories on every call, but two things are fixed
at start-up: the `.pth` files Python processed (an editable install or a package
outside site-packages is reachable only through one), and the import system's
directory caches. Before looking up entry points, process the `.pth` files that
appeared since the last look and drop the caches. `.pth` files seen before are never
run twice: their import lines (editable finders) would install themselves again.
"""

import importlib
import site
import sys
from pathlib import Path


def _pth_files() -> set[Path]:
    return {pth for directory in list(sys.path) if directory and Path(directory).is_dir()
            for pth in Path(directory).glob("*.pth")}


# What is there when trajx's zoo is first imported (at a worker's start): Python has
# processed those already.
_seen_pth: set[Path] = _pth_files()


def pick_up_new_installs() -> list[Path]:
    """Process `.pth` files that appeared on `sys.path` since the last call; return them."""
    found = _pth_files()
    new = sorted(found - _seen_pth)
    _seen_pth.update(found)
    known = set(sys.path)
    for pth in new:
        site.addpackage(str(pth.parent), pth.name, known)
    importlib.invalidate_caches()
    return new
