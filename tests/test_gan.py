"""The GAN itself: the networks, the data, the losses and one training step."""
import subprocess
import sys

import pytest
import torch

import gan_mnist
from conftest import ROOT


def test_import_has_no_side_effects(tmp_path):
    # Import from an empty folder: nothing may be printed, created or downloaded.
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import gan_mnist"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


# The article's section 5, setting by setting: epochs = 200, batch_size=128, lr = 0.0002,
# Adam's own betas, z_dim = 100, 256 hidden units, sample_period = 1000, ToTensor()'s
# [0, 1] pixels, plain BCE (no penalty), an unconditional GAN, data in ./data.
ARTICLE_SETTINGS = {"EPOCHS": 200, "BATCH_SIZE": 128, "LR": 2e-4, "BETAS": (0.9, 0.999), "Z_DIM": 100,
                    "HIDDEN_DIM": 256, "SAMPLE_EVERY": 1000, "ARTICLE_PIXELS": True, "GP_GAMMA": 0.0,
                    "CONDITIONAL": False, "DATA_DIR": "data", "IMAGE_DIM": 784, "GRID_SIZE": 64}
# Where the script departs on purpose, each explained where the constant is set.
DEPARTURES = {"BETAS", "ARTICLE_PIXELS", "GP_GAMMA"}


def test_defaults_match_the_article_except_the_named_departures():
    for name, article_value in ARTICLE_SETTINGS.items():
        ours = getattr(gan_mnist, name)
        if name in DEPARTURES:
            assert ours != article_value, f"{name} is listed as a departure but is the article's {article_value!r}"
        else:
            assert ours == article_value, f"{name} is {ours!r}, the article's is {article_value!r}"
    # every departure can be undone from the command line, giving the article's value back
    article = gan_mnist.parse_args(["--betas", "0.9", "0.999", "--article-pixels", "--gp-gamma", "0"])
    assert (article.betas, article.article_pixels, article.gp_gamma) == (
        ARTICLE_SETTINGS["BETAS"], ARTICLE_SETTINGS["ARTICLE_PIXELS"], ARTICLE_SETTINGS["GP_GAMMA"])


def test_flags_override_constants():
    args = gan_mnist.parse_args(["--epochs", "3", "--batch-size", "32", "--lr", "0.001", "--betas", "0.9", "0.99",
                                 "--seed", "7", "--sample-every", "5", "--max-steps", "11", "--out-dir", "x"])
    assert (args.epochs, args.batch_size, args.lr, args.betas, args.seed) == (3, 32, 0.001, (0.9, 0.99), 7)
    assert (args.sample_every, args.max_steps, args.out_dir) == (5, 11, "x")


def test_generator_shapes_and_range():
    generator = gan_mnist.Generator(z_dim=100, hidden_dim=256, image_dim=784)
    assert generator.z_dim == 100
    # Large z pushes Tanh towards its ends; the output must still stay inside [-1, 1].
    images = generator(torch.randn(37, 100) * 50)
    assert images.shape == (37, 784)
    assert images.min() >= -1 and images.max() <= 1
    assert images.min() < -0.9 and images.max() > 0.9  # really uses the range


def test_discriminator_returns_one_logit_per_image():
    torch.manual_seed(0)
    discriminator = gan_mnist.Discriminator(image_dim=784, hidden_dim=256)
    logits = discriminator(torch.rand(37, 784) * 2 - 1)
    assert logits.shape == (37, 1)
    # Logits, not probabilities: the article's Sigmoid is inside the loss now,
    # so strong inputs give scores below 0 and above 1.
    assert not any(isinstance(layer, torch.nn.Sigmoid) for layer in discriminator.modules())
    big = discriminator(torch.randn(64, 784) * 50)
    assert (big < 0).any() and (big > 1).any()


def test_loss_equals_the_articles_sigmoid_plus_bceloss():
    logits = torch.tensor([[-30.0], [-2.0], [0.0], [3.0]])
    ours = gan_mnist.discriminator_loss(logits, logits.flip(0))
    probabilities = torch.sigmoid(logits)
    article = (torch.nn.BCELoss()(probabilities, torch.ones_like(probabilities))
               + torch.nn.BCELoss()(probabilities.flip(0), torch.zeros_like(probabilities)))
    torch.testing.assert_close(ours, article, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gan_mnist.generator_loss(logits),
                               torch.nn.BCELoss()(probabilities, torch.ones_like(probabilities)), rtol=1e-4, atol=1e-4)


