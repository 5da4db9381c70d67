"""The trained discriminator as a critic: --generate N --best-of K keeps, within each digit,
the N of K x N samples that D rates most real, and d_picks.png shows what D prefers."""
import pytest
import torch

import gan_mnist
from conftest import assert_one_line_error, run_here


class DrawsItsNoise(torch.nn.Module):
    """A stand-in generator whose image k is all one grey, tanh(z_k[0]): how bright is known.
    Given labels, pixel `digit` is then 1, so each image shows the digit it was asked for."""

    z_dim = 100

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # so that it has a device

    def forward(self, z, labels=None):
        images = torch.tanh(z[:, :1]).expand(len(z), 784).clone()
        if labels is not None:
            images[torch.arange(len(z)), labels] = 1.0
        return images


class PrefersBright(torch.nn.Module):
    """A stand-in discriminator: the brighter the image, the more real."""

    def forward(self, images, labels=None):
        return images.mean(dim=1, keepdim=True)


def test_best_of_keeps_exactly_the_images_d_prefers():
    torch.manual_seed(0)
    candidates = DrawsItsNoise()(torch.randn(4 * 50, 100))
    torch.manual_seed(0)
    kept = gan_mnist.draw_the_best(DrawsItsNoise(), PrefersBright(), 50, 4)  # no MNIST: one group
    brightness = candidates[:, 0]
    assert kept.shape == (50, 784)
    assert sorted(kept[:, 0].tolist()) == sorted(brightness.topk(50).values.tolist())  # the brightest 50 of 200
    # kept in the order drawn
    assert kept[:, 0].tolist() == [b for b in brightness.tolist() if b >= brightness.topk(50).values.min()]


def test_best_of_one_is_the_generator_alone_same_seed_same_pixels():
    torch.manual_seed(3)
    generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()
    training = (torch.rand(30, 784) * 2 - 1, torch.arange(30) % 10)
    torch.manual_seed(0)
    with torch.no_grad():
        alone = generator(torch.randn(16, 100))
    torch.manual_seed(0)
    assert torch.equal(gan_mnist.draw_the_best(generator, discriminator, 16, 1, training=training), alone)
    # best of 3: the 48 candidates are the next draws; within each digit (its nearest training digit's label)
    # the kept ones are those D scores highest
    torch.manual_seed(0)
    chosen = gan_mnist.draw_the_best(generator, discriminator, 16, 3, training=training)
    torch.manual_seed(0)
    with torch.no_grad():
        candidates = generator(torch.randn(48, 100))
        scores = discriminator(candidates).flatten()
    digits = training[1][gan_mnist.nearest_training_digits(candidates, training[0], 1)[1][:, 0]]
    picked = [int((candidates == image).all(dim=1).nonzero()) for image in chosen]  # each is a candidate
    assert len(set(picked)) == 16
    for digit in digits[picked].unique():
        of_digit = (digits == digit).nonzero().flatten()
        kept = [i for i in picked if digits[i] == digit]
        assert sorted(kept) == sorted(of_digit[scores[of_digit].topk(len(kept)).indices].tolist())


def test_a_conditional_choice_keeps_each_asked_digit_and_its_brightest():
    labels = gan_mnist.digits_in_order(gan_mnist.ConditionalGenerator(), 40, "cpu")  # four of each digit, in order
    torch.manual_seed(0)
    candidates = DrawsItsNoise()(torch.randn(5 * 40, 100), labels.repeat(5))
    torch.manual_seed(0)
    kept = gan_mnist.draw_the_best(DrawsItsNoise(), PrefersBright(), 40, 5, labels)
    assert (kept[torch.arange(40), labels] == 1).all()  # every place shows the digit it asked for
    for digit in range(10):
        of_digit = candidates[labels.repeat(5) == digit]
        expected = of_digit.mean(dim=1).topk(4).values
        torch.testing.assert_close(kept[labels == digit].mean(dim=1).sort(descending=True).values, expected)


class DrawsDigits(torch.nn.Module):
    """A stand-in generator for the article's GAN: its images are the ten 'training digits'
    (one bright pixel each, at the digit's own place) plus a little noise, digit d drawn as often
    as `weights` says; how bright the digit's pixel is varies, and PrefersBright's D loves ones."""

    z_dim = 100

    def __init__(self, weights):
        super().__init__()
        self.weights, self.unused = weights, torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, labels=None):
        digits = torch.multinomial(self.weights, len(z), replacement=True, generator=torch.Generator().manual_seed(
            int(z[0, 0].abs() * 1e6)))
        images = -torch.ones(len(z), 784) + 0.01 * z[:, :1]
        images[torch.arange(len(z)), digits] = 0.5 + 0.4 * torch.tanh(z[:, 1])
        images[digits == 1] += 0.3  # D's favourite: brighter all over
        return images


