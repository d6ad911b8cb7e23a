import pytest

from rethink import schedule as s
from rethink.errors import UserError

COCO_1X = 90_000


@pytest.mark.parametrize("factor,total,drops", [
    (1, 90_000, (60_000, 80_000)),       # Detectron 1x: drops at 60k and 80k
    (2, 180_000, (120_000, 160_000)),    # the last 60k and the last 20k
    (3, 270_000, (210_000, 250_000)),
    (6, 540_000, (480_000, 520_000)),
    (0.5, 45_000, (30_000, 40_000)),     # under 2x: 2/3 and 8/9 of the run
])
def test_paper_iteration_numbers(factor, total, drops):
    assert s.total_iters(factor, COCO_1X) == total
    assert s.drop_iters(factor, COCO_1X) == drops


def test_parse_schedule():
    assert s.parse_schedule("2x") == 2.0
    assert s.parse_schedule("0.5x") == 0.5
    assert s.parse_schedule(" 6X ") == 6.0
    for bad in ("2", "x", "two x", "-1x", "0x"):
        with pytest.raises(UserError, match="solver.schedule"):
            s.parse_schedule(bad)


def test_lr_factor_warmup_and_drops():
    drops = (120_000, 160_000)
    # detectron2 warm-up: 1000 iterations from 1/1000, linear
    assert s.lr_factor(0, drops, 1000, 0.001) == pytest.approx(0.001)
    assert s.lr_factor(500, drops, 1000, 0.001) == pytest.approx(0.001 * 0.5 + 0.5)
    assert s.lr_factor(1000, drops, 1000, 0.001) == 1.0
    assert s.lr_factor(119_999, drops, 1000, 0.001) == 1.0
    assert s.lr_factor(120_000, drops, 1000, 0.001) == pytest.approx(0.1)
    assert s.lr_factor(159_999, drops, 1000, 0.001) == pytest.approx(0.1)
    assert s.lr_factor(160_000, drops, 1000, 0.001) == pytest.approx(0.01)


def test_linear_scaling():
    assert s.scaled_lr(0.02, 16) == pytest.approx(0.02)
    assert s.scaled_lr(0.02, 8) == pytest.approx(0.01)
    assert s.scaled_lr(0.02, 64) == pytest.approx(0.08)


def test_schedules_of_2x_and_longer_share_the_trajectory_until_their_first_drop():
    for short, long in ((2, 6), (3, 6), (5, 6), (2, 3)):
        fork = s.fork_iter(short, long, COCO_1X)
        assert fork == s.drop_iters(short, COCO_1X)[0]
        long_drops = s.drop_iters(long, COCO_1X)
        short_drops = s.drop_iters(short, COCO_1X)
        for it in (0, 999, 1000, fork - 1):
            assert s.lr_factor(it, long_drops, 1000, 0.001) == s.lr_factor(it, short_drops, 1000, 0.001)
        assert s.lr_factor(fork, long_drops, 1000, 0.001) != s.lr_factor(fork, short_drops, 1000, 0.001)
    assert s.fork_iter(6, 2, COCO_1X) is None
    assert s.fork_iter(1, 2, COCO_1X) == 60_000


def test_paper_table1_saving():
    # {2x..6x} with forks from 6x: 6x + 4 tails of 60k = 8.67 units of 1x instead of 20
    planned = s.total_iters(6, COCO_1X) + sum(
        s.total_iters(f, COCO_1X) - s.fork_iter(f, 6, COCO_1X) for f in (2, 3, 4, 5))
    assert planned / COCO_1X == pytest.approx(8.6667, abs=1e-3)


def test_check_schedule_refuses_warmup_past_first_drop():
    with pytest.raises(UserError, match="warmup_iters"):
        s.check_schedule(1.0, 30, 25)
    s.check_schedule(1.0, 30, 5)


def test_eval_iters():
    assert s.eval_iters(10, 4) == [4, 8, 10]
    assert s.eval_iters(8, 4) == [4, 8]
    assert s.eval_iters(8, 0) == [8]
