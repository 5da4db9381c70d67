"""Which settings? Many GANs of gan_mnist's shape, trained side by side and scored.

    python benchmarks/sweep.py --device cuda        # the README's penalty table: 8 seeds, 200 epochs
    python benchmarks/sweep.py --seeds 0 1 2 3 --epochs 50 --eval-at 25 50     # the same, smaller, on a CPU
    python benchmarks/sweep.py --settings "gamma=0" "gamma=1 every=8 r2=0" "betas=0.5,0.999 pack=2"

A setting is a few key=value words; a key left out takes the value in brackets:
  betas=B1,B2  Adam's betas (gan_mnist.BETAS)
  gamma=G      gradient penalty strength, gan_mnist.gradient_penalty (0: none)
  every=N      apply the penalty every N steps, N times as strong (1)
  r2=0|1       1: penalise D's slope at real and generated images (R1 + R2); 0: at real ones only (1)
  pack=K       PacGAN: D judges K images at once, its first layer K * 784 wide (1: the article's D)

Each (setting, seed) pair is one run: gan_mnist's Generator and Discriminator,
initialised as gan_mnist.py initialises them for that seed, the same loss,
step, learning rate and batch size. Every setting sees the same data order
and noise for a given seed, so settings differ by their setting alone. A
setting's seeds are stacked along a first dimension and take their steps at
once (batched matrix products); the settings run one after another, which
also times each one. One GAN run is noisy (see the README's Quality
section): many seeds per setting make a comparison of settings fair.

At each --eval-at epoch it scores every run with benchmarks/quality.py's
classifier, and at the end prints, per setting, over its seeds: the mean
digit FID (with the best and worst run), the share of confidently labelled
samples, the rarest digit's share, the share of ones, in how many runs a
grid of 64 samples holds all ten digits, and the time of one run's step.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gan_mnist  # noqa: E402
import quality  # noqa: E402

# The penalty sweep behind the README's table.
SETTINGS = ["gamma=0", "gamma=1", "gamma=1 every=8", "gamma=0.1 every=8", "gamma=10 every=8",
            "gamma=1 every=8 r2=0", "pack=2", "gamma=1 every=8 pack=2"]
DEFAULTS = {"betas": gan_mnist.BETAS, "gamma": 0.0, "every": 1, "r2": 1, "pack": 1}
GRID_SIZE = 64


def parse_setting(text):
    setting = dict(DEFAULTS)
    try:
        for word in text.split():
            key, value = word.split("=")
            if key not in DEFAULTS:
                raise ValueError
            if key == "betas":
                setting[key] = tuple(float(beta) for beta in value.split(","))
                if len(setting[key]) != 2:
                    raise ValueError
            else:
                setting[key] = type(DEFAULTS[key])(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting is key=value words with keys {', '.join(DEFAULTS)}, "
                                         f"such as 'gamma=1 every=8'; not {text!r}") from None
    setting["name"] = text
    return setting


def stacked_networks(seeds, device, pack=1):
    """[W1, b1, W2, b2] for G and for D, each with a first dimension of one slice per run.
    Slice r holds the weights gan_mnist.py starts with for seeds[r]; W is stored (in, out)."""
    generators, discriminators = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        # gan_mnist.train's order; a packed D is the same network with a wider first layer.
        generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator(pack * gan_mnist.IMAGE_DIM)
        generators.append([generator.gen[0].weight.T, generator.gen[0].bias,
                           generator.gen[2].weight.T, generator.gen[2].bias])
        discriminators.append([discriminator.disc[0].weight.T, discriminator.disc[0].bias,
                               discriminator.disc[2].weight.T, discriminator.disc[2].bias])

    def stack(per_run):
        return [torch.stack([run[i] for run in per_run]).detach().to(device).requires_grad_() for i in range(4)]

    return stack(generators), stack(discriminators)


def two_layer_mlp(inputs, weights):
    """Linear, LeakyReLU(0.2), Linear for every run at once: inputs (runs, N, in)."""
    w1, b1, w2, b2 = weights
    hidden = F.leaky_relu(torch.baddbmm(b1.unsqueeze(1), inputs, w1), 0.2)
    return torch.baddbmm(b2.unsqueeze(1), hidden, w2)


def generate(generator_weights, z):
    return torch.tanh(two_layer_mlp(z, generator_weights))


def packed(images, pack):
    """(runs, N, 784) -> (runs, N // pack, pack * 784): PacGAN's D sees `pack` images as one input."""
    runs, count, size = images.shape
    usable = count // pack * pack
    return images[:, :usable].reshape(runs, usable // pack, pack * size)


def sweep_step(generator, discriminator, g_optimizer, d_optimizer, real_images, z, penalty_gamma=0.0, r2=True,
               pack=1):
    """gan_mnist.train_step for every run at once: real_images (runs, batch, 784), z (runs, batch, 100)."""
    fake_images = generate(generator, z)
    real_inputs, fake_inputs = packed(real_images, pack), packed(fake_images.detach(), pack)
    d_inputs = torch.cat([real_inputs, fake_inputs], dim=1).requires_grad_(penalty_gamma > 0)
    logits = two_layer_mlp(d_inputs, discriminator)
    real_logits, fake_logits = logits.split(real_inputs.shape[1], dim=1)
    # Each run's loss is a mean over its batch; summing the runs keeps their gradients apart.
    real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits), reduction="none")
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="none")
    d_loss = real_loss.mean(dim=(1, 2)) + fake_loss.mean(dim=(1, 2))
    if penalty_gamma > 0:  # gan_mnist.gradient_penalty, per run; r2=False keeps R1 alone
        (slopes,) = torch.autograd.grad(logits.sum(), d_inputs, create_graph=True)
        real_slopes, fake_slopes = slopes.square().sum(dim=2).split(real_inputs.shape[1], dim=1)
        d_loss = d_loss + penalty_gamma / 2 * (real_slopes.mean(dim=1) + r2 * fake_slopes.mean(dim=1))
    d_optimizer.zero_grad()
    d_loss.sum().backward()
    d_optimizer.step()

    for param in discriminator:
        param.requires_grad_(False)
    fake_logits = two_layer_mlp(packed(fake_images, pack), discriminator)
    g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits), reduction="none")
    g_optimizer.zero_grad()
    g_loss.mean(dim=(1, 2)).sum().backward()
    g_optimizer.step()
    for param in discriminator:
        param.requires_grad_(True)


