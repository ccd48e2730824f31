"""Set up an image's virtual environment from pyproject.toml, independently of the source code.

    python venv.py requirements pyproject.toml service   # print the pinned requirements of the
                                                          # base dependencies plus these extras
    python venv.py link pyproject.toml /opt/scratchnet    # make the source folder importable

The images install the pinned dependencies in a layer that only changes with pyproject.toml,
and copy the packages (shared/, service/ or trainer/) in afterwards, so editing code rebuilds
a few small layers instead of the environment. `link` does what an editable install would:
a .pth file puts the source folder on sys.path, and a minimal .dist-info lets
importlib.metadata report the project's name and version.
"""

import sys
import sysconfig
import tomllib
from pathlib import Path


def read_project(pyproject: str) -> dict:
    with open(pyproject, "rb") as file:
        return tomllib.load(file)["project"]


def requirements(pyproject: str, *extras: str) -> None:
    project = read_project(pyproject)
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    print("\n".join(lines))


def link(pyproject: str, source: str) -> None:
    project = read_project(pyproject)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    (site_packages / f"{project['name']}.pth").write_text(source + "\n")
    dist_info = site_packages / f"{project['name']}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"requirements": requirements, "link": link}[command](*arguments)
