"""Print the pins for constraints.txt: the installed versions of soupbench[test]'s dependency closure.

Run it in the environment the tests just passed in; it reads installed metadata only (no registry).
torch's local label (+cpu) is dropped so that the pin also matches a CUDA build of the same version.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re

from packaging.requirements import Requirement

HEADER = """# The versions SoupBench is tested and released with (pip install -c constraints.txt ...).
# The micro release's weights and reference results were built with these; pyproject keeps the ranges.
# Regenerate after an upgrade that passes the tests: python scripts/pin_constraints.py > constraints.txt"""


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed name -> version of `root` and everything it requires (with `extras`), recursively."""
    seen: dict[str, str] = {}

    def walk(name: str, wanted: tuple[str, ...]) -> None:
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return
        if key in seen and not wanted:
            return
        seen[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or ("",))):
                continue
            walk(req.name, tuple(req.extras))

    walk(root, extras)
    seen.pop(root, None)
    return seen


if __name__ == "__main__":
    print(HEADER)
    for name, version in sorted(closure("soupbench", ("test",)).items()):
        print(f"{name}=={version.split('+')[0] if name == 'torch' else version}")
