"""Is my GAN any good? Numbers for a generator checkpoint, with real MNIST beside them.

    python benchmarks/quality.py outputs/checkpoint.pt [MORE.pt ...] [--samples 10000]

The first call trains a small CNN digit classifier on the MNIST training set
(about a minute on a 2-core CPU) and caches it under data/; later calls reuse it.
For each checkpoint it draws --samples digits and reports:

  digit FID   Frechet distance between the classifier's features of the
              samples and of the 10,000 test images (lower is better; real
              training images score near 0: that is the floor)
  score       classifier score, exp(mean KL(p(y|x) || p(y))): high when each
              sample is clearly one digit and all ten digits appear (ceiling 10)
  confident   share of samples the classifier labels with probability > 0.9
  0 .. 9      share of samples labelled as each digit (10% each in a fair world)

The first row is 10,000 real training images: the best a generator can do.

    python benchmarks/quality.py outputs/checkpoint.pt --best-of 1 2 3 4 6 --keep generator training equal all

scores the samples D picks, as `gan_mnist.py --generate --best-of K` draws them: one row
per K, and per rule for how many of each digit D keeps (the training set's share, which
gan_mnist.py uses; the generator's own share; an equal share; or all digits chosen at once).
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gan_mnist  # noqa: E402

CLASSIFIER_SETTINGS = {"version": 1, "epochs": 3, "batch_size": 128, "lr": 1e-3, "seed": 0}
CONFIDENT = 0.9
# How many of each digit D keeps with --best-of: gan_mnist.py's rule first, then those measured beside it.
RULES = {"training": "training share", "generator": "generator's share", "equal": "equal share",
         "all": "all at once"}


class DigitClassifier(nn.Module):
    """Two conv layers and two linear ones; the 128 features before the last
    layer play the part Inception's features play in the usual FID."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(),
        )
        self.classify = nn.Linear(128, 10)

    def forward(self, flat_images):
        return self.classify(self.features(flat_images.reshape(-1, 1, 28, 28)))


def classifier_cache_path(data_dir, cache_dir, settings):
    # Keyed by the settings and the training labels, so other data or settings train afresh.
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()
                         + gan_mnist.load_mnist(data_dir, train=True)[1].numpy().tobytes()).hexdigest()[:12]
    return Path(cache_dir) / f"quality_classifier_{key}.pt"


