"""The trained discriminator as a critic: --generate N --best-of K keeps the N of
K x N samples that D rates most real, and d_picks.png shows what D prefers."""
import pytest
import torch

import gan_mnist
from test_dependable import assert_one_line_error, run_here


class DrawsItsNoise(torch.nn.Module):
    """A stand-in generator whose image k is all one grey, tanh(z_k[0]): how bright is known.
    Conditional (num_classes=10): pixel `digit` is then 1, so each image shows the digit it was asked for."""

    def __init__(self, num_classes=0):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, 100
        self.unused = torch.nn.Parameter(torch.zeros(1))  # so that it has a device

    def forward(self, z, labels=None):
        images = torch.tanh(z[:, :1]).expand(len(z), 784).clone()
        if labels is not None:
            images[torch.arange(len(z)), labels] = 1.0
        return images


class PrefersBright(torch.nn.Module):
    """A stand-in discriminator: the brighter the image, the more real."""

    num_classes = 0

    def forward(self, images, labels=None):
        return images.mean(dim=1, keepdim=True)


def test_best_of_keeps_exactly_the_images_d_prefers():
    torch.manual_seed(0)
    candidates = DrawsItsNoise()(torch.randn(4 * 50, 100))
    torch.manual_seed(0)
    kept = gan_mnist.draw_the_best(DrawsItsNoise(), PrefersBright(), 50, 4)
    brightness = candidates[:, 0]
    assert kept.shape == (50, 784)
    assert sorted(kept[:, 0].tolist()) == sorted(brightness.topk(50).values.tolist())  # the brightest 50 of 200
    # kept in the order drawn
    assert kept[:, 0].tolist() == [b for b in brightness.tolist() if b >= brightness.topk(50).values.min()]


def test_best_of_one_is_the_generator_alone_same_seed_same_pixels():
    torch.manual_seed(3)
    generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()
    torch.manual_seed(0)
    with torch.no_grad():
        alone = generator(torch.randn(16, 100))
    torch.manual_seed(0)
    assert torch.equal(gan_mnist.draw_the_best(generator, discriminator, 16, 1), alone)
    torch.manual_seed(0)
    chosen = gan_mnist.draw_the_best(generator, discriminator, 16, 3)
    assert not torch.equal(chosen, alone)


def test_a_conditional_choice_keeps_each_asked_digit_and_its_brightest():
    labels = gan_mnist.digits_in_order(40, 10, "cpu")  # four of each digit, in order
    torch.manual_seed(0)
    candidates = DrawsItsNoise(10)(torch.randn(5 * 40, 100), labels.repeat(5))
    torch.manual_seed(0)
    kept = gan_mnist.draw_the_best(DrawsItsNoise(10), PrefersBright(), 40, 5, labels)
    assert (kept[torch.arange(40), labels] == 1).all()  # every slot shows the digit it asked for
    for digit in range(10):
        of_digit = candidates[labels.repeat(5) == digit]
        expected = of_digit.mean(dim=1).topk(4).values
        torch.testing.assert_close(kept[labels == digit].mean(dim=1).sort(descending=True).values, expected)


def test_d_picks_shows_the_most_and_least_real():
    torch.manual_seed(0)
    most, least = gan_mnist.what_d_picks(DrawsItsNoise(), PrefersBright(), torch.randn(1024, 100))
    assert most.shape == least.shape == (32, 784)
    assert most[:, 0].min() > least[:, 0].max()
    everything = torch.tanh(torch.randn(1024, 100, generator=torch.Generator().manual_seed(0))[:, 0])
    torch.testing.assert_close(most[:, 0], everything.sort(descending=True).values[:32])


@pytest.mark.parametrize("value, words", [("0", "--best-of must be a whole number of at least 1"),
                                          ("-1", "--best-of must be a whole number of at least 1"),
                                          ("64", "--generate 1024 --best-of 64 would draw 65536 digits")])
def test_bad_best_of_gets_one_line(tmp_path, value, words):
    assert_one_line_error(run_here("--generate", "1024", "--best-of", value, "--out-dir", tmp_path), words)


def test_best_of_without_generate_gets_one_line(tmp_path):
    assert_one_line_error(run_here("--best-of", "3", "--out-dir", tmp_path), "--best-of chooses among what --generate")


@pytest.mark.parametrize("conditional", [False, True], ids=["article's GAN", "conditional"])
def test_generate_best_of_works_for_both_kinds_of_checkpoint(tiny_mnist, tmp_path, conditional):
    flags = ["--conditional"] if conditional else []
    trained = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "1", "--batch-size", "64",
                       "--device", "cpu", *flags)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "d_picks.png").is_file()  # drawn at the end of every run
    for extra in ([], ["--digit", "3"]) if conditional else ([],):
        result = run_here("--generate", "20", "--best-of", "3", "--out-dir", tmp_path, "--device", "cpu", *extra)
        assert result.returncode == 0, result.stderr
        assert "D's best of 3" in result.stdout and "d_picks.png" in result.stdout
