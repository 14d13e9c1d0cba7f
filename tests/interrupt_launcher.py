"""Run an entry script as `python src/<script>.py` runs it, and send it SIGINT at a chosen moment:

    python interrupt_launcher.py import:<module> src/fetch.py [args]  # <module> first imported
    python interrupt_launcher.py open:<text> src/fetch.py [args]      # a file *<text>* opened
    python interrupt_launcher.py print src/fetch.py [args]            # its first line on stdout

The moment is an event of the script's own, not a delay, so every run interrupts the same step.
"""

from __future__ import annotations

import importlib.abc
import os
import runpy
import signal
import sys
from pathlib import Path
from typing import Any


def interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)


class OnImport(importlib.abc.MetaPathFinder):
    def __init__(self, module: str) -> None:
        self.module = module

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == self.module:
            sys.meta_path.remove(self)
            interrupt()
        return None  # the import itself goes on as usual


class OnPrint:
    """stdout that interrupts at the first text written to it."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.fired = stream, False

    def write(self, text: str) -> int:
        if not self.fired and text.strip():
            self.fired = True
            interrupt()
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def on_open(text: str) -> None:
    fired = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and not fired and text in str(args[0]):
            fired.append(True)
            interrupt()

    sys.addaudithook(hook)


def main() -> None:
    moment, script, *args = sys.argv[1:]
    kind, _, what = moment.partition(":")
    if kind == "import":
        sys.meta_path.insert(0, OnImport(what))
    elif kind == "open":
        on_open(what)
    else:
        sys.stdout = OnPrint(sys.stdout)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
