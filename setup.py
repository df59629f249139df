"""Build step that pyproject.toml cannot express: ship the repository's top-level conf/ inside the wheel.

The Hydra configs stay at the top of the repository (the layout users asked for); an installed package finds
them as ``texface/conf`` (see ``texface.config.config_dir``).
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads conf/ from the checkout
            target = Path(self.build_lib) / "texface" / "conf"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
