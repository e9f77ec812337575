import pytest
import torch

from lsqface.solver.sampling import gather_map, gather_samples, quarter_turn_keys, sample_pixels


def _confidence_with_qualifying(batch=3, height=20, width=30, qualifying=(50, 400, 0), seed=0):
    generator = torch.Generator().manual_seed(seed)
    confidence = torch.zeros(batch, height * width)
    for b, n in enumerate(qualifying):
        chosen = torch.randperm(height * width, generator=generator)[:n]
        confidence[b, chosen] = 0.5 + torch.rand(n, generator=generator)
    # Below-threshold noise: positive but under 0.001 x max.
    # Image 2 stays all zero: nothing qualifies there.
    confidence[:2] += 1e-5 * torch.rand(confidence[:2].shape, generator=generator)
    return confidence.reshape(batch, height, width)


def test_all_qualifying_pixels_chosen_when_fewer_than_count():
    confidence = _confidence_with_qualifying()
    samples = sample_pixels(confidence, count=200, generator=torch.Generator().manual_seed(1))
    flat = confidence.reshape(3, -1)
    qualifies = flat > 1e-3 * flat.amax(1, keepdim=True)
    chosen = torch.zeros_like(qualifies)
    chosen.scatter_(1, samples.indices, True)
    # Image 0: 50 qualify < 200 -> all taken; image 1: 400 qualify > 200 -> only qualifying ones taken.
    assert (chosen[0] & qualifies[0]).sum() == 50
    assert qualifies[1].gather(0, samples.indices[1]).all()
    assert samples.qualified[0].sum() == 50 and samples.qualified[1].all() and not samples.qualified[2].any()


def test_no_duplicates_and_coordinates_match_indices():
    confidence = _confidence_with_qualifying()
    samples = sample_pixels(confidence, count=300)
    for b in range(3):
        assert samples.indices[b].unique().numel() == 300
    x, y = samples.pixels.unbind(-1)
    # Pixel centres sit half a pixel inside the pixel (the renderer's convention).
    torch.testing.assert_close(((y - 0.5) * 30 + (x - 0.5)).long(), samples.indices)
    assert torch.all(x % 1 == 0.5) and torch.all(y % 1 == 0.5)


def test_seeded_generator_reproduces_and_different_seeds_differ():
    confidence = _confidence_with_qualifying()
    a = sample_pixels(confidence, 100, generator=torch.Generator().manual_seed(7)).indices
    b = sample_pixels(confidence, 100, generator=torch.Generator().manual_seed(7)).indices
    c = sample_pixels(confidence, 100, generator=torch.Generator().manual_seed(8)).indices
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_draw_is_uniform_among_qualifying_pixels():
    confidence = torch.zeros(1, 4, 5)
    confidence[0, :2] = 1.0  # 10 qualifying pixels
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(20)
    for _ in range(2000):
        counts.index_add_(0, sample_pixels(confidence, 3, generator).indices[0], torch.ones(3))
    assert counts[10:].sum() == 0
    frequency = counts[:10] / 2000
    assert ((frequency - 0.3).abs() < 0.05).all()


def test_fixed_keys_are_random_and_shared_by_quarter_turn_partners():
    keys = quarter_turn_keys(12, 12, seed=3)
    assert keys.dtype == torch.float64 and keys.shape == (12, 12)
    for turns in (1, 2, 3):
        assert torch.equal(torch.rot90(keys, turns), keys)
    # One key per orbit of four pixels: the orbits numbered 0..35 in a random order.
    assert torch.equal(keys.unique(), torch.arange(36, dtype=torch.float64))
    assert not torch.equal(keys[:3, :3].flatten(), keys[:3, :3].flatten().sort().values)
    rectangle = quarter_turn_keys(6, 10, seed=3)
    assert torch.equal(torch.rot90(rectangle, 2), rectangle)
    assert torch.equal(rectangle.unique(), torch.arange(30, dtype=torch.float64))
    assert torch.equal(quarter_turn_keys(12, 12, seed=3), keys) and not torch.equal(quarter_turn_keys(12, 12, 4), keys)
    # Each call gives its own tensor: changing one leaves the next call's keys as they were.
    keys.zero_()
    assert quarter_turn_keys(12, 12, seed=3).unique().numel() == 36


