"""Choosing the digit: the conditional GAN behind --conditional, and --generate --digit."""
import re

import pytest
import torch
from PIL import Image

import gan_mnist
from conftest import TINY_RUN_FLAGS, assert_one_line_error, assert_same_run, run_here, run_script, run_tool, train


@pytest.fixture(scope="module")
def conditional_run(tiny_mnist, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("conditional") / "out"
    return train(tiny_mnist, out_dir, "--epochs", "2", "--conditional"), out_dir


def test_the_digit_is_appended_one_hot_to_each_networks_input():
    generator = gan_mnist.ConditionalGenerator(100, 256)
    discriminator = gan_mnist.ConditionalDiscriminator(784, 256)
    assert generator.z_dim == 100  # the noise alone, as the article's
    assert generator.gen[0].in_features == 110 and discriminator.disc[0].in_features == 794
    z, labels = torch.randn(4, 100), torch.tensor([0, 3, 9, 3])
    inputs = gan_mnist.append_digit(z, labels)
    assert torch.equal(inputs[:, :100], z)  # the noise first, unchanged...
    assert torch.equal(inputs[:, 100:], torch.eye(10)[labels] * 10)  # ...then one number in the digit's place,
    assert torch.equal(gan_mnist.append_digit(torch.rand(4, 784), labels)[:, 784:], torch.eye(10)[labels] * 28)
    # ...as large as the input is long (the square root of its width), so that it is heard
    assert generator(z, labels).shape == (4, 784) and discriminator(torch.rand(4, 784), labels).shape == (4, 1)


def test_the_article_gets_the_articles_classes_and_a_conditional_run_their_subclasses():
    article = gan_mnist.build_gan(gan_mnist.parse_args([]), "cpu")
    conditional = gan_mnist.build_gan(gan_mnist.parse_args(["--conditional"]), "cpu")
    assert [type(network) for network in article[:2]] == [gan_mnist.Generator, gan_mnist.Discriminator]
    assert [type(network) for network in conditional[:2]] == [gan_mnist.ConditionalGenerator,
                                                                gan_mnist.ConditionalDiscriminator]


def test_the_articles_networks_are_untouched_when_not_conditional():
    generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()
    assert generator.gen[0].in_features == 100 and discriminator.disc[0].in_features == 784
    z = torch.randn(3, 100)
    torch.testing.assert_close(generator(z), generator(z, torch.tensor([1, 2, 3])), rtol=0, atol=0)
    assert gan_mnist.digits_to_draw(generator, torch.tensor([1, 2])) == (None, None)


def test_the_label_changes_what_each_network_says():
    torch.manual_seed(0)
    generator = gan_mnist.ConditionalGenerator()
    discriminator = gan_mnist.ConditionalDiscriminator()
    z, image = torch.randn(1, 100), torch.rand(1, 784)
    as_three, as_seven = generator(z, torch.tensor([3])), generator(z, torch.tensor([7]))
    assert (as_three - as_seven).abs().max() > 1e-3
    assert discriminator(image, torch.tensor([3])) != discriminator(image, torch.tensor([7]))


def test_training_draws_every_digit_equally_often_for_the_fakes():
    torch.manual_seed(0)
    fake_labels, both = gan_mnist.digits_to_draw(gan_mnist.ConditionalGenerator(), torch.zeros(50_000).long())
    counts = torch.bincount(fake_labels, minlength=10)
    assert ((counts > 4_700) & (counts < 5_300)).all()  # 5,000 each, give or take chance
    assert both.shape == (100_000,) and (both[:50_000] == 0).all()


def test_a_conditional_run_records_its_classes_and_draws_a_digit_table(conditional_run):
    checkpoint, out_dir = conditional_run
    assert checkpoint["config"]["num_classes"] == 10
    assert checkpoint["fixed_noise"].shape == (100, 100)  # 10 x 10: row r is digit r
    labels = gan_mnist.digits_in_order(gan_mnist.ConditionalGenerator(), 100, "cpu")
    assert gan_mnist.digits_in_order(gan_mnist.Generator(), 100, "cpu") is None  # the article's GAN draws any digit
    assert torch.equal(labels.reshape(10, 10), torch.arange(10)[:, None].expand(10, 10))
    with Image.open(out_dir / "samples" / "epoch_002.png") as grid:
        assert grid.width > 200


def test_resuming_a_conditional_run_is_exact(tiny_mnist, tmp_path, conditional_run):
    train(tiny_mnist, tmp_path, "--epochs", "1", "--conditional")
    resumed = train(tiny_mnist, tmp_path, "--epochs", "2", "--conditional", "--resume")
    assert_same_run(conditional_run[0], resumed)


def test_resume_refuses_a_change_of_conditional(conditional_run, tiny_mnist):
    result = run_here("--data-dir", tiny_mnist, "--out-dir", conditional_run[1], "--resume", "--epochs", "3",
                      *TINY_RUN_FLAGS)
    assert_one_line_error(result, "trained with --conditional, this run asks for --no-conditional")


@pytest.mark.parametrize("digit, words", [(None, ["20 digits"]), ("7", ["16 of digit 7"])],
                         ids=["table", "digit-7"])
def test_generate_draws_a_table_or_the_digit_asked_for(conditional_run, tmp_path, digit, words):
    extra = [] if digit is None else ["--digit", digit]
    result = run_here("--generate", "16", *extra, "--checkpoint", conditional_run[1] / "checkpoint.pt",
                      "--out-dir", tmp_path, "--data-dir", tmp_path / "no_mnist", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert any(word in result.stdout for word in words), result.stdout
    with Image.open(tmp_path / "generated.png") as image:
        assert image.format == "PNG"


@pytest.mark.parametrize("value, words", [("10", "--digit must be a digit from 0 to 9, not 10"),
                                          ("-1", "--digit must be a digit from 0 to 9, not -1"),
                                          ("seven", "invalid int value: 'seven'")])
def test_bad_digits_get_one_line(conditional_run, value, words):
    result = run_here("--generate", "4", "--digit", value, "--out-dir", conditional_run[1])
    assert_one_line_error(result, words)


def test_a_digit_from_an_unconditional_checkpoint_gets_one_line(tiny_mnist, tmp_path):
    train(tiny_mnist, tmp_path, "--epochs", "1")
    result = run_here("--generate", "4", "--digit", "3", "--out-dir", tmp_path)
    assert_one_line_error(result, "trained without --conditional", "--conditional")
    assert_one_line_error(run_here("--digit", "3", "--out-dir", tmp_path), "--generate N")


def test_quality_reports_how_often_the_asked_digit_is_drawn(conditional_run, tiny_mnist, tmp_path):
    output = run_tool("quality.py", conditional_run[1] / "checkpoint.pt", "--data-dir", tiny_mnist, "--cache-dir",
                      tmp_path, "--samples", "100", "--classifier-epochs", "1")
    shares = re.search(r"asked-for digit drawn: mean ([\d.]+)%, lowest ([\d.]+)% \(\d\); per digit 0-9: (.*)$",
                       output, re.MULTILINE)
    assert shares, output
    per_digit = [float(share) for share in shares[3].split()]
    assert len(per_digit) == 10 and min(per_digit) == float(shares[2])
    assert float(shares[1]) == pytest.approx(sum(per_digit) / 10, abs=0.06)


def test_real_mnist_a_short_conditional_run_draws_the_digit_asked_for(real_mnist, tmp_path):
    result = run_script("--data-dir", real_mnist, "--out-dir", tmp_path, "--max-steps", "469", "--conditional",
                        "--device", "cpu", "--sample-every", "469")
    assert result.returncode == 0, result.stderr
    # Judge the samples by the nearest of the ten mean training digits: crude (82% right
    # on real test digits) but independent of the GAN, and chance would be 10%.
    images, labels = gan_mnist.load_mnist(real_mnist, train=True)
    means = torch.stack([images[labels == digit].mean(dim=0) for digit in range(10)])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    generator = gan_mnist.ConditionalGenerator()
    generator.load_state_dict(checkpoint["generator"])
    asked = torch.arange(1000) % 10
    samples = gan_mnist.samples_from(generator, torch.randn(1000, 100), asked)
    recognised = (torch.cdist(samples, means).argmin(dim=1) == asked).float().mean().item()
    assert recognised > 0.5, f"only {recognised:.0%} of samples look like the digit asked for"
