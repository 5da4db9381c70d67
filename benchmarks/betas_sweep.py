"""Which Adam betas? Many GANs of gan_mnist's shape, trained side by side and scored.

    python benchmarks/betas_sweep.py --device cuda       # the README's table: 8 settings x 8 seeds, 200 epochs
    python benchmarks/betas_sweep.py --betas 0.5,0.999 0,0.999 --seeds 0 1 --epochs 25

Each (betas, seed) pair is one run: gan_mnist's Generator and Discriminator,
initialised as gan_mnist.py initialises them for that seed, the same loss,
step, learning rate and batch size, with its own data order and noise. The
runs' weights are stacked along a first dimension and every run takes its
step at once (batched matrix products), so a GPU trains 64 runs in about the
time of a few. One GAN run is noisy (see the README's Quality section); many
seeds per setting are what make a comparison of settings fair.

At each --eval-at epoch it prints, per setting, over its seeds: the mean digit
FID (with the best and worst run), the share of confidently labelled samples,
the rarest digit's share, the share of ones, and in how many runs a grid of
64 samples holds all ten digits.
The scores come from benchmarks/quality.py's classifier.
"""
import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gan_mnist  # noqa: E402
import quality  # noqa: E402

SETTINGS = ["0.5,0.999", "0.5,0.99", "0.5,0.9", "0,0.9", "0,0.999", "0.9,0.999", "0.3,0.999"]
GRID_SIZE = 64


def stacked_networks(seeds, device):
    """[W1, b1, W2, b2] for G and for D, each with a first dimension of one slice per run.
    Slice r holds the weights gan_mnist.py starts with for seeds[r]; W is stored (in, out)."""
    generators, discriminators = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        generator, discriminator = gan_mnist.Generator(), gan_mnist.Discriminator()  # gan_mnist.train's order
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


class StackedAdam:
    """torch.optim.Adam's update, written out, with its own betas for each run."""

    def __init__(self, params, lr, beta1, beta2):
        self.params, self.lr, self.steps = params, lr, 0
        self.beta1, self.beta2 = beta1, beta2  # (runs,)
        self.first_moments = [torch.zeros_like(p) for p in params]
        self.second_moments = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self):
        self.steps += 1
        for param, m, v in zip(self.params, self.first_moments, self.second_moments):
            per_run = (-1,) + (1,) * (param.dim() - 1)  # broadcast each run's betas over its slice
            beta1, beta2 = self.beta1.view(per_run), self.beta2.view(per_run)
            m.lerp_(param.grad, 1 - beta1)
            v.lerp_(param.grad.square(), 1 - beta2)
            bias_correction1, bias_correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
            denominator = (v.sqrt() / bias_correction2.sqrt()).add_(1e-8)
            param.sub_(m / denominator * (self.lr / bias_correction1))
            param.grad = None


def sweep_step(generator, discriminator, g_optimizer, d_optimizer, real_images, z):
    """gan_mnist.train_step for every run at once: real_images (runs, batch, 784), z (runs, batch, 100)."""
    batch = real_images.shape[1]
    fake_images = generate(generator, z)

    logits = two_layer_mlp(torch.cat([real_images, fake_images.detach()], dim=1), discriminator)
    real_logits, fake_logits = logits.split(batch, dim=1)
    # Each run's loss is a mean over its batch; summing the runs keeps their gradients apart.
    real_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits), reduction="none")
    fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="none")
    (real_loss.mean(dim=(1, 2)) + fake_loss.mean(dim=(1, 2))).sum().backward()
    d_optimizer.step()

    for param in discriminator:
        param.requires_grad_(False)
    fake_logits = two_layer_mlp(fake_images, discriminator)
    g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits), reduction="none")
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


def mean(values):
    return sum(values) / len(values)


def report(epoch, settings, seeds, scores):
    print(f"\nepoch {epoch}, {len(seeds)} seeds per setting (mean over seeds; FID: mean [best .. worst])")
    print(f"{'betas':<12} {'digit FID':>27} {'confident':>10} {'rarest':>7} {'ones':>6} {'all ten in 64':>14}")
    for number, betas in enumerate(settings):
        runs = scores[number * len(seeds):(number + 1) * len(seeds)]
        fids = [run["fid"] for run in runs]
        print(f"{betas[0]:g} {betas[1]:g}".ljust(12)
              + f" {mean(fids):8.1f} [{min(fids):6.1f} .. {max(fids):6.1f}]"
              + f" {100 * mean([run['confident'] for run in runs]):9.1f}%"
              + f" {100 * mean([min(run['shares']) for run in runs]):6.1f}%"
              + f" {100 * mean([run['shares'][1] for run in runs]):5.1f}%"
              + f" {sum(run['kinds'] == 10 for run in runs):>10} of {len(runs)}", flush=True)


def parse_betas(text):
    try:
        beta1, beta2 = (float(value) for value in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"betas are two numbers joined by a comma, such as 0.5,0.999; not {text!r}")
    return beta1, beta2


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train GANs with several Adam betas side by side and score them.")
    parser.add_argument("--betas", type=parse_betas, nargs="+", default=[parse_betas(s) for s in SETTINGS],
                        help="settings to compare, each BETA1,BETA2 (%(default)s)")
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

    runs = [(betas, seed) for betas in args.betas for seed in args.seeds]
    beta1 = torch.tensor([betas[0] for betas, _ in runs], device=device)
    beta2 = torch.tensor([betas[1] for betas, _ in runs], device=device)
    generator, discriminator = stacked_networks([seed for _, seed in runs], device)
    g_optimizer = StackedAdam(generator, gan_mnist.LR, beta1, beta2)
    d_optimizer = StackedAdam(discriminator, gan_mnist.LR, beta1, beta2)

    settings = {**quality.CLASSIFIER_SETTINGS, "epochs": args.classifier_epochs}
    classifier, _ = quality.get_classifier(args.data_dir, args.cache_dir, settings)
    classifier = classifier.to(device)
    test_features = quality.predict(classifier, gan_mnist.load_mnist(args.data_dir, train=False).to(device))[0]
    images = gan_mnist.load_mnist(args.data_dir, train=True).to(device)
    # The sweep's own random streams, apart from the seeds that set each run's first weights.
    randomness = torch.Generator(device).manual_seed(1234)
    grid_noise = torch.randn(len(runs), GRID_SIZE, gan_mnist.Z_DIM, device=device,
                             generator=torch.Generator(device).manual_seed(99))
    print(f"{len(runs)} runs ({len(args.betas)} settings x {len(args.seeds)} seeds) on "
          f"{gan_mnist.describe_device(device)}", flush=True)

    step, start = 0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        # Each run shuffles the data its own way: one random permutation per run.
        order = torch.rand(len(runs), len(images), device=device, generator=randomness).argsort(dim=1)
        for indices in order.split(gan_mnist.BATCH_SIZE, dim=1):
            z = torch.randn(len(runs), indices.shape[1], gan_mnist.Z_DIM, device=device, generator=randomness)
            sweep_step(generator, discriminator, g_optimizer, d_optimizer, images[indices], z)
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        stopping = bool(args.max_steps and step >= args.max_steps)
        if epoch in args.eval_at or stopping:
            print(f"(step {step}, {time.perf_counter() - start:.0f} s)", flush=True)
            scores = score_runs(generator, classifier, test_features, args.samples, grid_noise)
            report(epoch, args.betas, args.seeds, scores)
        if stopping:
            break


if __name__ == "__main__":
    main()
