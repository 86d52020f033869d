"""Every code folder is a listed package: pyproject.toml lists packages by hand (the four code folders
live outside gpuserve/), and a folder missing from the list is missing from the wheel the CUDA image
installs, though the editable install used here never notices."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_python_is_a_listed_package():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    missing = []
    for package, folder in setup["package-dir"].items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.parent.relative_to(ROOT / folder).parts
            if "__pycache__" in parts:
                continue
            name = ".".join((package,) + parts)
            if name not in listed and name not in missing:
                missing.append(name)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
