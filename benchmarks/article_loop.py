"""The article's own training loop (section 5.2 to 5.6), re-created as written.

Used as the baseline twice: benchmarks/speed.py times it against gan_mnist.py,
and benchmarks/quality.py scores the generators it trains. On purpose it keeps
the article's choices that gan_mnist.py changes: ToTensor() pixels in [0, 1]
against a Tanh generator, a per-image DataLoader, Sigmoid + BCELoss and Adam's
default betas. The only addition is `.to(device)`, so it can run on a GPU too.

    python benchmarks/article_loop.py --epochs 200 --save-at 25 50 100 200
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as transforms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gan_mnist  # noqa: E402  (for its Generator: same layers and names as the article's)

Z_DIM = 100
BATCH_SIZE = 128
LR = 0.0002


class ArticleDiscriminator(nn.Module):
    """Section 5.4, with the Sigmoid inside the network."""

    def __init__(self, image_dim=784):
        super().__init__()
        self.disc = nn.Sequential(
            nn.Linear(image_dim, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.disc(x)


def article_dataloader(data_dir):
    """Section 5.2: a PIL image and a ToTensor() call per image, every step."""
    dataset = torchvision.datasets.MNIST(root=data_dir, download=not gan_mnist.mnist_files_present(data_dir),
                                         transform=transforms.ToTensor())
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True)


def article_models(device):
    """Section 5.5: the models, BCELoss and Adam with its default betas (0.9, 0.999)."""
    G = gan_mnist.Generator(Z_DIM, 256).to(device)  # identical to the article's 5.3
    D = ArticleDiscriminator().to(device)
    G_optimizer = torch.optim.Adam(G.parameters(), lr=LR)
    D_optimizer = torch.optim.Adam(D.parameters(), lr=LR)
    return G, D, G_optimizer, D_optimizer


criterion = nn.BCELoss()


def article_step(G, D, G_optimizer, D_optimizer, images, device):
    """Section 5.6, one batch; the part the article's copy cuts off is the usual loop."""
    images = images.view(-1, 784).to(device)
    z = torch.randn(images.size(0), Z_DIM, device=device)
    gen_images = G(z)

    D_optimizer.zero_grad()
    d_real = D(images)
    d_real_loss = criterion(d_real, torch.ones_like(d_real))
    d_fake = D(gen_images.detach())
    d_fake_loss = criterion(d_fake, torch.zeros_like(d_fake))
    d_loss = d_real_loss + d_fake_loss
    d_loss.backward()
    D_optimizer.step()

    G_optimizer.zero_grad()
    d_fake = D(gen_images)
    g_loss = criterion(d_fake, torch.ones_like(d_fake))
    g_loss.backward()
    G_optimizer.step()
    return d_loss, g_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--save-at", type=int, nargs="*", default=[], help="epochs after which to save G")
    parser.add_argument("--seed", type=int, default=gan_mnist.SEED)
    parser.add_argument("--data-dir", default=gan_mnist.DATA_DIR)
    parser.add_argument("--out-dir", default="runs/article")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    dataloader = article_dataloader(args.data_dir)
    G, D, G_optimizer, D_optimizer = article_models(device)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        for images, _ in dataloader:
            d_loss, g_loss = article_step(G, D, G_optimizer, D_optimizer, images, device)
        print(f"epoch {epoch}/{args.epochs}  D loss {d_loss.item():.3f}  G loss {g_loss.item():.3f}", flush=True)
        if epoch in args.save_at:
            # Enough for quality.py: the generator, its shape, and the pixel scale it learned.
            torch.save({"generator": G.state_dict(), "epoch": epoch,
                        "config": {"z_dim": Z_DIM, "hidden_dim": 256, "pixel_range": (0.0, 1.0)}},
                       out_dir / f"article_epoch_{epoch:03d}.pt")


if __name__ == "__main__":
    main()