def test_real_images_are_scaled_to_minus_one_one(tiny_mnist):
    images, labels = gan_mnist.load_mnist(tiny_mnist, train=True)
    assert labels.shape == (200,) and labels.dtype == torch.long  # read in the same pass
    assert images.shape == (200, 784) and images.dtype == torch.float32
    assert images.min() == -1 and images.max() == 1  # pixel 0 -> -1, pixel 255 -> 1
    pixels = (tiny_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()[16:16 + 784]
    expected = torch.tensor(list(pixels), dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(images[0], expected)


def test_article_pixels_replays_the_articles_zero_to_one_range(tiny_mnist):
    article, _ = gan_mnist.load_mnist(tiny_mnist, train=True, article_pixels=True)
    assert article.min() == 0 and article.max() == 1  # what ToTensor() gives
    torch.testing.assert_close(article * 2 - 1, gan_mnist.load_mnist(tiny_mnist, train=True)[0])
    assert gan_mnist.parse_args(["--article-pixels"]).article_pixels is True


def test_batches_cover_the_data_once_and_the_last_may_be_smaller(tiny_mnist):
    images, labels = gan_mnist.load_mnist(tiny_mnist, train=True)
    batches = list(gan_mnist.shuffled_batches(images, labels, batch_size=64, seed=0, epoch=0))
    assert [len(batch) for batch, _ in batches] == [64, 64, 64, 8]
    seen, seen_labels = torch.cat([batch for batch, _ in batches]), torch.cat([label for _, label in batches])
    # Every image exactly once, in a shuffled order, each with its own label.
    assert torch.equal(seen.sort(dim=0).values, images.sort(dim=0).values)
    assert not torch.equal(seen, images)
    for image, label in zip(seen[:20], seen_labels[:20]):
        assert label == labels[(images == image).all(dim=1)].item()


def test_each_epoch_has_its_own_repeatable_order(tiny_mnist):
    images, labels = gan_mnist.load_mnist(tiny_mnist, train=True)

    def epoch(number, skip=0):
        return torch.cat([batch for batch, _ in gan_mnist.shuffled_batches(images, labels, 64, 0, number, skip)])

    first, second = epoch(0), epoch(1)
    assert not torch.equal(first, second) and torch.equal(epoch(1), second)
    assert torch.equal(epoch(1, skip=2), second[128:])  # a run resumed after 2 batches sees the rest


def make_models(seed=0):
    torch.manual_seed(seed)
    generator = gan_mnist.Generator(100, 256)
    discriminator = gan_mnist.Discriminator(784, 256)
    g_optimizer, d_optimizer = gan_mnist.make_optimizers(generator, discriminator, 2e-4, (0.5, 0.999))
    return generator, discriminator, g_optimizer, d_optimizer


def test_a_discriminator_step_lowers_its_loss(tiny_mnist):
    generator, discriminator, g_optimizer, d_optimizer = make_models()
    real = gan_mnist.load_mnist(tiny_mnist)[0][:64]
    fake = generator(torch.randn(64, 100)).detach()

    def d_loss():
        with torch.no_grad():
            return gan_mnist.discriminator_loss(discriminator(real), discriminator(fake)).item()

    before = d_loss()
    loss = gan_mnist.discriminator_loss(discriminator(real), discriminator(fake))
    d_optimizer.zero_grad()
    loss.backward()
    d_optimizer.step()
    assert d_loss() < before


def test_a_training_step_raises_d_of_g_of_z(tiny_mnist):
    generator, discriminator, g_optimizer, d_optimizer = make_models()
    real = gan_mnist.load_mnist(tiny_mnist)[0][:64]
    z = torch.randn(64, 100)
    torch.manual_seed(1)
    # train_step updates D first, then G; judge G with the D it faced.
    gan_mnist.train_step(generator, discriminator, g_optimizer, d_optimizer, real)
    with torch.no_grad():
        before = torch.sigmoid(discriminator(generator(z))).mean().item()
    g_loss = gan_mnist.generator_loss(discriminator(generator(z)))
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    with torch.no_grad():
        after = torch.sigmoid(discriminator(generator(z))).mean().item()
    assert after > before


def test_train_step_updates_both_networks_and_reports_metrics(tiny_mnist):
    generator, discriminator, g_optimizer, d_optimizer = make_models()
    g_before = [p.detach().clone() for p in generator.parameters()]
    d_before = [p.detach().clone() for p in discriminator.parameters()]
    metrics = gan_mnist.train_step(generator, discriminator, g_optimizer, d_optimizer,
                                   gan_mnist.load_mnist(tiny_mnist)[0][:50])
    assert metrics.shape == (4,) and not metrics.requires_grad
    d_loss, g_loss, d_x, d_g_z = metrics.tolist()
    assert d_loss > 0 and g_loss > 0 and 0 < d_x < 1 and 0 < d_g_z < 1
    assert all(not torch.equal(a, b) for a, b in zip(g_before, generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, discriminator.parameters()))
    # D must be trainable again after the generator's half of the step.
    assert all(p.requires_grad for p in discriminator.parameters())


# ---- The gradient penalty ----------------------------------------------------------------
def train_step_before_the_penalty(generator, discriminator, g_optimizer, d_optimizer, real_images):
    """train_step as it was before the gradient penalty existed, word for word."""
    z = torch.randn(len(real_images), generator.z_dim, device=real_images.device)
    fake_images = generator(z)
    logits = discriminator(torch.cat([real_images, fake_images.detach()]))
    real_logits, fake_logits = logits.split([len(real_images), len(fake_images)])
    d_loss = gan_mnist.discriminator_loss(real_logits, fake_logits)
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
    discriminator.requires_grad_(False)
    g_loss = gan_mnist.generator_loss(discriminator(fake_images))
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    discriminator.requires_grad_(True)
    return torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()]).detach()


