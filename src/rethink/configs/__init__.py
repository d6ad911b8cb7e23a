"""The configs shipped inside the package: tiny/ (CPU), paper/ (the paper's recipes), studies/.

A config argument on the command line is a path to a file, or, where no such file exists, the name of a bundled
config relative to this folder (`tiny/faster_rcnn_gn.yaml`), so `rethink train tiny/faster_rcnn_gn.yaml` works
from any folder with the package installed. A file on disk wins: a user's own `tiny/...` is never shadowed.
"""

from importlib import resources
from pathlib import Path

from rethink.errors import UserError


def bundled_dir() -> Path:
    """The folder holding the bundled configs (a real folder: setuptools installs the package unzipped)."""
    return Path(str(resources.files("rethink.configs")))


def bundled_names() -> list[str]:
    """Every bundled config, as its name relative to bundled_dir() (`tiny/faster_rcnn_gn.yaml`)."""
    root = bundled_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.glob("*/*.yaml"))


def find_config(text: str) -> Path:
    """A config argument -> the file it names: an existing path as given, else a bundled config of that name."""
    path = Path(text)
    if path.is_file():
        return path
    bundled = bundled_dir() / text
    if not path.is_absolute() and bundled.is_file():
        return bundled
    if path.exists():
        raise UserError(f"{text}: not a file (a config is a YAML file)")
    raise UserError(f"{text}: config file not found, nor a bundled config of that name "
                    f"(bundled: {', '.join(bundled_names())})")
