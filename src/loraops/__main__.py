"""The ``loraops`` command (also ``python -m loraops``).

Before anything heavy is imported, the process re-executes itself on the chosen malloc
(:mod:`loraops.core.allocator`: mimalloc unless ``LORAOPS_ALLOCATOR=system``), then runs the Typer app.
"""

import sys

from loraops.core.allocator import exec_on_chosen_allocator


def main() -> None:
    try:
        exec_on_chosen_allocator(["-m", "loraops", *sys.argv[1:]])
    except ValueError as exc:  # a bad LORAOPS_ALLOCATOR
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    from loraops.cli import app

    app(prog_name="loraops")


if __name__ == "__main__":
    main()
