"""Checkpoint files: a damaged or foreign file is a clear error naming it; a checkpoint round-trips."""

import numpy as np
import pytest
import torch

from rethink.engine import checkpoint as ckpt
from rethink.errors import UserError


class _RunsCode:
    def __reduce__(self):
        return (print, ("loading this file ran code",))


def _write(path, kind):
    if kind == "truncated":
        torch.save({"iter": 3, "w": torch.ones(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind.startswith("garbage"):
        # seeds whose 512 bytes make the unpickler raise UnpicklingError, IndexError, UnicodeDecodeError, KeyError
        path.write_bytes(np.random.default_rng(int(kind[len("garbage"):])).bytes(512))
    elif kind == "code":
        torch.save({"iter": 3, "x": _RunsCode()}, path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage0", "garbage17", "garbage54", "garbage62", "code", "directory", "missing"])
def test_unreadable_checkpoint_is_a_user_error_naming_the_file(tmp_path, kind):
    path = tmp_path / "iter_0000003.pt"
    _write(path, kind)
    with pytest.raises(UserError, match=r"iter_0000003\.pt: cannot read checkpoint"):
        ckpt.load(path)


def test_checkpoint_round_trip_keeps_tensors_and_rng(tmp_path):
    torch.manual_seed(4)
    state = {"iter": 7, "model": {"w": torch.randn(5)}, "rng": ckpt.rng_state(), "best": {"bbox/AP": 1.5}}
    expected = torch.rand(3)  # what the global RNG draws next
    path = ckpt.save(tmp_path, 7, state, keep_last=1)
    back = ckpt.load(path)
    ckpt.set_rng_state(back["rng"])
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["best"] == {"bbox/AP": 1.5}
    assert torch.equal(torch.rand(3), expected)
    assert ckpt.latest(tmp_path) == (7, path)


@pytest.mark.parametrize("kind", ["empty", "garbage0", "garbage17", "garbage54", "garbage62", "truncated"])
def test_unreadable_init_weights_are_a_user_error_naming_the_file(tmp_path, kind):
    from rethink.models.backbone import read_weights_file

    path = tmp_path / "weights.pt"
    _write(path, kind)
    with pytest.raises(UserError, match=r"weights\.pt: "):
        read_weights_file(path)