def test_fixed_keys_draw_the_same_pixels_anywhere_in_a_batch_and_turn_with_the_image():
    confidence = _confidence_with_qualifying(batch=2, height=16, width=16, qualifying=(120, 200))
    keys = quarter_turn_keys(16, 16)
    alone = sample_pixels(confidence[1:], 80, keys=keys).indices
    together = sample_pixels(confidence, 80, keys=keys).indices
    assert torch.equal(alone[0].sort().values, together[1].sort().values)
    assert sample_pixels(confidence, 80, keys=keys).qualified.all()

    def chosen(confidence_map):
        mask = torch.zeros(confidence_map.numel(), dtype=torch.bool)
        mask[sample_pixels(confidence_map[None], 80, keys=keys).indices[0]] = True
        return mask.reshape(confidence_map.shape)

    for turns in (1, 2, 3):
        turned = torch.rot90(confidence[1], turns)
        assert torch.equal(chosen(turned), torch.rot90(chosen(confidence[1]), turns))
    # The partners of a pixel share its key: which of them is taken follows the confidence, which turns too.
    flat = torch.zeros(1, 4, 4)
    flat[0, 0, 0], flat[0, 0, 3], flat[0, 3, 3], flat[0, 3, 0] = 1.0, 0.9, 0.8, 0.7
    taken = sample_pixels(flat, 1, keys=quarter_turn_keys(4, 4)).indices[0]
    assert taken.tolist() == [0]
    taken = sample_pixels(torch.rot90(flat, 1, dims=(1, 2)), 1, keys=quarter_turn_keys(4, 4)).indices[0]
    assert taken.tolist() == [12]  # (0, 0) turned a quarter anticlockwise is row 3, column 0
    # Partners whose confidences differ by a millionth of the maximum are still told apart, and the order
    # turns with the image.
    close = torch.zeros(1, 4, 4)
    close[0, 0, 0], close[0, 0, 3], close[0, 3, 3], close[0, 3, 0] = 1.0, 1.0 - 1e-6, 1.0 - 2e-6, 1.0 - 3e-6
    for turns in (0, 1, 2, 3):
        turned = torch.rot90(close, turns, dims=(1, 2))
        taken = sample_pixels(turned, 1, keys=quarter_turn_keys(4, 4)).indices[0]
        # Where the turn took the pixel of confidence 1 (row 0, column 0).
        assert taken.tolist() == [int(torch.argmax(turned.flatten()))]
    with pytest.raises(ValueError, match="keys"):
        sample_pixels(confidence, 10, keys=quarter_turn_keys(8, 8))


def test_gather_reads_the_right_values_and_passes_gradients():
    batch, height, width = 2, 6, 7
    depth = torch.randn(batch, 1, height, width, dtype=torch.float64, requires_grad=True)
    correspondence = torch.rand(batch, 2, height, width, dtype=torch.float64, requires_grad=True)
    confidence = torch.rand(batch, height, width, dtype=torch.float64, requires_grad=True)
    samples = sample_pixels(confidence, 10, torch.Generator().manual_seed(3))
    gathered = gather_samples(correspondence, depth, confidence, samples)
    for b in range(batch):
        for p in range(10):
            x, y = samples.pixels[b, p].long().tolist()
            assert gathered.depth[b, p] == depth[b, 0, y, x]
            assert gathered.confidence[b, p] == confidence[b, y, x]
            assert torch.equal(gathered.correspondence[b, p], correspondence[b, :, y, x])
    (gathered.depth.sum() + gathered.confidence.sum() + gathered.correspondence.sum()).backward()
    assert depth.grad.sum() == 10 * batch and confidence.grad.sum() == 10 * batch
    assert correspondence.grad.sum() == 2 * 10 * batch


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        sample_pixels(torch.ones(1, 2, 2), count=5)
    samples = sample_pixels(torch.ones(1, 2, 2), count=2)
    with pytest.raises(ValueError):
        gather_map(torch.ones(1, 1, 3, 3), samples)
