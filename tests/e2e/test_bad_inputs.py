"""A corpus of broken inputs through the real CLI: each gives one clear line, exit code 2, no traceback,
and leaves earlier results untouched."""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import make_coco, tiny_config_dict, write_config
from rethink.cli import main
from rethink.config import config_from_dict
from rethink.engine.train import train


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    make_coco(root / "data", n_train=8, n_val=4)
    finished = root / "finished"
    train(config_from_dict(tiny_config_dict(root / "data"), ["solver.iters_1x=4", "eval_period=0"]), finished,
          progress=False)
    return root, finished


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _data_copy(root: Path, name: str, mutate) -> Path:
    """A copy of the valid dataset with one thing broken; returns the data root."""
    dst = root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root / "data", dst)
    mutate(dst)
    return dst


def _edit_json(path: Path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _config(root: Path, name: str, data_root: Path | None = None, **top) -> Path:
    cfg = tiny_config_dict(data_root or root / "data")
    cfg.update(top)
    return write_config(root / f"{name}.yaml", cfg)


def _study(root: Path, name: str, body: dict) -> Path:
    path = root / f"{name}.study.yaml"
    _config(root, "study_base")
    path.write_text(yaml.safe_dump({"base": "study_base.yaml", **body}))
    return path


def case_config_missing(root):
    return ["train", str(root / "nope.yaml"), "--out", str(root / "o")], "config file not found"


def case_yaml_syntax(root):
    p = root / "syntax.yaml"
    p.write_text("model: {detector: [\n")
    return ["train", str(p), "--out", str(root / "o")], "not valid YAML"


def case_yaml_python_tag(root):
    p = root / "tag.yaml"
    p.write_text("!!python/object/apply:os.system ['touch hacked']\n")
    return ["train", str(p), "--out", str(root / "o")], "not valid YAML"


def case_unknown_key(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.lr=0.1"], "solver.lr: unknown key"


def case_wrong_type(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.batch_size=eight"], "solver.batch_size: expected an integer"


def case_negative_lr(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.base_lr=-1"], "solver.base_lr"


def case_bad_schedule(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.schedule=long"], "solver.schedule: 'long'"


def case_unknown_norm(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "model.norm=ln"], "model.norm: 'ln'"


def case_unknown_backbone(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "model.backbone=vgg"], "model.backbone: 'vgg'"


def case_syncbn_on_cpu(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "model.norm=syncbn", "--set", "device=cpu"], "syncbn needs CUDA"


def case_warmup_past_drop(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.warmup_iters=50"], \
        "solver.warmup_iters: 50 is past the first LR drop at iteration 8 of the 1x schedule; set it to at most 8"


def case_set_without_value(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "seed"], "expected KEY=VALUE"


def case_train_size_too_large(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "data.train_size=500"], "500"


def case_weights_missing(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", f"init={root / 'none.safetensors'}"], "not found"


def case_weights_do_not_fit(root):
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(root / "partial.safetensors"))
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", f"init={root / 'partial.safetensors'}"], "does not fit model.backbone"


def case_weights_pickle_runs_code(root):
    with open(root / "evil.pt", "wb") as f:
        pickle.dump({"conv1.weight": _Payload(root / "code_ran")}, f)
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", f"init={root / 'evil.pt'}"], "refused to load"


def case_annotations_not_json(root):
    d = _data_copy(root, "notjson", lambda d: (d / "train" / "annotations.json").write_text("{oops"))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "annotations.json"


def case_unknown_image_id(root):
    d = _data_copy(root, "unknownimg", lambda d: _edit_json(
        d / "train" / "annotations.json", lambda j: j["annotations"][0].update(image_id=999)))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "999"


def case_image_file_missing(root):
    d = _data_copy(root, "noimage", lambda d: (d / "train" / "images" / "00001.png").unlink())
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "00001.png"


def case_file_name_escapes(root):
    d = _data_copy(root, "escape", lambda d: _edit_json(
        d / "train" / "annotations.json", lambda j: j["images"][0].update(file_name="../../etc/passwd")))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "../../etc/passwd"


def case_truncated_image(root):
    def cut(d):
        p = d / "val" / "images" / "00002.png"
        p.write_bytes(p.read_bytes()[:200])
    d = _data_copy(root, "truncated", cut)
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "00002.png"


def case_duplicate_image_id(root):
    d = _data_copy(root, "dupid", lambda d: _edit_json(
        d / "train" / "annotations.json", lambda j: j["images"][1].update(id=j["images"][0]["id"])))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "duplicate"


def case_zero_width_box(root):
    d = _data_copy(root, "zerobox", lambda d: _edit_json(
        d / "train" / "annotations.json", lambda j: j["annotations"][0]["bbox"].__setitem__(2, 0)))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "non-positive"


def case_categories_differ(root):
    d = _data_copy(root, "cats", lambda d: _edit_json(
        d / "val" / "annotations.json", lambda j: j["categories"].append({"id": 9, "name": "extra"})))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "categories differ"


def case_check_data_missing_key(root):
    d = _data_copy(root, "nokey", lambda d: _edit_json(d / "val" / "annotations.json", lambda j: j.pop("categories")))
    return ["check-data", str(_config(root, "c", d))], "categories"


def case_study_without_random(root):
    return ["plan", str(_study(root, "norandom", {"matrix": {"init": ["imagenet", "x.safetensors"]}}))], "needs `random`"


def case_study_unknown_key(root):
    return ["plan", str(_study(root, "unknown", {"matrix": {"init": ["random", "imagenet"]}, "runs": 3}))], "unknown key runs"


def case_study_init_in_set(root):
    return ["plan", str(_study(root, "setinit", {"set": {"init": "imagenet"},
                                                 "matrix": {"init": ["random", "imagenet"]}}))], "init is the matrix axis"


def case_study_bad_matrix_value(root):
    return ["plan", str(_study(root, "badsched", {"matrix": {"init": ["random", "imagenet"],
                                                             "solver.schedule": ["2x", "soon"]}}))], "'soon'"


def case_status_not_a_study(root):
    return ["status", str(root)], "no study.json"


def case_report_not_a_study(root):
    return ["report", str(root / "nothing_here")], "study.json"


def case_eval_weights_do_not_fit(root):
    torch.save({"model": {"x": torch.zeros(1)}}, root / "other.pt")
    return ["eval", str(_config(root, "c")), "--weights", str(root / "other.pt")], "does not fit"


def case_out_dir_holds_another_run(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "finished"), "--set", "seed=9"], "different config"


def _plain_file(root: Path) -> Path:
    path = root / "plain.txt"
    path.write_text("a file where a folder is needed\n")
    return path


def case_predictions_path_is_a_folder(root):
    return ["eval", str(_config(root, "c")), "--weights", str(root / "finished" / "checkpoints" / "iter_0000004.pt"),
            "--predictions", str(root)], "--predictions"


def case_predictions_inside_a_file(root):
    return ["eval", str(_config(root, "c")), "--weights", str(root / "finished" / "checkpoints" / "iter_0000004.pt"),
            "--predictions", str(_plain_file(root) / "results.json")], "is a file, not a folder"


def case_train_out_inside_a_file(root):
    return ["train", str(_config(root, "c")), "--out", str(_plain_file(root) / "run")], "is a file, not a folder"


def case_train_out_is_a_file(root):
    return ["train", str(_config(root, "c")), "--out", str(_plain_file(root))], "is a file, not a folder"


def case_pretrain_out_inside_a_file(root):
    return ["pretrain", "tiny/pretrain.yaml", "--out", str(_plain_file(root) / "p")], "is a file, not a folder"


def case_study_out_inside_a_file(root):
    return ["study", str(_study(root, "ok", {"matrix": {"init": ["random", "imagenet"]}})), "--out",
            str(_plain_file(root) / "s")], "is a file, not a folder"


def case_demo_out_inside_a_file(root):
    return ["demo", "--quick", "--out", str(_plain_file(root) / "d")], "is a file, not a folder"


def case_synth_out_inside_a_file(root):
    return ["data", "synth", "--out", str(_plain_file(root) / "b")], "is a file, not a folder"


# What a new user hit on their own data first (each failed with a traceback, a wrong state or a misleading line).


def _checkpoint_of(root: Path, name: str, num_classes: int = 2, **model) -> Path:
    """A real detector checkpoint, of another model or another number of categories than the config's."""
    from rethink.config import ModelConfig, DataConfig
    from rethink.models.detector import build_detector

    cfg = config_from_dict(tiny_config_dict(root / "data"))
    m = ModelConfig(**{**{k: getattr(cfg.model, k) for k in ModelConfig.__dataclass_fields__}, **model})
    path = root / f"{name}.pt"
    torch.save({"model": build_detector(m, cfg.data, num_classes).state_dict()}, path)
    return path


def case_eval_checkpoint_of_another_backbone(root):
    ckpt = _checkpoint_of(root, "wider", tiny_widths=(16, 16, 32, 32))
    return ["eval", str(_config(root, "c")), "--weights", str(ckpt)], "has shape"


def case_eval_checkpoint_of_other_categories(root):
    ckpt = _checkpoint_of(root, "five", num_classes=5)
    return ["eval", str(_config(root, "c")), "--weights", str(ckpt)], "trained on 5 categories, the config's data has 2"


def case_eval_weights_is_a_json_file(root):
    return ["eval", str(_config(root, "c")), "--weights", str(root / "data" / "val" / "annotations.json")], \
        "it is a JSON file, not a torch file); pass a run's checkpoints/iter_*.pt"


def case_train_nproc_zero(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--nproc", "0"], "--nproc 0: must be at least 1"


def case_train_nproc_negative(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--nproc", "-2"], \
        "--nproc -2: must be at least 1"


def case_study_jobs_zero(root):
    return ["study", str(_study(root, "ok", {"matrix": {"init": ["random", "imagenet"]}})), "--out", str(root / "o"),
            "--jobs", "0"], "--jobs 0: must be at least 1"


def case_schedule_as_a_number(root):
    return ["train", str(_config(root, "c")), "--out", str(root / "o"), "--set", "solver.schedule=2.5"], \
        "solver.schedule: 2.5 is not a schedule; write it as the field does, with an x: 2.5x"


def case_plan_on_a_run_config(root):
    return ["plan", str(_config(root, "c"))], "is a run config, not a study file"


def case_train_on_a_study_file(root):
    return ["train", str(_study(root, "ok", {"matrix": {"init": ["random", "imagenet"]}})), "--out",
            str(root / "o")], "is a study file"


def case_study_init_file_missing(root):
    return ["plan", str(_study(root, "noinit", {"matrix": {"init": ["random", str(root / "gone.safetensors")]}}))], \
        "gone.safetensors not found"


def case_study_init_typo(root):
    return ["plan", str(_study(root, "typo", {"matrix": {"init": ["random", "imagnet"]}}))], "did you mean imagenet?"


def case_study_init_missing_trains_nothing(root):
    return ["study", str(_study(root, "noinit2", {"matrix": {"init": ["random", str(root / "gone.safetensors")]}})),
            "--out", str(root / "o")], "gone.safetensors not found"


def case_study_init_does_not_fit_trains_nothing(root):
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(root / "partial.safetensors"))
    return ["study", str(_study(root, "partial", {"matrix": {"init": ["random", str(root / "partial.safetensors")]}})),
            "--out", str(root / "o")], "does not fit model.backbone"


def case_study_base_bundled_name_missing(root):
    path = root / "bundled_typo.study.yaml"
    path.write_text(yaml.safe_dump({"base": "tiny/faster_rcnn.yaml", "matrix": {"init": ["random", "imagenet"]}}))
    return ["plan", str(path)], "nor a bundled config of that name"


def case_forecast_on_an_empty_folder(root):
    (root / "empty").mkdir(exist_ok=True)
    return ["forecast", str(root / "empty")], "point forecast at the --out folder of a `rethink study`"


def case_train_without_the_benchmark(root):
    cfg = tiny_config_dict(root / "nowhere" / "benchmark" / "target")
    path = write_config(root / "nobench.yaml", cfg)
    return ["train", str(path), "--out", str(root / "o")], "run `rethink data synth --out"


def case_plan_img_per_s_zero(root):
    return ["plan", str(_study(root, "ok", {"matrix": {"init": ["random", "imagenet"]}})), "--img-per-s", "0"], \
        "--img-per-s 0"


def case_init_study_data_missing(root):
    return ["init-study", str(root / "no_such_set"), "--out", str(root / "o")], "no_such_set: not found"


def case_init_study_file_without_val(root):
    return ["init-study", str(root / "data" / "train" / "annotations.json"), "--out", str(root / "o")], \
        "pass --val VAL.json"


def case_init_study_no_layout(root):
    (root / "flat").mkdir(exist_ok=True)
    return ["init-study", str(root / "flat"), "--out", str(root / "o")], "no COCO layout found"


def case_init_study_out_exists(root):
    return ["init-study", str(root / "data"), "--out", str(_plain_file(root))], "exists; pass another path"


def case_init_study_pretrained_missing(root):
    return ["init-study", str(root / "data"), "--out", str(root / "o"), "--pretrained", str(root / "w.pt")], \
        "--pretrained"


def case_init_study_bad_annotations(root):
    d = _data_copy(root, "initbad", lambda d: (d / "val" / "annotations.json").write_text("{oops"))
    return ["init-study", str(d), "--out", str(root / "o")], "not valid JSON"


def case_val_category_renamed(root):
    d = _data_copy(root, "renamed", lambda d: _edit_json(
        d / "val" / "annotations.json", lambda j: j["categories"][0].update(name="box")))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "category id 1 is 'box' here and 'rect'"


def case_val_without_annotations(root):
    d = _data_copy(root, "valempty", lambda d: _edit_json(
        d / "val" / "annotations.json", lambda j: j.update(annotations=[])))
    return ["train", str(_config(root, "c", d)), "--out", str(root / "o")], "nothing to evaluate against"


def case_eval_weights_is_a_run_folder(root):
    return ["eval", str(_config(root, "c")), "--weights", str(root / "finished")], \
        "is a folder; pass one checkpoint file, e.g. "


def case_study_pretrain_source_not_generated(root):
    source = root / "nobench" / "benchmark" / "source"
    config = {"data": {"train": str(source / "train"), "val": str(source / "val")}}
    (root / "pt.yaml").write_text(yaml.safe_dump(config))
    study = _study(root, "ptmissing", {"pretrain": {"pt": "pt.yaml"}, "matrix": {"init": ["random", "pt"]}})
    return ["study", str(study), "--out", str(root / "o")], "generate the bundled benchmark first: rethink data synth"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


def test_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[len("case_"):])
def test_bad_input_gives_one_clear_line(world, case, capsys):
    root, finished = world
    before = _digest(finished)
    argv, expected = case(root)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("rethink: error: ") and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    assert "weights_only" not in lines[0] and "PyTorch 2.6" not in lines[0]  # torch's advice would run the file
    assert _digest(finished) == before  # earlier results untouched
    assert not (root / "o").exists()  # a refused command leaves nothing behind
    assert not (root / "code_ran").exists() and not (Path.cwd() / "hacked").exists()
