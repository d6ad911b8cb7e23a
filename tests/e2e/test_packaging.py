"""The wheel carries the bundled configs, and a wheel's package finds them with no checkout around it."""

import shutil
import subprocess
import sys
import zipfile

from conftest import REPO
from rethink.configs import bundled_names


def test_wheel_ships_the_configs_and_finds_them_from_any_folder(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # no build isolation: setuptools from this environment, nothing fetched (~1 s)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "wheel").glob("rethink-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert {f"rethink/configs/{n}" for n in bundled_names()} <= names and "rethink/configs/__init__.py" in names
    # the unpacked wheel first on the path (ahead of this checkout's editable install), run from another folder:
    # bundled names resolve inside it
    code = ("import rethink.configs as c, rethink.study.plan as p; f = c.find_config('studies/demo_quick.yaml'); "
            "print(f); print(len(p.load_plan(f).runs))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    path, runs = out.stdout.split()
    assert path.startswith(str(tmp_path / "site" / "rethink" / "configs")) and int(runs) > 0