@torch.no_grad()
def score_runs(generator, classifier, test_features, samples, grid_noise):
    """Per run: digit FID, confident share, digit shares, and the number of kinds in its 64-digit grid."""
    device = grid_noise.device
    z = torch.randn(samples, gan_mnist.Z_DIM, device=device, generator=torch.Generator(device).manual_seed(7))
    scores = []
    for run in range(len(generator[0])):
        weights = [param[run:run + 1] for param in generator]
        figures = quality.score_images(classifier, generate(weights, z.unsqueeze(0))[0], test_features)
        grid_labels = quality.predict(classifier, generate(weights, grid_noise[run:run + 1])[0])[1].argmax(dim=1)
        figures["kinds"] = len(grid_labels.unique())
        scores.append(figures)
    return scores


def train_setting(setting, seeds, images, epochs, eval_at, max_steps, score):
    """Trains one setting's runs side by side; returns {epoch: scores} and the seconds one run's step took."""
    device = images.device
    generator, discriminator = stacked_networks(seeds, device, setting["pack"])
    # Adam works weight by weight, so one Adam over the stacked weights is each run's own Adam.
    g_optimizer = torch.optim.Adam(generator, gan_mnist.LR, betas=setting["betas"], fused=True)
    d_optimizer = torch.optim.Adam(discriminator, gan_mnist.LR, betas=setting["betas"], fused=True)
    # Each seed's own data order and noise, the same in every setting.
    streams = [torch.Generator(device).manual_seed(1234 + seed) for seed in seeds]
    results, step, training_seconds = {}, 0, 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        orders = torch.stack([torch.randperm(len(images), device=device, generator=s) for s in streams])
        for indices in orders.split(gan_mnist.BATCH_SIZE, dim=1):
            z = torch.stack([torch.randn(indices.shape[1], gan_mnist.Z_DIM, device=device, generator=s)
                             for s in streams])
            penalty_gamma = gan_mnist.penalty_for_step(step, setting["gamma"], setting["every"])
            sweep_step(generator, discriminator, g_optimizer, d_optimizer, images[indices], z, penalty_gamma,
                       bool(setting["r2"]), setting["pack"])
            step += 1
            if max_steps and step >= max_steps:
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        training_seconds += time.perf_counter() - start
        stopping = bool(max_steps and step >= max_steps)
        if epoch in eval_at or stopping:
            results[epoch] = score(generator)
        if stopping:
            break
    return results, training_seconds / step / len(seeds)


