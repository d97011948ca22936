"""Builds seg-runtime outside the source tree: ``pip install ./export`` leaves no ``export/build/`` behind.

Everything else is in pyproject.toml. setuptools builds in ``build/`` beside the sources by default,
where files removed from the sources would live on into later wheels; here each build gets a temporary
folder, removed when the build process ends.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from setuptools import setup

BUILD = tempfile.mkdtemp(prefix="seg-runtime-build-")
atexit.register(shutil.rmtree, BUILD, ignore_errors=True)
setup(options={"build": {"build_base": BUILD}, "egg_info": {"egg_base": BUILD}})
