"""Regenerate (``--write``) or check the registry's tables in README.md,
docs/method-options.md and pyproject.toml.

The README's table of ``strategy`` values, docs/method-options.md's table of
method-owned run-config keys, and those keys' defaults in ``pyproject.toml`` (Flower
accepts only ``--run-config`` keys listed there) are generated from
``fedunl_flwr.methods``: after adding or changing a method, run
``python scripts/method_tables.py --write``. Without ``--write`` the script exits 1 when
a file differs (``tests/test_methods.py`` does the same check).

Usage::

    python scripts/method_tables.py [--write]
"""

from __future__ import annotations

import argparse
import sys

import bench_utils  # noqa: F401  (puts the project on sys.path)

from fedunl_flwr.config import PROJECT_ROOT
from fedunl_flwr.methods import GENERATED_BLOCKS, render_generated


def generated_files() -> dict[str, tuple[str, str]]:
    """File name -> (current text, generated text)."""
    texts = {name: (PROJECT_ROOT / name).read_text() for name, *_ in GENERATED_BLOCKS}
    new = dict(texts)
    for name, begin, end, render in GENERATED_BLOCKS:
        new[name] = render_generated(new[name], begin, end, render())
    return {name: (texts[name], new[name]) for name in texts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the files")
    args = parser.parse_args()
    files = generated_files()
    stale = [name for name, (old, new) in files.items() if old != new]
    if args.write:
        for name in stale:
            (PROJECT_ROOT / name).write_text(files[name][1])
        print(f"rewrote {', '.join(stale) or 'nothing (up to date)'}")
        return 0
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/method_tables.py --write")
        return 1
    print(f"{', '.join(files)} match the method registry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