def run_steps(step_function, penalties, seed=0):
    models = make_models(seed)
    batches = torch.rand(len(penalties), 32, 784, generator=torch.Generator().manual_seed(5)) * 2 - 1
    torch.manual_seed(9)
    metrics = [step_function(*models, batch, *penalty) for batch, penalty in zip(batches, penalties)]
    return torch.stack(metrics), [p.detach().clone() for model in models[:2] for p in model.parameters()]


def test_a_penalty_of_zero_is_exactly_the_step_without_one():
    before_metrics, before_weights = run_steps(train_step_before_the_penalty, [()] * 6)
    metrics, weights = run_steps(gan_mnist.train_step, [(0.0,)] * 6)
    assert torch.equal(metrics, before_metrics)
    assert all(torch.equal(a, b) for a, b in zip(weights, before_weights))
    # ...and a penalty really changes the step.
    _, penalised = run_steps(gan_mnist.train_step, [(8.0,)] * 6)
    assert not all(torch.equal(a, b) for a, b in zip(weights, penalised))


def test_the_gradient_penalty_matches_a_hand_computed_value():
    # D(x) = w2 . leaky_relu(W1 x + b1) + b2, with two pixels and two hidden units.
    discriminator = gan_mnist.Discriminator(image_dim=2, hidden_dim=2)
    with torch.no_grad():
        discriminator.disc[0].weight.copy_(torch.tensor([[1.0, 2.0], [-3.0, 1.0]]))
        discriminator.disc[0].bias.zero_()
        discriminator.disc[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
        discriminator.disc[2].bias.zero_()
    # Real image (1, 1): both hidden units are 3 and -2, slopes 1 and 0.2, so the
    # gradient is 2 * 1 * (1, 2) + (-1) * 0.2 * (-3, 1) = (2.6, 3.8), squared norm 21.2.
    # Fake image (-1, 1): hidden 1 and 4, both slopes 1: 2 * (1, 2) - (-3, 1) = (5, 3), squared norm 34.
    images = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], requires_grad=True)
    penalty = gan_mnist.gradient_penalty(discriminator(images), images, gamma=0.5)
    assert penalty.item() == pytest.approx(0.5 / 2 * (21.2 + 34.0))
    # It is differentiable with respect to D's weights: that is how it trains D.
    penalty.backward()
    assert discriminator.disc[0].weight.grad.abs().sum() > 0


def test_the_penalty_is_lazy_every_few_steps_and_made_stronger_to_match():
    assert [gan_mnist.penalty_for_step(step, 2.0, 4) for step in range(9)] == [8, 0, 0, 0, 8, 0, 0, 0, 8]
    assert [gan_mnist.penalty_for_step(step, 2.0, 1) for step in range(3)] == [2, 2, 2]
    assert [gan_mnist.penalty_for_step(step, 0.0, 1) for step in range(3)] == [0, 0, 0]


def test_the_penalty_flags_override_the_constants_and_zero_is_the_article():
    args = gan_mnist.parse_args(["--gp-gamma", "0", "--gp-every", "3"])
    assert (args.gp_gamma, args.gp_every) == (0.0, 3)
    assert [gan_mnist.penalty_for_step(step, args.gp_gamma, args.gp_every) for step in range(4)] == [0] * 4


def test_no_two_seeds_share_an_epochs_order(tiny_mnist):
    images, labels = gan_mnist.load_mnist(tiny_mnist, train=True)

    def order(seed, epoch):
        return torch.cat([batch for batch, _ in gan_mnist.shuffled_batches(images, labels, 64, seed, epoch)])

    orders = {(seed, epoch): order(seed, epoch) for seed in range(4) for epoch in range(4)}
    assert not torch.equal(orders[1, 0], orders[0, 1])  # the same order when it came from seed + epoch
    for (a, first), (b, second) in [(a, b) for a in orders.items() for b in orders.items() if a[0] < b[0]]:
        assert not torch.equal(first, second), f"seed, epoch {a} and {b} share their order"
