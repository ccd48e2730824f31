"""Print the pinned requirements of pyproject.toml for the given extras, one per line.

The image installs these in a layer of their own, before the source is copied, so that
editing code does not reinstall the dependencies.

    python requirements.py pyproject.toml service
"""

import sys
import tomllib


def main(pyproject: str, *extras: str) -> None:
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(requirements))


if __name__ == "__main__":
    main(*sys.argv[1:])