def mean(values):
    return sum(values) / len(values)


def report(epoch, rows):
    print(f"\nepoch {epoch}, mean over each setting's seeds (FID: mean [best .. worst]; "
          f"step: one run's share of a stacked step)")
    width = max(len(name) for name, _, _ in rows) + 1
    print(f"{'setting':<{width}} {'digit FID':>27} {'confident':>10} {'rarest':>7} {'ones':>6} "
          f"{'all ten in 64':>14} {'step':>9}")
    for name, runs, seconds_per_step in rows:
        fids = [run["fid"] for run in runs]
        print(name.ljust(width)
              + f" {mean(fids):8.1f} [{min(fids):6.1f} .. {max(fids):6.1f}]"
              + f" {100 * mean([run['confident'] for run in runs]):9.1f}%"
              + f" {100 * mean([min(run['shares']) for run in runs]):6.1f}%"
              + f" {100 * mean([run['shares'][1] for run in runs]):5.1f}%"
              + f" {sum(run['kinds'] == 10 for run in runs):>10} of {len(runs)}"
              + f" {1000 * seconds_per_step:6.2f} ms", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train GANs with several settings, many seeds each, and score them.")
    parser.add_argument("--settings", type=parse_setting, nargs="+", default=[parse_setting(s) for s in SETTINGS],
                        help="settings to compare, each a quoted string of key=value words (see the docstring)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="seeds per setting (0 .. 7)")
    parser.add_argument("--epochs", type=int, default=gan_mnist.EPOCHS)
    parser.add_argument("--eval-at", type=int, nargs="+", default=[50, 100, 200], help="epochs to score at")
    parser.add_argument("--samples", type=int, default=5000, help="samples per run for the scores")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (a quick check); scores then")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--data-dir", default=gan_mnist.DATA_DIR, help="the MNIST folder, as for gan_mnist.py")
    parser.add_argument("--cache-dir", default=gan_mnist.DATA_DIR, help="where quality.py's classifier is cached")
    parser.add_argument("--classifier-epochs", type=int, default=quality.CLASSIFIER_SETTINGS["epochs"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gan_mnist.make_cpu_arithmetic_repeatable()
    device = gan_mnist.pick_device(args.device)

    settings = {**quality.CLASSIFIER_SETTINGS, "epochs": args.classifier_epochs}
    classifier, _ = quality.get_classifier(args.data_dir, args.cache_dir, settings)
    classifier = classifier.to(device)
    test_features = quality.predict(classifier, gan_mnist.load_mnist(args.data_dir, train=False)[0].to(device))[0]
    images = gan_mnist.load_mnist(args.data_dir, train=True)[0].to(device)
    grid_noise = torch.randn(len(args.seeds), GRID_SIZE, gan_mnist.Z_DIM, device=device,
                             generator=torch.Generator(device).manual_seed(99))
    print(f"{len(args.settings) * len(args.seeds)} runs ({len(args.settings)} settings x {len(args.seeds)} seeds) "
          f"on {gan_mnist.describe_device(device)}", flush=True)

    def score(generator):
        return score_runs(generator, classifier, test_features, args.samples, grid_noise)

    table = {}  # epoch -> [(setting's name, its runs' scores, seconds per step)]
    for setting in args.settings:
        results, seconds_per_step = train_setting(setting, args.seeds, images, args.epochs, args.eval_at,
                                                  args.max_steps, score)
        for epoch, runs in results.items():
            table.setdefault(epoch, []).append((setting["name"], runs, seconds_per_step))
        last = max(results)
        print(f"{setting['name']}: done, {1000 * seconds_per_step:.2f} ms per run's step; at epoch {last} "
              f"FID {mean([run['fid'] for run in results[last]]):.1f}", flush=True)
    for epoch in sorted(table):
        report(epoch, table[epoch])


if __name__ == "__main__":
    main()
