"""The docs stay true: the config reference names every dataclass key (and no other), and own-data.md's worked
example runs as written on a generated set."""

import dataclasses
import re
import shlex
from pathlib import Path

from conftest import REPO, make_coco, run_cli
from rethink.config import PretrainConfig, RunConfig
from rethink.fileio import read_json

KEY = re.compile(r"^\| `([a-z0-9_.]+)` \|")


def dataclass_keys(cls, prefix: str = "") -> set[str]:
    """Every key a user can set: the dotted paths of the leaves of a config dataclass."""
    keys = set()
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            keys |= dataclass_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(prefix + f.name)
    return keys


def documented_keys() -> dict[str, set[str]]:
    """The keys of docs/config.md's tables, per top-level section (## ... (RunConfig) / (PretrainConfig))."""
    sections, current = {}, None
    for line in (REPO / "docs" / "config.md").read_text().splitlines():
        heading = re.match(r"^## .*\((\w+)\)$", line)
        if heading:
            current = sections.setdefault(heading.group(1), set())
        match = KEY.match(line)
        if match and current is not None:
            current.add(match.group(1))
    return sections


def test_config_reference_names_every_key_and_no_other():
    documented = documented_keys()
    for cls in (RunConfig, PretrainConfig):
        fields, docs = dataclass_keys(cls), documented[cls.__name__]
        assert not fields - docs, f"{cls.__name__} keys missing from docs/config.md: {sorted(fields - docs)}"
        assert not docs - fields, f"docs/config.md names keys {cls.__name__} lacks: {sorted(docs - fields)}"


def example_commands() -> list[list[str]]:
    text = (REPO / "docs" / "own-data.md").read_text()
    block = text.split("```bash example\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("rethink ")]


def test_own_data_worked_example_runs_as_written(tmp_path):
    import torch
    from safetensors.torch import save_file

    from rethink.models import backbone as bb

    make_coco(tmp_path / "my_coco", n_train=240, n_val=60, size=128, seed=3)
    torch.manual_seed(5)
    body, _ = bb.build_resnet("tiny", "gn", (16, 32, 64, 128), (1, 1, 1, 1), 8)  # fits tiny/faster_rcnn_gn.yaml
    save_file({k: v.contiguous() for k, v in body.state_dict().items()}, str(tmp_path / "my_backbone.safetensors"))
    outputs = []
    for argv in example_commands():
        result = run_cli(*argv, cwd=tmp_path)
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        outputs.append(result.stdout)
    assert "study written for 240 training images at 128 px on cpu" in outputs[0]
    assert "study my_study: 6 runs" in outputs[1]
    index = read_json(tmp_path / "runs" / "my_study" / "study.json")
    assert len(index["runs"]) == 6 and all(r["state"] == "done" for r in index["runs"])
    assert (tmp_path / "runs" / "my_study" / "report" / "index.html").is_file()
    assert "6 done" in outputs[3]
