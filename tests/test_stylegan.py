"""The StyleGAN2-ADA generator (`synthnb.generators.gan`) at tiny sizes: demodulation, the ADA controller and augmentations, exact
state round trips, sample shapes at 28/64/128 px, and a short training run that must learn the class."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from synthnb.generators.gan import GANGenerator, GANSettings, ada_augment, ada_step
from synthnb.generators.stylegan import ModulatedConv, ResidualDiscriminator, StyleGenerator, minibatch_stddev


def two_classes(n=16, size=28, seed=0):
    "Class 0: dark noise with a bright horizontal bar; class 1: the same noise with a bright vertical bar."
    rng = np.random.default_rng(seed)
    images = rng.integers(40, 90, (n, size, size)).astype(np.uint8)
    lo, hi = size // 2 - size // 8, size // 2 + size // 8
    images[:n // 2, lo:hi, 2:-2] = 230
    images[n // 2:, 2:-2, lo:hi] = 230
    return images, np.repeat([0, 1], n // 2).astype(np.int64)


def test_demodulation_keeps_unit_output_variance_whatever_the_style():
    torch.manual_seed(0)
    conv, x = ModulatedConv(32, 48, 16), torch.randn(16, 32, 12, 12)
    with torch.no_grad():
        for gain in (0.05, 1.0, 20.0):
            assert abs(conv(x, torch.randn(16, 16) * gain).var().item() - 1) < 0.15
        plain = ModulatedConv(32, 48, 16, demodulate=False)
        low, high = (plain(x, torch.randn(16, 16) * g).var().item() for g in (0.05, 20.0))
    assert high > 10 * low  # without demodulation the output variance follows the style


def test_ada_probability_rises_while_the_discriminator_overfits_and_falls_otherwise():
    p, trace = 0.0, []
    for r_t in [0.95] * 20 + [0.1] * 30:  # a discriminator sure of the real images, then one that generalises
        p = ada_step(p, r_t, target=0.6, images=128, speed=10_000)
        trace.append(p)
    assert (np.diff(trace[:20]) > 0).all() and trace[19] == pytest.approx(20 * 0.0128)
    assert (np.diff(trace[20:]) <= 0).all() and trace[-1] == 0.0  # down to 0, never below
    assert ada_step(0.99, 1.0, images=128, speed=100) == 1.0  # never above 1


def test_ada_augment_is_differentiable_seeded_and_leaves_a_share_of_images_untouched():
    x = torch.rand(400, 1, 16, 16) * 2 - 1
    assert torch.equal(ada_augment(x, 0.0, torch.Generator()), x)
    a = ada_augment(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(a, ada_augment(x, 0.3, torch.Generator().manual_seed(0)))
    untouched = ((a - x).abs().amax((1, 2, 3)) < 1e-5).float().mean().item()
    assert abs(untouched - 0.7 ** 6) < 0.06  # each of the six operations skipped with probability 1 - p
    xg = x[:4].clone().requires_grad_()
    ada_augment(xg, 0.9, torch.Generator().manual_seed(1)).square().sum().backward()
    assert xg.grad.abs().sum() > 0


def test_minibatch_stddev_sees_a_collapsed_batch():
    same, varied = torch.ones(8, 4, 7, 7), torch.randn(8, 4, 7, 7)
    assert minibatch_stddev(same)[:, -1].max() < 1e-3 < minibatch_stddev(varied)[:, -1].min()
    assert minibatch_stddev(torch.randn(6, 4, 7, 7)).shape == (6, 5, 7, 7)  # 6 images: groups of 3


@pytest.mark.parametrize('size', [28, 64, 128])
def test_networks_scale_with_the_image_size(size):
    G, D = StyleGenerator(size, 3, 32, 4, 16, 2), ResidualDiscriminator(size, 3, 4)
    with torch.no_grad():
        x = G(torch.randn(2, 32), torch.tensor([0, 2]), torch.Generator().manual_seed(0))
        assert x.shape == (2, 1, size, size) and D(x, torch.tensor([0, 2])).shape == (2,)


@pytest.mark.parametrize('size', [28, 64])
def test_samples_have_the_requested_labels_shape_and_dtype(size):
    images, labels = two_classes(8, size)
    gan = GANGenerator(GANSettings(train_steps=2, batch_size=4, width=4, style_dim=16), device='cpu').fit(images, labels)
    out = gan.sample(np.array([1, 0, 1]), torch.Generator().manual_seed(0))
    assert out['images'].shape == (3, size, size) and out['images'].dtype == np.uint8
    assert out['labels'].tolist() == [1, 0, 1] and not out['masks'].any()
    assert gan.sample(np.array([], dtype=np.int64), torch.Generator())['images'].shape == (0, size, size)
    with pytest.raises(ValueError, match=r'requested \[2\]'): gan.sample(np.array([2]), torch.Generator())


def test_state_round_trip_gives_identical_samples():
    images, labels = two_classes(8)
    gan = GANGenerator(GANSettings(train_steps=3, batch_size=4, width=4, style_dim=16, r1_every=2), device='cpu').fit(images, labels)
    tensors, config = gan.state()
    config = json.loads(json.dumps(config))  # the config is saved as JSON
    again = GANGenerator.from_state(tensors, config)
    want = np.array([0, 1, 1, 0, 1])
    assert np.array_equal(again.sample(want, torch.Generator().manual_seed(7))['images'],
                          gan.sample(want, torch.Generator().manual_seed(7))['images'])
    # seeded: the same seed draws the same images, another seed others
    assert not np.array_equal(gan.sample(want, torch.Generator().manual_seed(8))['images'],
                              gan.sample(want, torch.Generator().manual_seed(7))['images'])


def test_the_generator_takes_its_settings_as_they_are_and_saves_them():
    s = GANSettings(width=4, style_dim=16, train_steps=2, batch_size=4, r1_gamma=0.2, ada_target=0.5, diff_augment=False)
    gen = GANGenerator(s, device='cpu', seed=3)
    assert gen.settings is s and (gen.device, gen.seed) == ('cpu', 3)
    assert GANGenerator().settings == GANSettings()  # one place for the defaults
    images, labels = two_classes(8)
    config = json.loads(json.dumps(gen.fit(images, labels).state()[1]))
    assert config['settings'] == {**dataclasses.asdict(s), 'device': 'cpu', 'seed': 3}
    old = {**config, 'settings': {('augment' if k == 'diff_augment' else k): v for k, v in config['settings'].items()}}
    assert GANGenerator.from_state(gen.state()[0], old).settings == s  # a model saved before: `augment`
    with pytest.raises(ValueError, match='ada_target = 1.5'): GANSettings(ada_target=1.5)


def test_a_short_training_run_learns_the_class():
    """Three hundred steps on two toy classes: most samples of each class have that class's bar, and they differ.
    A generator that ignored the label would draw the same mix for both classes: the two shares would add up to about 1."""
    torch.manual_seed(0)
    images, labels = two_classes(16)
    gan = GANGenerator(GANSettings(train_steps=300, batch_size=16, width=8, style_dim=32), device='cpu').fit(images, labels)
    out = gan.sample(np.repeat([0, 1], 40), torch.Generator().manual_seed(0))['images'].astype(float)
    lo, hi = 28 // 2 - 3, 28 // 2 + 3
    horizontal = out[:, lo:hi, 4:-4].mean((1, 2)) - out[:, 4:-4, lo:hi].mean((1, 2))  # > 0: a horizontal bar
    shares = (horizontal[:40] > 0).mean(), (horizontal[40:] < 0).mean()
    assert min(shares) >= 0.7 and sum(shares) >= 1.5, (shares, horizontal)
    assert out[:40].std(0).mean() > 2 and out[40:].std(0).mean() > 2  # not one image per class
    assert 0 < max(gan.losses['p']) < 1  # ADA reacted
