"""The per-image keyed draws: functions of (seed, image position, consumer) only, never of the global RNG."""

import types

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from rethink.data.sampling import InfiniteSampler, image_generator, keyed_scale_choice


def _scales(transform, keys, images):
    transform.torch_choice.keys = keys
    out, _ = transform(images)
    return [min(h, w) for h, w in out.image_sizes]


def test_training_scales_do_not_depend_on_global_rng_consumption():
    sizes = (32, 40, 48, 56, 64)
    transform = GeneralizedRCNNTransform(sizes, 200, [0.5] * 3, [0.2] * 3)
    transform.train()
    keyed_scale_choice(types.SimpleNamespace(transform=transform), seed=3)
    images = [torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(i)) for i in range(8)]
    keys = list(range(100, 108))

    torch.manual_seed(0)
    first = _scales(transform, keys, images)
    torch.manual_seed(1234)
    torch.rand(10_000)  # what timm.create_model does to the global RNG in one arm only
    state = torch.get_rng_state()
    second = _scales(transform, keys, images)
    assert first == second
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert set(first) <= set(sizes) and len(set(first)) >= 3  # the sizes are really drawn, not constant
    # an image keeps its scale whatever its neighbours in the batch: split the batch in two
    assert _scales(transform, keys[:3], images[:3]) + _scales(transform, keys[3:], images[3:]) == first
    # another seed draws other scales
    keyed_scale_choice(types.SimpleNamespace(transform=transform), seed=4)
    assert _scales(transform, keys, images) != first


def test_scale_choice_needs_a_key_per_image():
    transform = GeneralizedRCNNTransform((32, 64), 200, [0.5] * 3, [0.2] * 3)
    transform.train()
    keyed_scale_choice(types.SimpleNamespace(transform=transform), seed=0)
    transform.torch_choice.keys = [0]
    try:
        transform([torch.rand(3, 40, 40), torch.rand(3, 40, 40)])
    except RuntimeError as error:
        assert "scale keys for 1 images" in str(error)
    else:
        raise AssertionError("a batch larger than its keys must fail")


def test_image_generator_is_keyed_and_salted():
    a = torch.rand(4, generator=image_generator(7, 11, 2))
    assert torch.equal(a, torch.rand(4, generator=image_generator(7, 11, 2)))
    assert not torch.equal(a, torch.rand(4, generator=image_generator(7, 12, 2)))
    assert not torch.equal(a, torch.rand(4, generator=image_generator(7, 11, 1)))


def test_infinite_sampler_union_over_processes_and_resume():
    one = InfiniteSampler(10, 4, seed=2, hflip_prob=0.5)
    stream = [one.batch(it) for it in range(6)]
    for it in range(6):
        halves = [InfiniteSampler(10, 4, 2, 0.5, rank=r, world_size=2).batch(it) for r in range(2)]
        assert halves[0] + halves[1] == stream[it]
    resumed = iter(InfiniteSampler(10, 4, 2, 0.5, start_iter=3))
    assert [next(resumed) for _ in range(3)] == stream[3:]
    # each epoch is a permutation of the 10 images
    flat = [i for b in stream for i, _ in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
