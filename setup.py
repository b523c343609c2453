"""Build script. Metadata lives in pyproject.toml; this file exists for the optional
compiled extension, which later versions build from ext/."""

from setuptools import setup

setup()
