"""What a training run draws, as pure functions of (seed, position in the sample stream).

- InfiniteSampler: which images, in which order, flipped or not (both trainings: detection and pre-training);
- image_generator: the per-image keyed generator, from which every other per-image draw comes;
- ImageKeyedSampler / keyed_samplers: the RPN's and the box head's positive/negative draws;
- KeyedScaleChoice / keyed_scale_choice: the training scale of scale augmentation.

Nothing here reads the global RNG. The global RNG is consumed differently by the two arms of a study
(`timm.create_model` draws from it in the imagenet arm only), so a draw from it would differ between arms that
must differ in the init alone. A run resumed, forked or split over processes draws what an uninterrupted run draws.
"""

import numpy as np
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

# Salts keep the draws of different consumers of the same image independent.
SALT_RPN = 0
SALT_BOX_HEAD = 1
SALT_SCALE = 2


def image_seed(seed: int, key: int, salt: int) -> int:
    """The seed of image `key`'s draws for consumer `salt` (NumPy's SeedSequence: well mixed, any int inputs)."""
    return int(np.random.SeedSequence([seed, key, salt]).generate_state(1, np.uint64)[0])


def image_generator(seed: int, key: int, salt: int) -> torch.Generator:
    """A CPU generator for image `key`'s draws (its place in the sample stream) for consumer `salt`."""
    return torch.Generator().manual_seed(image_seed(seed, key, salt))


class InfiniteSampler(torch.utils.data.Sampler):
    """Batches of (index, flip) for iteration k = start_iter, start_iter + 1, ... forever.

    The stream is epoch after epoch of seeded permutations; position p of the stream is
    (epoch p // n, slot p % n). The global batch of iteration k is positions [k*B, (k+1)*B); process r of W
    takes its contiguous slice of B/W, so the union over processes does not depend on W.
    """

    def __init__(self, size: int, batch_size: int, seed: int, hflip_prob: float, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.hflip_prob = hflip_prob
        self.start_iter = start_iter
        self.rank = rank
        self.world_size = world_size
        self._epoch = None

    def _epoch_order(self, epoch: int):
        if self._epoch is None or self._epoch[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=g).tolist()
            flips = (torch.rand(self.size, generator=g) < self.hflip_prob).tolist()
            self._epoch = (epoch, order, flips)
        return self._epoch[1], self._epoch[2]

    def batch(self, it: int) -> list[tuple[int, bool]]:
        per_rank = self.batch_size // self.world_size
        first = it * self.batch_size + self.rank * per_rank
        out = []
        for p in range(first, first + per_rank):
            order, flips = self._epoch_order(p // self.size)
            out.append((order[p % self.size], bool(flips[p % self.size])))
        return out

    def __iter__(self):
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1


class ImageKeyedSampler(BalancedPositiveNegativeSampler):
    """torchvision's positive/negative sampler (RPN anchors, box-head RoIs) with each image's draws seeded by a key.

    torchvision draws for a batch's images one after another from the global RNG, so what an image gets depends
    on which images share its process and on everything drawn before. The training loop sets `keys` to the
    images' positions in the sample stream (see InfiniteSampler), so an image's anchors and RoIs are the same
    whether its global batch runs in one process or is split over several (no rank repeats another's stream),
    and a resumed or forked run draws exactly what an uninterrupted one draws.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, seed: int, salt: int):
        super().__init__(batch_size_per_image, positive_fraction)
        self.seed, self.salt = seed, salt  # salt: the RPN's and the box head's draws are independent
        self.keys: list[int] = []

    def __call__(self, matched_idxs):
        if len(self.keys) != len(matched_idxs):
            raise RuntimeError(f"sampler keys for {len(self.keys)} images, batch of {len(matched_idxs)}")
        pos_idx, neg_idx = [], []
        for key, matched in zip(self.keys, matched_idxs):
            # The same selection rule as torchvision's sampler (up to batch_size_per_image * positive_fraction
            # positives, negatives fill the rest), drawn from this image's own CPU generator: torchvision's
            # randperm uses the global RNG, and re-seeding that per image is slow in a CUDA build (torch.manual_seed
            # also queues a seed, with a traceback, for the CUDA generators; cost in benchmarks/README.md). On a GPU
            # the draws are then the same as on a CPU.
            generator = image_generator(self.seed, key, self.salt)
            positive = torch.where(matched >= 1)[0]
            negative = torch.where(matched == 0)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            pick_pos = torch.randperm(positive.numel(), generator=generator)[:num_pos].to(positive.device)
            pick_neg = torch.randperm(negative.numel(), generator=generator)[:num_neg].to(negative.device)
            pos_mask = torch.zeros_like(matched, dtype=torch.uint8)
            neg_mask = torch.zeros_like(matched, dtype=torch.uint8)
            pos_mask[positive[pick_pos]] = 1
            neg_mask[negative[pick_neg]] = 1
            pos_idx.append(pos_mask)
            neg_idx.append(neg_mask)
        return pos_idx, neg_idx


def keyed_samplers(model, seed: int) -> list[ImageKeyedSampler]:
    """Put image-keyed samplers in the detector's RPN and box head (same sizes and fractions); returns them."""
    samplers = []
    for salt, head in ((SALT_RPN, model.rpn), (SALT_BOX_HEAD, model.roi_heads)):
        old = head.fg_bg_sampler
        head.fg_bg_sampler = ImageKeyedSampler(old.batch_size_per_image, old.positive_fraction, seed, salt)
        samplers.append(head.fg_bg_sampler)
    return samplers


class KeyedScaleChoice:
    """The training scale of each image (torchvision's `GeneralizedRCNNTransform.torch_choice`), keyed.

    torchvision picks each training image's shorter side uniformly from `min_size` with the global RNG. The
    transform calls its `torch_choice` once per image, in batch order, while training; this picks for the i-th
    call of a batch the size drawn from the i-th image's keyed generator. The training loop sets `keys` before
    each forward pass, as for the samplers.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._keys: list[int] = []
        self._next = 0

    @property
    def keys(self) -> list[int]:
        return self._keys

    @keys.setter
    def keys(self, keys: list[int]) -> None:
        self._keys = list(keys)
        self._next = 0

    def __call__(self, sizes):
        if self._next >= len(self._keys):
            raise RuntimeError(f"scale keys for {len(self._keys)} images, asked for image {self._next + 1}")
        key = self._keys[self._next]
        self._next += 1
        if len(sizes) == 1:
            return sizes[0]
        generator = image_generator(self.seed, key, SALT_SCALE)
        return sizes[int(torch.randint(len(sizes), (1,), generator=generator))]


def keyed_scale_choice(model, seed: int) -> KeyedScaleChoice:
    """Make the detector's transform draw training scales per image from the keyed generator; returns the chooser."""
    choice = KeyedScaleChoice(seed)
    model.transform.torch_choice = choice
    return choice
