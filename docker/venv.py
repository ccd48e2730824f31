"""Set up an image's virtual environment from pyproject.toml, independently of the source code.

    python venv.py requirements pyproject.toml service    # the pinned requirements of the base
                                                           # dependencies plus these extras
    python venv.py project pyproject.toml                  # "<name> <version>"
    python venv.py link scratchnet 0.1.0 /opt/scratchnet   # make the source folder importable

The images install the pinned dependencies in a layer keyed on the requirement list alone (so
an edit elsewhere in pyproject.toml, or to the code, does not reinstall them), and copy the
packages (shared/, service/ or trainer/) in afterwards. `link` does what an editable install
would: a .pth file puts the source folder on sys.path, and a minimal .dist-info lets
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
    metadata = read_project(pyproject)
    lines = list(metadata["dependencies"])
    for extra in extras:
        lines += metadata["optional-dependencies"][extra]
    print("\n".join(lines))


def project(pyproject: str) -> None:
    metadata = read_project(pyproject)
    print(metadata["name"], metadata["version"])


def link(name: str, version: str, source: str) -> None:
    site_packages = Path(sysconfig.get_paths()["purelib"])
    (site_packages / f"{name}.pth").write_text(source + "\n")
    dist_info = site_packages / f"{name}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"requirements": requirements, "project": project, "link": link}[command](*arguments)