def get_classifier(data_dir, cache_dir, settings=CLASSIFIER_SETTINGS, log=print):
    """The cached classifier, or a newly trained one. Returns it with its test accuracy."""
    path = classifier_cache_path(data_dir, cache_dir, settings)
    classifier = DigitClassifier()
    test_images, test_labels = gan_mnist.load_mnist(data_dir, train=False)
    if path.is_file():
        classifier.load_state_dict(torch.load(path, weights_only=True))
    else:
        log(f"Training the digit classifier ({settings['epochs']} epochs); cached afterwards as {path}")
        images, labels = gan_mnist.load_mnist(data_dir, train=True)
        torch.manual_seed(settings["seed"])
        optimizer = torch.optim.Adam(classifier.parameters(), lr=settings["lr"])
        for _ in range(settings["epochs"]):
            for batch in torch.randperm(len(images)).split(settings["batch_size"]):
                loss = F.cross_entropy(classifier(images[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(classifier.state_dict(), path)
    classifier.eval()
    accuracy = (predict(classifier, test_images)[1].argmax(dim=1) == test_labels).float().mean().item()
    return classifier, accuracy


@torch.no_grad()
def predict(classifier, images):
    """Features and class probabilities for (N, 784) images in [-1, 1]."""
    features, probabilities = [], []
    for batch in images.split(1000):
        batch_features = classifier.features(batch.reshape(-1, 1, 28, 28))
        features.append(batch_features)
        probabilities.append(F.softmax(classifier.classify(batch_features), dim=1))
    return torch.cat(features), torch.cat(probabilities)


def frechet_distance(features_a, features_b):
    """|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)) between two Gaussian fits."""
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # Tr((C_a C_b)^(1/2)) = sum of sqrt(eigenvalues) of C_a^(1/2) C_b C_a^(1/2), a symmetric matrix.
    values, vectors = torch.linalg.eigh(cov_a)
    sqrt_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0).sqrt().sum()
    return ((mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


def score_images(classifier, images, test_features):
    features, probabilities = predict(classifier, images)
    marginal = probabilities.mean(dim=0)
    kl = (probabilities * (probabilities.clamp(min=1e-12).log() - marginal.clamp(min=1e-12).log())).sum(dim=1)
    shares = torch.bincount(probabilities.argmax(dim=1), minlength=10).float() / len(images)
    return {
        "fid": frechet_distance(features, test_features),
        "score": kl.mean().exp().item(),
        "confident": (probabilities.max(dim=1).values > CONFIDENT).float().mean().item(),
        "shares": shares.tolist(),
    }


@torch.no_grad()
def generate_from_checkpoint(path, samples, seed, best_of=1, training=None):
    """Samples in [-1, 1] from a gan_mnist checkpoint, or from one whose generator learned
    [0, 1] pixels (benchmarks/article_loop.py's, or a --article-pixels run): clamped to what
    a picture shows, then rescaled. With best_of > 1, as `gan_mnist.py --generate --best-of`
    draws them: best_of times as many, of which the checkpoint's D keeps the most real within
    each digit (training: MNIST's training images in [-1, 1] and labels, which read the digits).
    Returns the samples and, from a conditional checkpoint, the digit each was asked to
    be (equally many of each; else None)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = {"num_classes": 0, "lr": gan_mnist.LR, "betas": gan_mnist.BETAS, **checkpoint["config"]}
    generator, discriminator, *_ = gan_mnist.build_gan(argparse.Namespace(**config), "cpu")
    generator.load_state_dict(checkpoint["generator"])
    if best_of > 1:
        discriminator.load_state_dict(checkpoint["discriminator"])
    torch.manual_seed(seed)
    labels = gan_mnist.digits_in_order(generator, samples, "cpu")
    low, high = config.get("pixel_range", (0.0, 1.0) if config.get("article_pixels") else (-1.0, 1.0))
    if training is not None:  # on the generator's own scale, as gan_mnist.py --generate reads them
        training = ((training[0] + 1) / 2 * (high - low) + low, training[1])
    images = gan_mnist.draw_the_best(generator, discriminator, samples, best_of, labels, training)
    return (images.clamp(low, high) - low) / (high - low) * 2 - 1, labels


def asked_digit_shares(classifier, images, labels):
    """Per digit asked for (0 to 9), the share of its samples the classifier calls that digit."""
    said = predict(classifier, images)[1].argmax(dim=1)
    return [(said[labels == digit] == digit).float().mean().item() for digit in range(10)]


def format_row(name, figures):
    shares = " ".join(f"{100 * share:4.1f}" for share in figures["shares"])
    return f"{name:<44} {figures['fid']:8.2f} {figures['score']:6.2f} {100 * figures['confident']:8.1f}%  {shares}"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Digit FID, classifier score and class coverage of GAN samples.")
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint files to score")
    parser.add_argument("--samples", type=int, default=10_000, help="digits to draw from each generator")
    parser.add_argument("--data-dir", default=gan_mnist.DATA_DIR, help="the MNIST folder, as for gan_mnist.py")
    parser.add_argument("--cache-dir", default=gan_mnist.DATA_DIR, help="where the classifier is cached")
    parser.add_argument("--seed", type=int, default=0, help="seed for the noise the samples are drawn from")
    parser.add_argument("--best-of", type=int, nargs="+", default=[1], metavar="K",
                        help="score the samples D picks, best of K (as gan_mnist.py --generate --best-of K); "
                             "one row per K (1: the generator alone)")
    parser.add_argument("--keep", nargs="+", choices=list(RULES), default=["training"],
                        help="with --best-of: how many of each digit D keeps: the training set's share (as "
                             "gan_mnist.py does), the generator's own share, an equal share, or all digits chosen at "
                             "once; one row per rule")
    parser.add_argument("--grids", type=Path, help="also save each checkpoint's first 64 samples here, as PNG")
    parser.add_argument("--classifier-epochs", type=int, default=CLASSIFIER_SETTINGS["epochs"],
                        help=argparse.SUPPRESS)  # tests train a throwaway classifier on tiny data
    args = parser.parse_args(argv)
    gan_mnist.make_cpu_arithmetic_repeatable()  # the same figures every time on one machine

    settings = {**CLASSIFIER_SETTINGS, "epochs": args.classifier_epochs}
    classifier, accuracy = get_classifier(args.data_dir, args.cache_dir, settings)
    print(f"digit classifier: {100 * accuracy:.2f}% correct on the 10,000 test images")
    test_features, _ = predict(classifier, gan_mnist.load_mnist(args.data_dir, train=False)[0])
    train_images, train_labels = gan_mnist.load_mnist(args.data_dir, train=True)
    real = train_images[torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))[:args.samples]]
    rule_shares = {"generator": lambda digits: torch.bincount(digits, minlength=10).cpu() / len(digits),
                   "equal": lambda digits: torch.full((10,), 0.1)}
    keep_in_shares, read_digits, digits_read = gan_mnist.digits_to_keep, gan_mnist.nearest_training_digits, {}

    def read_digits_once(images, training_images, k):  # the same candidates under every rule: read them once
        key = (hashlib.sha256(images.cpu().numpy().tobytes()).hexdigest(), len(training_images), k)
        if key not in digits_read:
            digits_read[key] = read_digits(images, training_images, k)
        return digits_read[key]

    gan_mnist.nearest_training_digits = read_digits_once

    header = f"{'images':<44} {'FID':>8} {'score':>6} {'conf>0.9':>9}  " + " ".join(f"{d:>4}" for d in range(10))
    print(header)
    print("-" * len(header))
    print(format_row(f"real training images ({len(real)})", score_images(classifier, real, test_features)))
    for path, best_of, rule in [(path, best_of, rule) for path in args.checkpoints for best_of in args.best_of
                                for rule in (args.keep if best_of > 1 else ["training"])]:
        gan_mnist.digits_to_keep = keep_in_shares if rule not in rule_shares else (
            lambda digits, count, _, rule=rule: keep_in_shares(digits, count, rule_shares[rule](digits)))
        training = None if rule == "all" else (train_images, train_labels)
        start = time.perf_counter()
        samples, labels = generate_from_checkpoint(path, args.samples, args.seed, best_of, training)
        seconds = time.perf_counter() - start  # to draw and choose the samples (digits read once for all rules)
        name = path.name if best_of == 1 else f"{path.name} best of {best_of}"
        name += f" ({RULES[rule]})" if best_of > 1 and rule != "training" else ""
        print(format_row(name, score_images(classifier, samples, test_features)) + f"  ({seconds:.2f} s)", flush=True)
        if labels is not None:
            shares = asked_digit_shares(classifier, samples, labels)
            lowest = min(range(10), key=shares.__getitem__)
            print(f"  asked-for digit drawn: mean {100 * sum(shares) / 10:.1f}%, lowest {100 * shares[lowest]:.1f}% "
                  f"({lowest}); per digit 0-9: " + " ".join(f"{100 * share:.1f}" for share in shares), flush=True)
        if args.grids:
            args.grids.mkdir(parents=True, exist_ok=True)
            stem = path.stem if best_of == 1 else f"{path.stem}_best_of_{best_of}_{rule}"
            gan_mnist.draw_digits([(stem, samples[:64])], args.grids / f"{stem}.png")

if __name__ == "__main__":
    main()
