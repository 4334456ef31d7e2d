"""Build hook: the wheel carries the browser UI (top-level static/ and templates/) in the package.

The two folders stay at the top of the repository (plain files, no build step); the build copies
them to ``server/static`` and ``server/templates``, where ``server.http.ui`` finds them with
``importlib.resources``. An editable install keeps serving them from the source tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

UI_DIRS = ("static", "templates")


class BuildPyWithUi(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for name in UI_DIRS:
            target = Path(self.build_lib) / "server" / name
            shutil.rmtree(target, ignore_errors=True)  # a file deleted from the tree leaves the wheel too
            shutil.copytree(root / name, target)


setup(cmdclass={"build_py": BuildPyWithUi})