def test_choosing_within_each_digit_keeps_each_digits_share_of_the_training_set():
    weights = torch.tensor([12, 20, 10, 9, 11, 6, 8, 9, 8, 7], dtype=torch.float)  # G draws few sixes, many ones
    counts = torch.tensor([10, 11, 10, 10, 10, 9, 10, 10, 10, 10])  # the training set: nearly even
    prototypes = -torch.ones(10, 784)
    prototypes[torch.arange(10), torch.arange(10)] = 0.5  # training digit d: a bright pixel at place d
    training = (prototypes.repeat_interleave(counts, dim=0), torch.arange(10).repeat_interleave(counts))
    torch.manual_seed(0)
    candidates = DrawsDigits(weights)(torch.randn(4 * 500, 100))
    candidate_digits = candidates[:, :10].argmax(dim=1)
    torch.manual_seed(0)
    kept = gan_mnist.draw_the_best(DrawsDigits(weights), PrefersBright(), 500, 4, training=training)
    kept_digits = kept[:, :10].argmax(dim=1)
    # every digit keeps its share of the training set (D's favourite, the ones, no more)...
    assert (torch.bincount(kept_digits, minlength=10) - 500 * counts / counts.sum()).abs().max() < 1
    # ...and within each digit, the ones D rates most real
    for digit in range(10):
        realness = candidates[candidate_digits == digit].mean(dim=1)
        expected = realness.topk(int((kept_digits == digit).sum())).values
        torch.testing.assert_close(kept[kept_digits == digit].mean(dim=1).sort(descending=True).values, expected)
    # Chosen from all digits at once (no MNIST to read them), D keeps its favourite and loses the rarest.
    torch.manual_seed(0)
    at_once = gan_mnist.draw_the_best(DrawsDigits(weights), PrefersBright(), 500, 4)[:, :10].argmax(dim=1)
    drawn = torch.bincount(candidate_digits, minlength=10)
    assert (at_once == 1).sum() == drawn[1] and (at_once == 5).sum() < drawn[5] / 8


def test_the_shares_add_up_never_ask_for_more_than_were_drawn_and_are_fair_to_few():
    digits = torch.tensor([0] * 7 + [1] * 3 + [2] * 2)
    as_drawn = torch.bincount(digits, minlength=10) / len(digits)
    torch.manual_seed(0)
    kept = torch.stack([gan_mnist.digits_to_keep(digits, 4, as_drawn) for _ in range(3000)]).float()
    assert (kept.sum(dim=1) == 4).all()
    # 4 places shared 7:3:2 are 2.33, 1 and 0.67 places: on average, not the same 2, 1, 1 every time
    torch.testing.assert_close(kept.mean(dim=0)[:3], 4 * as_drawn[:3], atol=0.05, rtol=0)
    equal = torch.full((10,), 0.1)  # a rule that wants more twos than were drawn gets those there are
    keep = gan_mnist.digits_to_keep(digits, 10, equal)
    assert keep.sum() == 10 and keep[2] == 2 and (keep <= torch.bincount(digits, minlength=10)).all()


class Recorder:
    """A stand-in for the background writer: what would be drawn, in order."""

    def __init__(self):
        self.jobs = []

    def submit(self, function, *args, **options):
        self.jobs.append(args)


def test_d_picks_shows_the_most_and_least_real(tmp_path):
    files = Recorder()
    torch.manual_seed(0)
    gan_mnist.show_what_was_learned(DrawsItsNoise(), PrefersBright(), torch.randn(1024, 100), {}, None, None,
                                    tmp_path, files)
    [(most, least)] = [[images for _, images in panels] for panels, path, *_ in files.jobs if path.name == "d_picks.png"]
    assert most.shape == least.shape == (32, 784)
    assert most[:, 0].min() > least[:, 0].max()
    everything = torch.tanh(torch.randn(1024, 100, generator=torch.Generator().manual_seed(0))[:, 0])
    torch.testing.assert_close(most[:, 0], everything.sort(descending=True).values[:32])


@pytest.mark.parametrize("value, words", [("0", "--best-of must be a whole number of at least 1"),
                                          ("-1", "--best-of must be a whole number of at least 1"),
                                          ("64", "--generate 1024 --best-of 64 would draw 65536 digits")])
def test_bad_best_of_gets_one_line(tmp_path, value, words):
    assert_one_line_error(run_here("--generate", "1024", "--best-of", value, "--out-dir", tmp_path), words)


@pytest.mark.parametrize("value", ["3", str(gan_mnist.BEST_OF)])  # the default too: it was asked for
def test_best_of_without_generate_gets_one_line(tmp_path, value):
    assert_one_line_error(run_here("--best-of", value, "--out-dir", tmp_path), "--best-of chooses among what --generate")


def test_best_of_left_out_is_the_constant():
    assert gan_mnist.parse_args(["--generate", "8"]).best_of == gan_mnist.BEST_OF


@pytest.mark.parametrize("conditional", [False, True], ids=["article's GAN", "conditional"])
def test_generate_best_of_works_for_both_kinds_of_checkpoint(tiny_mnist, tmp_path, conditional):
    flags = ["--conditional"] if conditional else []
    trained = run_here("--data-dir", tiny_mnist, "--out-dir", tmp_path, "--epochs", "1", "--batch-size", "64",
                       "--device", "cpu", *flags)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "d_picks.png").is_file()  # drawn at the end of every run
    for extra in ([], ["--digit", "3"]) if conditional else ([],):
        result = run_here("--generate", "20", "--best-of", "3", "--out-dir", tmp_path, "--data-dir", tiny_mnist,
                          "--device", "cpu", *extra)
        assert result.returncode == 0, result.stderr
        assert "D's best of 3, digit by digit" in result.stdout and "d_picks.png" in result.stdout


def test_generate_without_mnist_says_so_in_one_line_and_chooses_from_all_at_once(finished_run, tmp_path):
    _, out_dir = finished_run
    result = run_here("--generate", "16", "--best-of", "2", "--checkpoint", out_dir / "checkpoint.pt",
                      "--out-dir", tmp_path, "--data-dir", tmp_path / "no_mnist_here", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    [said] = [line for line in result.stdout.splitlines() if line.startswith("No MNIST")]
    assert "D chooses from all digits at once" in said and "--data-dir" in said
    assert "16 digits, D's best of 2, all at once" in result.stdout  # as generated.png's title says
    from PIL import Image
    with Image.open(tmp_path / "generated.png") as image:
        assert image.format == "PNG" and image.width > 200
    assert not (tmp_path / "no_mnist_here").exists()
