# %%
"""Train a GAN to draw MNIST digits: the code for section 5 of the article "AIGC从入门到实战" (a Generator
and a Discriminator, each a two-layer MLP, trained against each other, as in section 4.1, with section 5.5's BCE loss).

    python gan_mnist.py                  # train; pictures land in outputs/
    python gan_mnist.py --epochs 5 --out-dir outputs/first_try  # every constant below has a flag (--help)
    python gan_mnist.py --resume         # continue an interrupted run, to its own --epochs
    python gan_mnist.py --generate 64    # draw 64 new digits from the checkpoint

In a notebook: `%run gan_mnist.py --epochs 5 --out-dir outputs/notebook`, or open it as one (`# %%` cells).

Read it top to bottom beside the article: each banner names the section it implements. Where this file
departs from the article, a comment says why.
"""
# 5.1 导入库 · Imports
import torch
import torch.nn as nn
import torchvision

# The article imports matplotlib.pyplot. We draw on Figure objects instead:
# they render straight to files, need no window, and keep no global state.
from matplotlib.figure import Figure  # 与文章不同：不用 pyplot，画图不需要显示器

# What only the pictures and the dependable parts use (the log, files, checkpoints, Ctrl-C):
import argparse
import contextlib
import datetime
import io
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np  # comes with torch and matplotlib; the pictures are drawn from NumPy arrays
from PIL import Image  # comes with matplotlib and torchvision; writes the GIF

if sys.platform != "win32":  # Windows has no fcntl: there a second run in a folder in use is not caught
    import fcntl

# %%
# 常量 · Constants: change them here, or pass the flag in brackets
EPOCHS = 200  # passes over the 60,000 training images (--epochs)
BATCH_SIZE = 128  # images per optimiser step (--batch-size)
LR = 2e-4  # Adam's learning rate for both networks (--lr)
BETAS = (0.0, 0.999)  # Adam's decay rates; 0.0: no momentum to carry G and D past each other; article 0.9 (--betas)
# 与文章不同：β1、β2 是 Adam 两个矩估计的衰减率；β1 = 0 即不用动量（文章没设，即默认的 0.9）；通常认为动量会让两个网络越过平衡点、来回振荡。
Z_DIM = 100  # length of the noise vector z the generator starts from (--z-dim)
HIDDEN_DIM = 256  # width of the hidden layer in both networks (--hidden-dim)
GP_GAMMA = 1.0  # gradient penalty on D's slopes, so D cannot herd G into a few digits; 0.0: the article (--gp-gamma)
GP_EVERY = 8  # the penalty on one step in this many, this many times as strong: nearly as good, cheaper (--gp-every)
ARTICLE_PIXELS = False  # True replays the article's flaw: real pixels in [0, 1] against G's Tanh (--article-pixels)
CONDITIONAL = False  # True: both networks are told the digit, so you can ask for one (--conditional)
BEST_OF = 4  # --generate draws this many times the digits asked, D keeps each digit's best; 1: G alone (--best-of)
SAMPLE_EVERY = 1000  # save a sample grid every this many steps, as the article's sample_period (--sample-every)
SEED = 0  # seeds every random choice, so a CPU run repeats exactly (--seed)
DEVICE = "auto"  # "auto" picks cuda, then mps, then cpu (--device); 与文章不同：文章只在 CPU 上运行
DATA_DIR = "data"  # the folder holding MNIST/raw/, where MNIST is read from or downloaded to (--data-dir)
OUT_DIR = "outputs"  # where grids, plots and the checkpoint go (--out-dir)

IMAGE_DIM = 28 * 28  # an MNIST digit, flattened into one vector
GRID_SIZE = 64  # digits in each sample grid (8 x 8)


def pick_device(name):
    """'auto' means the fastest device PyTorch can see: CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():  # RunError: a one-line error (the dependable parts)
        raise RunError("--device cuda: PyTorch sees no CUDA GPU here. Use --device cpu (or auto), "
                       "or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RunError("--device mps: Apple's MPS is not available here. Use --device cpu (or auto)")
    return torch.device(name)


# %%
# 5.2 加载MNIST数据集 · Loading MNIST
def load_mnist(data_dir, train=True, article_pixels=False):
    """One split of MNIST, read once: all its images as one (N, 784) tensor in [-1, 1] (in [0, 1], as the
    article has them, with article_pixels=True), and the digit each one shows.

    The article's transforms.ToTensor() gives pixels in [0, 1], while the generator ends in Tanh, which draws
    in [-1, 1]. Tanh can draw [0, 1] too, but MNIST's background is 0, the middle of Tanh's range, where it is
    steepest: the least change in G's weights stirs every background pixel, and the grids come out grey and
    speckled (experiment 1 in the README). Scaled to [-1, 1] (what Normalize((0.5,), (0.5,)) does), the
    background is -1, where Tanh is flat and easy to hold.
    与文章不同：ToTensor() 给出 [0, 1] 的像素，背景 0 正落在 Tanh 输出范围的中间、斜率最大处，
    生成器很难画出干净的背景；缩放到 [-1, 1] 后背景是 -1，落在 Tanh 平缓的一端。
    """
    try:
        # 下载MNIST数据集 (only when the files are not there already)
        dataset = torchvision.datasets.MNIST(root=data_dir, train=train, download=not mnist_files_present(data_dir))
    except Exception:  # no network, or a damaged file: one line (RunError, in the dependable parts), no traceback
        raise RunError(f"cannot read MNIST from {Path(data_dir, 'MNIST', 'raw')}/: its files are missing or damaged, "
                       f"and cannot be downloaded here (no network?). Place fresh copies there, unzipped: "
                       f"{', '.join(MNIST_FILES)}; or point --data-dir at the folder that holds MNIST/raw/") from None
    # 将图像展平为向量: (N, 784), read once, with no transform per image
    images = dataset.data.reshape(-1, IMAGE_DIM).float()
    if article_pixels:  # the flaw, kept to be seen: run with --article-pixels and compare the grids
        return images.div_(255), dataset.targets
    return images.div_(127.5).sub_(1), dataset.targets  # in place: one copy in memory


def shuffled_batches(images, labels, batch_size, seed, epoch, skip=0):
    """One epoch: the training images in a new random order, one slice a batch, each with its labels. The
    last batch may be smaller; nothing below assumes otherwise.

    The article's DataLoader(shuffle=True) makes every image a PIL image, then a tensor, then stacks 128 of
    them: Python work per image, every step. Here the whole set is one tensor already on the device, so a
    batch is a single indexing operation. The order comes from a number no other (seed, epoch) gives (for
    epochs below a million), so two seeds never share an epoch's order, and a run resumed part-way through
    an epoch (skip: the batches it had done) sees the very same batches.
    与文章不同：不用 DataLoader 逐张转换图像，整个训练集事先作为一个张量放到 CPU 或 GPU 上，每批只需一次索引。
    """
    # 构建数据加载器: a new order each epoch, cut into batches
    shuffle = torch.Generator().manual_seed(seed * 1_000_000 + epoch)
    order = torch.randperm(len(images), generator=shuffle).to(images.device)
    for indices in order.split(batch_size)[skip:]:
        yield images[indices], labels[indices]


# %%
# 5.3 定义生成器 · The Generator: noise z -> a 784-pixel image in [-1, 1]
class Generator(nn.Module):
    def __init__(self, z_dim=Z_DIM, hidden_dim=HIDDEN_DIM, image_dim=IMAGE_DIM):
        super().__init__()
        self.z_dim = z_dim
        self.gen = nn.Sequential(
            nn.Linear(z_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, image_dim),
            nn.Tanh(),  # 输出像素值在(-1,1): the same scale as the real images (see load_mnist)
        )

    def forward(self, z, labels=None):  # labels: for the conditional GAN alone 仅供条件 GAN 使用（5.6 之后），可跳过
        return self.gen(z)


# %%
# 5.4 定义判别器 · The Discriminator: an image -> one score, "how real does it look?"
class Discriminator(nn.Module):
    def __init__(self, image_dim=IMAGE_DIM, hidden_dim=HIDDEN_DIM):
        super().__init__()
        self.disc = nn.Sequential(
            nn.Linear(image_dim, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, 1),
            # No Sigmoid here, unlike the article: the loss in 5.5 applies it.
            # 与文章不同：这里没有 Sigmoid（文章用它“输出为真实图像的概率”），Sigmoid 交给 5.5 的损失函数计算。
        )

    def forward(self, images, labels=None):  # labels: 仅供条件 GAN 使用（5.6 之后），可跳过
        return self.disc(images)  # a logit; D(x) = sigmoid(logit) is the probability "real"


# %%
# 5.5 定义损失函数和优化器 · Loss and optimisers
# The article's Sigmoid + BCELoss computes -[y log s(l) + (1 - y) log(1 - s(l))] with s = sigmoid.
# BCEWithLogitsLoss computes the same number from the logit l in one stable step. From s(l), a D sure and wrong
# gets almost no gradient: float32 rounds s to 1, or BCELoss's backward floors s(1-s) at 1e-12 (docs/results.md).
# 与文章不同：Sigmoid + BCELoss 合并为一步的 BCEWithLogitsLoss，数学上是同一个损失，但判别器很确定却判错时梯度不会消失。
bce_with_logits = nn.BCEWithLogitsLoss()  # 损失函数


def discriminator_loss(real_logits, fake_logits):
    """Section 4.1: D maximises log D(x) + log(1 - D(G(z))). Minimising BCE with label 1 for real images and 0
    for generated ones is exactly that: BCE(l, 1) = -log D(x) and BCE(l, 0) = -log(1 - D(G(z)))."""
    real_loss = bce_with_logits(real_logits, torch.ones_like(real_logits))
    fake_loss = bce_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_loss + fake_loss


def generator_loss(fake_logits):
    """Section 4.1 has G minimise log(1 - D(G(z))), which saturates (its gradient in the logit goes to 0) when D
    rejects every fake, as it can early on. So G maximises log D(G(z)), BCE with label 1 (Goodfellow et al. 2014).
    与第 4.1 节不同，生成器最大化 log D(G(z))：判别器坚决拒绝假图像时（训练初期可能如此），log(1 - D(G(z))) 几乎没有梯度，它却仍有。"""
    return bce_with_logits(fake_logits, torch.ones_like(fake_logits))


def build_gan(settings, device):
    """The article's G = Generator(z_dim), D = Discriminator() and their two Adam optimisers (with --conditional,
    the pair that is told the digit, after 5.6). Training and --generate both build them here."""
    conditional = settings.num_classes > 0  # 条件 GAN（文章之外）才用到，可跳过
    generator = (ConditionalGenerator if conditional else Generator)(settings.z_dim, settings.hidden_dim)  # 生成器
    discriminator = (ConditionalDiscriminator if conditional else Discriminator)(IMAGE_DIM, settings.hidden_dim)  # 判别器
    generator, discriminator = generator.to(device), discriminator.to(device)
    return (generator, discriminator, *make_optimizers(generator, discriminator, settings.lr, settings.betas))


def make_optimizers(generator, discriminator, lr, betas):
    # fused=True runs each Adam update as one GPU or CPU kernel (a compiled routine) instead of
    # one per tensor; the arithmetic is Adam's, unchanged. betas: see BETAS at the top.
    # 与文章不同：融合的 Adam，每个网络的一次更新只调用一个计算内核（kernel，不是 Jupyter 的内核），算法不变。
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas, fused=True)  # 优化器
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas, fused=True)
    return g_optimizer, d_optimizer


# %%
# 5.6 训练模型 · Training: one step, then the loop
def train_step(generator, discriminator, g_optimizer, d_optimizer, real_images, penalty_gamma=0.0,
               real_labels=None):
    """One round of the game: a discriminator update, then a generator update. penalty_gamma > 0 adds the
    gradient penalty to D's loss in this step. The labels matter only to a conditional GAN (after 5.6).
    Returns [D loss, G loss, mean D(x), mean D(G(z))] as one tensor, left on the device so that the loop
    never waits for the GPU.
    """
    z = torch.randn(len(real_images), generator.z_dim, device=real_images.device)  # 生成噪声数据
    fake_labels, both_labels = digits_to_draw(generator, real_labels)  # 仅条件 GAN 用到；文章的 GAN 得到 None
    fake_images = generator(z, fake_labels)  # 生成器生成假图像

    # ---- 训练判别器 · Discriminator: maximise log D(x) + log(1 - D(G(z))) ----
    # 最大化判别器能够正确识别真实图像和生成图像的概率
    # detach(): D's backward stops at the fakes, leaving G's graph whole for G's own update (README, experiment 7).
    # Real and fake go through D as one batch: mathematically two calls (no BatchNorm: each score is its own image's).
    # detach() 切断梯度，这一步的梯度不会流回生成器；真假图像拼成一批，只经过判别器一次（文章在这之前中断）。
    # On penalty steps D also pays for steep slopes at the images (gradient_penalty, after 5.6), so they need
    # gradients. 梯度惩罚（文章没有）：判别器输出对输入图像的梯度越陡，损失里的惩罚越大，所以输入也要求梯度。
    d_inputs = torch.cat([real_images, fake_images.detach()]).requires_grad_(penalty_gamma > 0)
    logits = discriminator(d_inputs, both_labels)  # 判别真实图像 (and the fakes, in the same pass)
    real_logits, fake_logits = logits.split([len(real_images), len(fake_images)])
    d_loss = discriminator_loss(real_logits, fake_logits)
    penalty = gradient_penalty(logits, d_inputs, penalty_gamma) if penalty_gamma > 0 else 0  # not in "D loss"
    d_optimizer.zero_grad()
    (d_loss + penalty).backward()
    d_optimizer.step()

    # ---- 训练生成器 · Generator: maximise log D(G(z)), judged by the updated D ----
    # G's gradient must flow through D, but D's own weights stay put in this half: freezing them
    # spares autograd computing gradients nobody uses. 更新生成器时冻结判别器的权重，省去没人用的梯度。
    discriminator.requires_grad_(False)
    g_loss = generator_loss(discriminator(fake_images, fake_labels))
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()
    discriminator.requires_grad_(True)

    d_of_x = torch.sigmoid(real_logits).mean()
    d_of_g_z = torch.sigmoid(fake_logits).mean()
    return torch.stack([d_loss, g_loss, d_of_x, d_of_g_z]).detach()


def train(args):
    """Section 5.6: the article's two loops, one train_step a batch. Everything around them that is not the
    GAN (the log, the pictures, checkpoints, Ctrl-C, resuming) is the RunRecord's work, after 5.6."""
    device = pick_device(args.device)
    with RunRecord(args) as run:  # checks and locks OUT_DIR, and reads the checkpoint of a run to resume
        torch.manual_seed(args.seed)
        images, labels = load_mnist(args.data_dir, train=True, article_pixels=args.article_pixels)
        images, labels = images.to(device), labels.to(device)
        generator, discriminator, g_optimizer, d_optimizer = build_gan(args, device)
        # train_step as a function of the batch alone; on a GPU it is recorded once
        # and replayed as a CUDA graph (see CudaGraphStep near the end of the file).
        take_step = make_step_function(generator, discriminator, g_optimizer, d_optimizer, args.batch_size,
                                       use_cuda_graph=device.type == "cuda" and not args.no_cuda_graph)
        # One noise batch, drawn once: every grid shows the same 64 z's, so the
        # grids are frames of one film and you can watch each digit take shape.
        # 固定一批噪声（文章副本没写到画样本这一步）：每张样本图都用同样的 64 个 z 来画，连起来就是一段训练过程的动画。
        # (A conditional run's grid is a digit table: 10 x 10, row r drawn as digit r.)
        fixed_noise = torch.randn(args.num_classes ** 2 or GRID_SIZE, args.z_dim, device=device)
        run.begin(generator, discriminator, g_optimizer, d_optimizer, fixed_noise, images)  # a resume puts all back

        # The article: for epoch in range(epochs):
        for epoch in range(run.epoch, args.epochs):
            # The article: for i, (images, _) in enumerate(dataloader):
            for real_images, real_labels in shuffled_batches(images, labels, args.batch_size, args.seed, epoch,
                                                             skip=run.batches_into_epoch):
                penalty_gamma = penalty_for_step(run.step, args.gp_gamma, args.gp_every)  # 0 on most steps
                run.after_step(take_step(real_images, penalty_gamma, real_labels))
                if run.step % args.sample_every == 0:  # 每1000批次保存一次生成图像 (SAMPLE_EVERY)
                    run.save_grid(samples_from(generator, fixed_noise))
                if run.should_stop():  # Ctrl-C, or --max-steps
                    break
            run.after_epoch(samples_from(generator, fixed_noise))  # the log line, grid, checkpoint
            if run.should_stop():
                break
        return run.finish()


# %%
# 文章之外：判别器的梯度惩罚 · Beyond the article: a gradient penalty, so D cannot herd G into a few digits
def gradient_penalty(logits, images, gamma):
    """R1 + R2 (Mescheder et al. 2018): gamma/2 times the mean squared slope of D's logit at the real images
    (R1) plus the same at the generated ones (R2), added to D's loss by train_step (GP_GAMMA = 0: none, as in the
    article). Without it D can grow steep cliffs next to the digits it rejects, whose gradient herds G towards a
    few digits it can draw safely; a gentle slope keeps all in reach.
    文章之外：梯度惩罚让判别器输出对输入图像的梯度保持平缓，生成器不会被陡峭的梯度逼得只画少数几个数字。"""
    # Each logit depends on its own image alone, so the gradient of their sum is each image's own slope.
    (slopes,) = torch.autograd.grad(logits.sum(), images, create_graph=True)  # create_graph: we backprop through it
    real_slopes, fake_slopes = slopes.square().sum(dim=1).chunk(2)
    return gamma / 2 * (real_slopes.mean() + fake_slopes.mean())


def penalty_for_step(step, gamma, every):
    """Lazy regularisation (Karras et al. 2020): one step in `every`, `every` times as strong, steers D nearly as much.
    文章之外：惩罚每 `every` 步才算一次，强度乘以 `every`，效果相近，计算量却小得多。"""
    return gamma * every if gamma > 0 and step % every == 0 else 0.0


# %%
# 文章之外：生成指定的数字 · Beyond the article: choose the digit G draws (a conditional GAN)
DIGITS = 10


class ConditionalGenerator(Generator):
    """The article's Generator, told which digit to draw (Mirza and Osindero 2014): z with the digit appended.
    CONDITIONAL = False leaves the article's GAN exactly as it was."""

    def __init__(self, z_dim=Z_DIM, hidden_dim=HIDDEN_DIM):
        super().__init__(z_dim + DIGITS, hidden_dim)
        self.z_dim = z_dim

    def forward(self, z, labels):
        return self.gen(append_digit(z, labels))


class ConditionalDiscriminator(Discriminator):
    """The article's Discriminator, told which digit it sees: "is this a real image of that digit?"."""

    def __init__(self, image_dim=IMAGE_DIM, hidden_dim=HIDDEN_DIM):
        super().__init__(image_dim + DIGITS, hidden_dim)

    def forward(self, images, labels):
        return self.disc(append_digit(images, labels))


def append_digit(inputs, labels):
    """Each noise vector or image with its digit appended one-hot, the one as large as the square root of the input's
    width (10 beside 100 noise numbers, 28 beside 784 pixels): a plain 1 is drowned out for many epochs."""
    one_hot = nn.functional.one_hot(labels, DIGITS).to(inputs.dtype)
    return torch.cat([inputs, one_hot * inputs.shape[1] ** 0.5], dim=1)


def digits_to_draw(generator, real_labels):
    """A step's digits for the fakes, drawn uniformly, and the real and fake ones together, for D's one pass
    over both. None, None for the article's GAN."""
    if not isinstance(generator, ConditionalGenerator):
        return None, None
    fake_labels = torch.randint(DIGITS, real_labels.shape, device=real_labels.device)
    return fake_labels, torch.cat([real_labels, fake_labels])


def digits_in_order(generator, count, device):
    """A conditional generator's count digits, 0s first, then 1s, as evenly as they go (100 make a 10 x 10 digit
    table, row r digit r); None for the article's."""
    return torch.arange(count, device=device) * DIGITS // count if isinstance(generator, ConditionalGenerator) else None


# %%
# 文章之外：让判别器挑选 · Beyond the article: D picks the generator's best digits (--generate --best-of)
@torch.no_grad()
def draw_the_best(generator, discriminator, count, best_of, labels=None, training=None):
    """count digits: G draws best_of times as many, and D keeps those it rates most real within each digit:
    the digit asked for (labels, a conditional GAN's, in digit order), or else that of the nearest training
    digit (training: MNIST's images and labels); with neither, from all at once. best_of = 1: G alone.

    Why D knows: for a fixed G, the D that wins section 4.1's game V(D, G) is D*(x) = p_data(x) /
    (p_data(x) + p_g(x)) (Goodfellow et al. 2014, proposition 1), highest where the data holds more of x
    than G draws; keeping what D rates most real moves the samples towards the data (discriminator
    rejection sampling, Azadi et al. 2019). Why within each digit: D has favourite digits, and choosing
    from all at once keeps those and loses the rest; within each digit it keeps the better drawn."""
    z = torch.randn(best_of * count, generator.z_dim, device=next(generator.parameters()).device)
    candidate_labels = None if labels is None else labels.repeat(best_of)
    images = generator(z, candidate_labels)  # best_of = 1: the same z, the same digits as ever
    if best_of == 1:
        return images.cpu()
    realness = discriminator(images, candidate_labels).flatten()  # D's logit: higher means "more real"
    if labels is not None:  # each digit asked for fills its own places
        groups, keep = candidate_labels, torch.bincount(labels, minlength=DIGITS)
    elif training is not None:  # each digit as its nearest training digit reads it, in MNIST's own shares
        groups = training[1][nearest_training_digits(images, training[0], 1)[1][:, 0]].to(realness.device)
        keep = digits_to_keep(groups, count, torch.bincount(training[1], minlength=DIGITS).cpu() / len(training[1]))
    else:
        groups, keep = torch.zeros_like(realness, dtype=torch.long), torch.tensor([count])
    chosen = []
    for group in keep.nonzero().flatten().tolist():  # the groups that keep any
        members = (groups == group).nonzero().flatten()
        chosen.append(members[realness[members].topk(int(keep[group])).indices].sort().values)
    chosen = torch.cat(chosen)  # digit by digit, as a conditional GAN's places are; the rest in the order drawn
    return images[chosen if labels is not None else chosen.sort().values].cpu()


def digits_to_keep(candidate_digits, count, shares):
    """How many of each digit D's choice keeps: count shared out as `shares` (ten numbers that add up to 1)
    say, never more of a digit than were drawn (docs/results.md compares this rule with others)."""
    drawn = torch.bincount(candidate_digits, minlength=DIGITS).cpu()
    share = shares * count
    keep = torch.minimum(share.floor().long(), drawn)
    while keep.sum() < count:  # the rest one at a time, at random by how far each digit falls short: fair for few
        room = keep < drawn
        keep[torch.multinomial((share - keep).clamp(min=0) * room + 1e-6 * room, 1)] += 1
    return keep


# %%
# 训练记录 · The run's record: the log, the pictures and the checkpoint, called from the loop in 5.6
METRIC_NAMES = ["d_loss", "g_loss", "d_x", "d_g_z"]
PROGRESS_EVERY = 20  # steps between progress-line updates and checks for NaN
LOSS_PLOT_EVERY = 5  # epochs between redraws of losses.png (and always at the end, or a stop)
EVALUATION_SIZE = 1000  # held-out real digits, and as many generated ones, for the end-of-run pictures


class RunRecord(contextlib.AbstractContextManager):
    """Everything train() does that is not the GAN, in begin, after_step, save_grid, after_epoch and finish."""

    def __init__(self, args):
        self.args, self.stop, self.out_dir = args, None, prepare_out_dir(args)
        self.resumed = load_checkpoint(self.out_dir / "checkpoint.pt", args) if args.resume else None
        self.epoch = self.step = self.batches_into_epoch = 0  # epochs and steps done; batches of this epoch
        self.files = BackgroundWriter()  # draws and writes while training goes on

    def __exit__(self, *error):
        if self.stop:  # the next Ctrl-C is the caller's again
            self.stop.restore()
        self.files.worker.shutdown()  # after an error too: the checkpoint its message names is on the disk

    def begin(self, generator, discriminator, g_optimizer, d_optimizer, fixed_noise, images):
        """A resumed run's state put back, or a fresh run's folder cleared (only now: a bad input leaves an
        earlier run intact) and its first grid drawn, the untrained generator's (epoch_000.png)."""
        args, device, out_dir = self.args, images.device, self.out_dir
        say(f"Training on {describe_device(device)}")
        self.gan = (generator, discriminator, g_optimizer, d_optimizer)
        self.fixed_noise, self.images = fixed_noise, images
        test_set = load_mnist(args.data_dir, False, args.article_pixels)  # digits training never sees
        self.test_images, self.test_labels = (part[:EVALUATION_SIZE].to(device) for part in test_set)
        self.evaluation_noise = make_evaluation_noise(args.z_dim, args.seed, device)
        self.steps_per_epoch = math.ceil(len(images) / args.batch_size)
        self.last_step = min(args.epochs * self.steps_per_epoch, args.max_steps or math.inf)
        self.history, self.d_scores = torch.empty(0, len(METRIC_NAMES)), {}  # for the plot and the CSV; d_scores.png
        self.grid_shown = None  # in a notebook, where the grid is shown under the cell
        if self.resumed:
            self.restore(self.resumed)
            say(f"Resuming from epoch {self.epoch + 1}, step {self.step}")
        else:
            for old in [*out_dir.glob("samples/*.png"), *(out_dir / name for name in (
                    "checkpoint.pt training.gif metrics.csv losses.png real_vs_fake.png latent_walk.png d_picks.png "
                    "d_scores.png nearest_training.png").split())]:  # what a run writes, and nothing else
                if not old.is_dir():
                    old.unlink(missing_ok=True)
            self.save_grid(samples_from(generator, fixed_noise), "epoch_000.png")
        write_metrics_csv(out_dir / "metrics.csv", self.history, first_row=0)
        self.coach = Coach(self.test_images, args)
        self.first_step, self.start = self.step, time.perf_counter()
        self.epoch_start, self.epoch_metrics = self.start, []
        self.stop = StopSignals()

    def checkpoint_bytes(self):
        """Everything a resumed run needs, serialised now, while training waits; in memory first, as torch.save
        reports a failed disk write as an unreadable error, Python's own write as an OSError that says why."""
        generator, discriminator, g_optimizer, d_optimizer = self.gan
        random_states = {"cpu": torch.get_rng_state(),  # so that a resumed run draws the same noise
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                         "mps": torch.mps.get_rng_state() if torch.backends.mps.is_available() else None}
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "generator": generator.state_dict(),
                    "discriminator": discriminator.state_dict(), "g_optimizer": g_optimizer.state_dict(),
                    "d_optimizer": d_optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                    "epochs": self.args.epochs, "batches_into_epoch": self.batches_into_epoch,  # > 0: stopped mid-epoch
                    "config": {name: getattr(self.args, name) for name in RUN_SETTINGS}, "history": self.history,
                    "fixed_noise": self.fixed_noise.cpu(), "d_scores": self.d_scores, "rng": random_states}, buffer)
        return buffer.getvalue()  # bytes of its own for the writer (a view of the buffer upsets Python 3.13 at exit)

    def restore(self, checkpoint):
        """Puts back what checkpoint_bytes() saved: weights, optimisers, fixed noise, counters, history, RNGs."""
        for name, part in zip(["generator", "discriminator", "g_optimizer", "d_optimizer"], self.gan):
            part.load_state_dict(checkpoint[name])
        self.fixed_noise.copy_(checkpoint["fixed_noise"])
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.batches_into_epoch = checkpoint["batches_into_epoch"]
        self.history, self.d_scores, states = checkpoint["history"], checkpoint["d_scores"], checkpoint["rng"]
        torch.set_rng_state(states["cpu"])
        if states.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
        if states.get("mps") is not None and torch.backends.mps.is_available():
            torch.mps.set_rng_state(states["mps"])

    def eta(self):
        """The time left, at this run's average pace so far."""
        seconds_a_step = (time.perf_counter() - self.start) / max(1, self.step - self.first_step)
        return seconds_a_step * (self.last_step - self.step) if self.step > self.first_step else 0

    def after_step(self, metrics):
        """Every PROGRESS_EVERY steps, the check for NaN and the progress line (on a terminal only)."""
        self.epoch_metrics.append(metrics)
        self.step, self.batches_into_epoch = self.step + 1, self.batches_into_epoch + 1
        if self.step % PROGRESS_EVERY == 0:
            self.check_finite()
            if sys.stdout.isatty():
                d_loss, g_loss = torch.stack(self.epoch_metrics[-PROGRESS_EVERY:]).mean(dim=0)[:2].tolist()
                bar = "#" * int(20 * self.batches_into_epoch / self.steps_per_epoch)
                say(f"  epoch {self.epoch + 1} [{bar:.<20}] {self.batches_into_epoch}/{self.steps_per_epoch}  "
                    f"D loss {d_loss:.3f}  G loss {g_loss:.3f}  ETA {as_time(self.eta())}", end="")
        if self.coach.should_check_variety(self.step):
            self.coach.watch_variety(self.epoch + 1, self.step, samples_from(self.gan[0], self.fixed_noise))

    def check_finite(self):
        """Stop at the first NaN or infinite loss: nothing useful can follow it."""
        finite = torch.isfinite(torch.stack(self.epoch_metrics[-PROGRESS_EVERY:])).all(dim=1)
        if not bool(finite.all()):
            bad_step = self.step - len(finite) + 1 + int((~finite).nonzero()[0])
            raise RunError(f"the loss became NaN or infinite at step {bad_step}, so training stopped; the last "
                           f"checkpoint written before it is kept. Start again with a smaller learning rate, e.g. "
                           f"--overwrite --lr {self.args.lr / 10:g}", exit_code=1)

    def should_stop(self):
        """True at the last step, or once a stop was asked for (said here, not in the signal handler)."""
        return self.stop.requested() or self.step >= self.last_step

    def save_grid(self, samples, name=None):
        """samples/step_NNNNNNN.png, or an epoch's grid by name (also shown in a notebook)."""
        path = self.out_dir / "samples" / (name or f"step_{self.step:07d}.png")
        title = f"epoch {self.epoch if name else self.epoch + 1}, step {self.step}"
        job = self.files.submit(draw_digits, [(title, samples)], path)
        if name and notebook_display() and job.exception() is None:  # in a notebook, once it is on the disk
            self.grid_shown = show_in_notebook(path, self.grid_shown)

    def after_epoch(self, samples):
        """At an epoch's end, or where the run stopped in one: the log, the grid, D's scores, the checkpoint."""
        args, (generator, discriminator, *_) = self.args, self.gan
        epoch_history = torch.stack(self.epoch_metrics).cpu()  # waits for the device, so the time is the steps'
        images = min(self.batches_into_epoch * args.batch_size, len(self.images)) - min(
            (self.batches_into_epoch - len(epoch_history)) * args.batch_size, len(self.images))  # the last batch's too
        images_per_second = images / (time.perf_counter() - self.epoch_start)
        self.check_finite()
        self.history = torch.cat([self.history, epoch_history])
        write_metrics_csv(self.out_dir / "metrics.csv", self.history, first_row=len(self.history) - len(epoch_history))
        log_epoch(epoch_history, self.epoch + 1, args.epochs, self.step, images_per_second,
                  time.perf_counter() - self.start, self.eta())
        self.coach.watch_the_game(self.epoch + 1, epoch_history)
        self.last_samples = samples
        if self.batches_into_epoch == self.steps_per_epoch:  # the epoch ran to its end
            self.epoch, self.batches_into_epoch = self.epoch + 1, 0
            self.save_grid(samples, f"epoch_{self.epoch:03d}.png")
        else:  # stopped part-way: keep a picture of where it got to
            self.save_grid(samples)
        if self.step >= self.last_step or self.epoch == args.epochs or (
                self.batches_into_epoch == 0 and self.epoch in (1, args.epochs // 2)):
            with torch.no_grad():  # D's probability "real" for held-out real digits, and as many generated ones
                fake_labels = digits_in_order(generator, len(self.test_images), self.images.device)
                fakes = generator(self.evaluation_noise[:len(self.test_images)], fake_labels)
                labels = None if fake_labels is None else torch.cat([self.test_labels, fake_labels])
                scores = torch.sigmoid(discriminator(torch.cat([self.test_images, fakes]), labels)).reshape(2, -1)
            self.d_scores[f"epoch {self.epoch}" if self.batches_into_epoch == 0 else f"step {self.step}"] = scores.cpu()
        # Queued after its grid, so a checkpoint on the disk is never ahead of the grids.
        data = self.checkpoint_bytes()
        self.files.submit(write_atomically, self.out_dir / "checkpoint.pt", lambda file: file.write(data),
                          must_succeed=True)
        if self.epoch % LOSS_PLOT_EVERY == 0:
            self.files.submit(plot_losses, self.history, self.steps_per_epoch, self.out_dir / "losses.png")
        self.epoch_start, self.epoch_metrics = time.perf_counter(), []

    def finish(self):
        """The end of the run, or of a stop: the last pictures, and where everything is. The exit code."""
        self.stop.restore()
        out_dir, files = self.out_dir, self.files
        files.submit(plot_losses, self.history, self.steps_per_epoch, out_dir / "losses.png")
        if self.stop.reason:
            files.close()
            words = [word for word in self.args.command_line if word != "--overwrite"]
            words += [] if "--resume" in words else ["--resume"]  # in a notebook, the main() call that resumes
            script = sys.argv[0] if Path(sys.argv[0]).name == "gan_mnist.py" else "gan_mnist.py"
            command = f"main({words!r})" if notebook_display() else shlex.join(["python", script, *words])
            say(f"Stopped at step {self.step}; everything so far is saved in {out_dir}/. Continue with:  {command}",
                file=sys.stderr if StopSignals.output_closed else sys.stdout)
            return 128 + (self.stop.received or 13)  # the shell's "ended by": 130 Ctrl-C, 143 SIGTERM, 141 a pipe
        # The film, the real digits beside the fakes, and what the generator learned.
        files.submit(write_training_gif, out_dir / "samples", out_dir / "training.gif")
        files.submit(draw_digits, [("real (MNIST test set)", self.test_images[:GRID_SIZE].cpu()),
                                   ("generated", self.last_samples)], out_dir / "real_vs_fake.png")
        drawn = show_what_was_learned(*self.gan[:2], self.evaluation_noise, self.d_scores, self.images,
                                      self.test_images, out_dir, files)
        files.close()
        for name in ["losses.png", "real_vs_fake.png", *drawn]:
            show_in_notebook(out_dir / name)
        say(f"Done: {self.step} steps. Pictures, metrics.csv and checkpoint.pt are in {out_dir}/")
        return 0


# %%
# 看懂训练 · What the learner sees: the log, the grids, the plots, the film, what G learned, and the coach
def say(message, end="\n", file=None):
    """print() for the log, which first clears a progress line on a terminal. A reader that stops early
    (`python gan_mnist.py | head -1`) closes standard output: the run then stops and saves as for Ctrl-C."""
    file = file or sys.stdout
    try:
        print(("\r\033[K" if file.isatty() else "") + message, end=end, file=file, flush=True)
    except OSError:  # its reader has gone (a broken pipe; EINVAL on Windows): later lines go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), file.fileno())
        StopSignals.output_closed |= file is sys.stdout


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type


def log_epoch(epoch_history, epoch, epochs, step, images_per_second, elapsed, eta):
    """One line per epoch, the means of its steps. Without a penalty, D(x) around 0.5-0.8 and D(G(z)) around
    0.2-0.5 is a fair fight. D loss near 0 with D(G(z)) near 0: D has won, and its gradient no longer guides G."""
    d_loss, g_loss, d_x, d_g_z = epoch_history.mean(dim=0).tolist()
    say(f"epoch {epoch:>3}/{epochs}  step {step:>6}  D loss {d_loss:.3f}  G loss {g_loss:.3f}  D(x) {d_x:.2f}  "
        f"D(G(z)) {d_g_z:.2f}  {images_per_second:6,.0f} img/s  elapsed {as_time(elapsed)}  ETA {as_time(eta)}")


def as_time(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))  # 0:02:05


def to_picture(flat_images, nrow=None):
    """(N, 784) pixels in [-1, 1] -> a grid in [0, 1], nrow digits a row between 2-pixel white lines. NumPy
    only: on the drawing thread, torch would start a second team of CPU threads to fight training's."""
    images = (torch.as_tensor(flat_images).detach().cpu().numpy().reshape(-1, 28, 28) + 1) / 2
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / nrow)
    cells = np.ones((rows * nrow, 30, 30), dtype=np.float32)  # each digit with a white line above and left
    cells[:len(images), 2:, 2:] = images
    grid = cells.reshape(rows, nrow, 30, 30).transpose(0, 2, 1, 3).reshape(rows * 30, nrow * 30)
    return np.pad(grid, ((0, 2), (0, 2)), constant_values=1)  # and the lines below and right of the last


def draw_digits(panels, path, nrow=None):
    """A picture with a grid of digits per (title, images) panel, side by side, each pixel G drew a square
    of 2 x 2 screen pixels (3 x 3 in small grids): no blur, and no axes to lay out every epoch."""
    pictures = [(title, to_picture(images, nrow)) for title, images in panels]
    scale = max(1, min(3, 700 // max(picture.shape[1] for _, picture in pictures)))
    pictures = [(title, picture.repeat(scale, axis=0).repeat(scale, axis=1)) for title, picture in pictures]
    gap, title_band = 20, 30  # pixels between panels, and above them for the titles
    content_width = sum(picture.shape[1] for _, picture in pictures) + gap * (len(pictures) - 1)
    width = max(content_width, 360)  # room for a title even over a few digits
    height = max(picture.shape[0] for _, picture in pictures) + title_band
    # A quarter pixel more: width / 100 * 100 can fall just short, and matplotlib before 3.11 rounds it down.
    figure = Figure(figsize=((width + 0.25) / 100, (height + 0.25) / 100), dpi=100)
    left = (width - content_width) // 2
    for title, picture in pictures:
        figure.figimage(picture, xo=left, yo=height - title_band - picture.shape[0], cmap="gray", vmin=0, vmax=1)
        figure.text((left + picture.shape[1] / 2) / width, 1 - title_band / 2 / height, title,
                    ha="center", va="center", fontsize="large")
        left += picture.shape[1] + gap
    write_atomically(path, lambda file: figure.savefig(file, format="png"))


@torch.no_grad()
def samples_from(generator, noise, labels=None):
    """G's digits for this noise, on the CPU to be drawn (a conditional G's: labels, or a digit table's rows)."""
    return generator(noise, digits_in_order(generator, len(noise), noise.device) if labels is None else labels).cpu()


def plot_losses(history, steps_per_epoch, path):
    """Losses, D(x) and D(G(z)) against steps, each point the mean of a window of steps (about 400 points)."""
    history, window = history.numpy(), max(1, len(history) // 400)  # NumPy, as in to_picture
    means = history[:len(history) // window * window].reshape(-1, window, history.shape[1]).mean(axis=1)
    steps = (np.arange(len(means)) + 1) * window
    figure = Figure(figsize=(8, 6))
    losses, scores = figure.subplots(2, 1, sharex=True)
    for axes, column, label in [(losses, 0, "D loss"), (losses, 1, "G loss"), (scores, 2, "D(x): real judged real"),
                                (scores, 3, "D(G(z)): fake judged real")]:
        axes.plot(steps, means[:, column], label=label)
        axes.legend()
    scores.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    losses.set(ylabel="loss")
    scores.set(ylim=(0, 1), ylabel="mean D output",
               xlabel=f"step ({steps_per_epoch} steps per epoch; each point averages {window})")
    write_atomically(path, lambda file: figure.savefig(file, format="png"))


def write_training_gif(samples_dir, path, seconds_per_frame=0.15):
    """The epoch grids as a film from epoch_000.png on (the step grids if no epoch finished); non-pictures skipped."""
    files = sorted(samples_dir.glob("epoch_*.png"))
    if len(files) <= 1:
        files += sorted(samples_dir.glob("step_*.png"))
    frames = []
    for file in files:
        with contextlib.suppress(OSError):  # a folder, or a stray file, under a grid's name
            frames.append(Image.open(file).convert("P", palette=Image.Palette.ADAPTIVE))
    if frames:
        write_atomically(path, lambda file: frames[0].save(file, format="GIF", save_all=True, append_images=frames[1:],
                                                           duration=int(seconds_per_frame * 1000), loop=0))


def write_metrics_csv(path, history, first_row):
    """The numbers behind losses.png, a row a step: from first_row on appended, or all (first_row 0) rewritten."""
    first_row = first_row if path.is_file() else 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w" if first_row == 0 else "a") as file:
            rows = np.column_stack([np.arange(first_row, len(history)) + 1, history[first_row:].numpy()])
            np.savetxt(file, rows, fmt=["%d"] + ["%.5f"] * len(METRIC_NAMES), delimiter=",", comments="",
                       header=",".join(["step", *METRIC_NAMES]) if first_row == 0 else "")
    except OSError as error:  # a resumed run rewrites the file whole from its checkpoint
        raise WriteError(path, error) from None


def make_evaluation_noise(z_dim, seed, device, count=1024):
    """Noise for the end-of-run pictures from its own random stream, leaving training's as it was."""
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def plot_d_scores(d_scores, path):
    """D's verdicts at a few moments: two humps apart while D tells real from fake, closer as G improves."""
    figure = Figure(figsize=(3.6 * len(d_scores), 3.2))
    for position, (moment, scores) in enumerate(d_scores.items(), start=1):
        axes = figure.add_subplot(1, len(d_scores), position)
        for row, label in enumerate(["real (test set)", "generated"]):
            axes.hist(scores[row].numpy(), bins=np.linspace(0, 1, 41), alpha=0.6, label=label)
        axes.set(title=moment, xlabel='D\'s probability "real"', yticks=[])
    figure.axes[0].legend(loc="upper left")
    write_atomically(path, lambda file: figure.savefig(file, format="png", bbox_inches="tight"))


def latent_walk(generator, noise, rows=10, points=10):
    """Each row walks from one z to the next along the sphere they lie on (100 random normal numbers make a
    vector of length close to 10; a straight line's middle is shorter, a z G never saw). Digits that morph
    smoothly show a continuous space of digits. A conditional GAN's row r is digit r: only the style walks."""
    start, end = noise[0:2 * rows:2], noise[1:2 * rows:2]
    angle = torch.arccos(nn.functional.cosine_similarity(start, end, dim=-1).clamp(-1, 1))[:, None, None]
    t = torch.linspace(0, 1, points, device=noise.device)[None, :, None]
    path = (torch.sin((1 - t) * angle) * start[:, None] + torch.sin(t * angle) * end[:, None]) / torch.sin(angle)
    return samples_from(generator, path.flatten(0, 1))


@torch.no_grad()
def nearest_training_digits(images, training_images, k, chunk=250):
    """Each image's pixel distances to its k nearest training digits, and which; use_mm: on every device (MPS too)."""
    distances, indices = zip(*(torch.cdist(part, training_images, compute_mode="use_mm_for_euclid_dist")
                               .topk(k, largest=False) for part in images.to(training_images.device).split(chunk)))
    return torch.cat(distances), torch.cat(indices)


def check_for_copying(generator, noise, training_images, test_images, shown=8, k=5):
    """Does G copy (Goodfellow et al. 2014, figure 2)? A new digit is as far from its nearest training digit
    as a real test digit is; a copy sits on one. Says which; returns samples, each with its k nearest."""
    samples = samples_from(generator, noise[:len(test_images)]).to(training_images.device)
    sample_distances, neighbours = nearest_training_digits(samples, training_images, k)
    generated = sample_distances[:, 0].median().item()
    real = nearest_training_digits(test_images, training_images, 1)[0].median().item()
    say(f"Copying check: the typical generated digit lies {generated:.1f} from its nearest training digit, "
        f"a real test digit {real:.1f} ({generated / real:.2f}x; far below 1 would mean copying)")
    picked = torch.arange(shown) * len(samples) // shown  # spread out: a conditional run's come in digit order
    return torch.cat([samples[picked, None], training_images[neighbours[picked]]], dim=1).flatten(0, 1).cpu()


@torch.no_grad()
def show_what_was_learned(generator, discriminator, noise, d_scores, training_images, test_images, out_dir, files):
    """latent_walk.png, d_picks.png (the samples D rates most and least real), then d_scores.png and
    nearest_training.png if there are scores and training digits to draw them from. Returns their names."""
    files.submit(draw_digits, [("walks between noise vectors", latent_walk(generator, noise))],
                 out_dir / "latent_walk.png", 10)  # 10 digits a row
    labels = digits_in_order(generator, len(noise), noise.device)
    images = generator(noise, labels)
    order = discriminator(images, labels).flatten().argsort(descending=True)
    files.submit(draw_digits, [(f"D's 32 most real of {len(noise)}", images[order[:32]].cpu()),
                               ("D's 32 least real", images[order[-32:]].cpu())], out_dir / "d_picks.png", 8)
    drawn = ["latent_walk.png", "d_picks.png"]
    if d_scores:
        files.submit(plot_d_scores, d_scores, out_dir / "d_scores.png")
        drawn.append("d_scores.png")
    if training_images is not None:
        rows = check_for_copying(generator, noise, training_images, test_images)
        files.submit(draw_digits, [("generated | its 5 nearest training digits", rows)],
                     out_dir / "nearest_training.png", 6)  # a sample and its 5
        drawn.append("nearest_training.png")
    return drawn


class Coach:
    """The commonest failures, said as they start and clear. D won: D(G(z)) under D_HAS_WON all epoch (its verdict
    no longer guides G). Collapse: the grid varies under COLLAPSED times as much as real digits (mean pixel distance
    of pairs), from step WARM_UP_STEPS on, as young generators all draw near-copies a while."""

    D_HAS_WON, COLLAPSED, WARM_UP_STEPS, CHECK_EVERY = 0.05, 0.5, 500, 100  # measured: benchmarks/README.md

    def __init__(self, real_images, args):
        self.real_variety, self.troubles = torch.pdist(real_images.cpu()).mean().item(), set()
        self.try_this = (f"the gradient penalty (--gp-gamma {GP_GAMMA or 1:g})" if args.gp_gamma == 0 else
                         f"a stronger gradient penalty (--gp-gamma {args.gp_gamma * 4:g}) or a smaller --lr")

    def should_check_variety(self, step):
        return step >= self.WARM_UP_STEPS and step % self.CHECK_EVERY == 0

    def watch_variety(self, epoch, step, samples):
        variety = torch.pdist(samples).mean().item() / self.real_variety
        self.report("collapse", variety < self.COLLAPSED,
                    f"the samples have collapsed: at step {step} (epoch {epoch}) the {len(samples)} grid digits vary "
                    f"{variety:.2f}x as much as real digits (under {self.COLLAPSED}), nearly one picture for "
                    f"every z. Try {self.try_this}, or another --seed",
                    f"the samples vary again ({variety:.2f}x real digits) at step {step} (epoch {epoch})")

    def watch_the_game(self, epoch, epoch_history):
        highest = epoch_history[:, 3].max().item()
        self.report("D won", highest < self.D_HAS_WON,
                    f"the discriminator has won: D(G(z)) stayed below {self.D_HAS_WON} all through epoch {epoch}, "
                    f"so its gradient no longer points G towards real digits. Try {self.try_this}",
                    f"the generator is back in the game: D(G(z)) reached {highest:.2f} in epoch {epoch}")

    def report(self, trouble, now, warning, cleared):
        if now != (trouble in self.troubles):  # a change: said once, until it changes back
            say(f"warning: {warning}" if now else cleared)
            self.troubles ^= {trouble}


def show_in_notebook(path, shown=None):
    """In a Jupyter kernel, the picture under the cell (or in place of the one `shown`); where it is shown."""
    display = notebook_display()
    if display and path.is_file() and shown:
        shown.update(display.Image(filename=str(path)))
    elif display and path.is_file():
        shown = display.display(display.Image(filename=str(path)), display_id=True)
    return shown


def notebook_display():
    """IPython.display inside a Jupyter kernel; None anywhere else (a terminal, a plain IPython shell)."""
    ipython = sys.modules.get("IPython")  # imported by every kernel before it runs a cell
    shell = ipython.get_ipython() if ipython else None
    if shell is None or "IPKernelApp" not in shell.config:
        return None
    from IPython import display
    return display


def started_by_a_kernel():
    """sys.argv is a kernel's own (ipykernel_launcher.py -f kernel.json, python -m ipykernel), not %run's."""
    launcher = Path(sys.argv[0]).name  # in a kernel, anything but a script of one's own
    return launcher.endswith("kernel_launcher.py") or (notebook_display() is not None and (
        launcher == "__main__.py" or not launcher.endswith(".py")))


class BackgroundWriter:
    """Draws and writes on one background thread, in the order asked, so that training never waits for matplotlib
    or the disk (unless drawing falls MOST_QUEUED jobs behind). A picture that cannot be written is a warning; a
    write that must succeed (the checkpoint) raises its one-line error here, at the next submit() or close()."""

    MOST_QUEUED = 4

    def __init__(self):
        self.worker = ThreadPoolExecutor(1, "gan_mnist_files", initializer=yield_the_cpu_to_training)
        self.pending, self.trouble = [], None  # the cause last warned about, until a write succeeds

    def submit(self, function, *args, must_succeed=False):
        if len(self.pending) >= self.MOST_QUEUED:
            wait(self.pending[:1])
        self.hand_on_errors(finished_only=True)
        job = self.worker.submit(function, *args)
        job.must_succeed = must_succeed
        self.pending.append(job)
        return job

    def close(self):
        self.hand_on_errors(finished_only=False)
        self.worker.shutdown()  # everything asked for is on disk

    def hand_on_errors(self, finished_only):
        while self.pending and (self.pending[0].done() or not finished_only):  # in the order asked for
            job = self.pending.pop(0)
            error = job.exception()
            if error is not None and (job.must_succeed or not isinstance(error, WriteError)):
                raise error
            if error is not None and error.cause != self.trouble:  # once, not on every grid, while it lasts
                say(f"warning: cannot write {error.path} ({error.cause}); the run goes on without it")
            if not job.must_succeed:  # a picture written ends the trouble; one that failed is the trouble now
                self.trouble = None if error is None else error.cause


def yield_the_cpu_to_training():
    """The drawing thread at the lowest CPU priority, to draw when training leaves a core idle (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # not allowed here: it draws at the normal priority, only slower
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # on Linux, this thread alone


# %%
# 命令行与 main() · The command line: every constant as a flag, and main()
def parse_args(argv=None):
    parser = OneLineErrorParser(description="Train a GAN on MNIST (the article's section 5), or draw digits "
                                "with a trained one.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flag = parser.add_argument
    flag("--epochs", type=int, default=argparse.SUPPRESS, help=f"passes over the data ({EPOCHS}; --resume: the run's)")
    flag("--batch-size", type=int, default=BATCH_SIZE, help="images per step")
    flag("--lr", type=float, default=LR, help="Adam's learning rate")
    flag("--betas", type=float, nargs=2, default=BETAS, metavar=("B1", "B2"), help="Adam's decay rates, in [0, 1)")
    flag("--z-dim", type=int, default=Z_DIM, help="length of the noise vector")
    flag("--hidden-dim", type=int, default=HIDDEN_DIM, help="hidden layer width")
    flag("--gp-gamma", type=float, default=GP_GAMMA, help="gradient penalty on D's slopes; 0: none, as the article")
    flag("--gp-every", type=int, default=GP_EVERY, help="apply the gradient penalty every N steps")
    flag("--article-pixels", action=argparse.BooleanOptionalAction, default=ARTICLE_PIXELS, help="[0, 1] pixels")
    flag("--conditional", action=argparse.BooleanOptionalAction, default=CONDITIONAL, help="tell G and D the digit")
    flag("--sample-every", type=int, default=SAMPLE_EVERY, help="steps between sample grids")
    flag("--seed", type=int, default=SEED, help="random seed")
    flag("--device", choices=["auto", "cpu", "cuda", "mps"], default=DEVICE, help="auto: cuda, else mps, else cpu")
    flag("--data-dir", default=DATA_DIR, help="the folder that holds MNIST/raw/ (not the four files themselves)")
    flag("--out-dir", default=OUT_DIR, help="folder for pictures, metrics, checkpoint")
    flag("--max-steps", type=int, help="stop after this many steps in all")
    flag("--resume", action="store_true", help="continue the run in OUT_DIR from its checkpoint")
    flag("--overwrite", action="store_true", help="start afresh over an earlier run in OUT_DIR")
    flag("--no-cuda-graph", action="store_true", help="on a GPU, run train_step's Python every step (slower)")
    flag("--generate", type=int, metavar="N", help="no training: draw N digits into OUT_DIR/generated.png")
    flag("--digit", type=int, help="with --generate and a conditional checkpoint: draw this digit, 0-9")
    flag("--best-of", type=int, default=argparse.SUPPRESS, metavar="K", help=f"with --generate: best of K ({BEST_OF})")
    flag("--checkpoint", help="the checkpoint --generate reads (OUT_DIR/checkpoint.pt)")
    args = parser.parse_args(argv)
    check_settings(args)
    return args


def main(argv=None):
    """Train, or --generate, as the words in argv ask (the command line's, sys.argv[1:], if None).
    In a notebook it returns the exit code; elsewhere it exits with it."""
    if argv is None:  # a kernel's own arguments (-f kernel.json) are not the learner's; %run's are
        argv = [] if started_by_a_kernel() else sys.argv[1:]
    argv = [str(word) for word in argv]
    try:
        args = parse_args(argv)
        args.command_line = argv  # for the command a stopped run prints to continue it
        make_cpu_arithmetic_repeatable()
        exit_code = generate(args) if args.generate else train(args)
    except (RunError, MemoryError, RuntimeError) as error:
        message = str(error) if isinstance(error, RunError) else out_of_memory_error(error, args)
        if message is None:
            raise  # a bug: its traceback is what a reader needs
        exit_code = getattr(error, "exit_code", 2)  # 0: nothing left to do, not a failure
        say(message if exit_code == 0 else f"error: {message}", file=sys.stderr if exit_code else sys.stdout)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        say("\ninterrupted; the last checkpoint written is kept", file=sys.stderr)
        exit_code = 130
    finally:
        while HELD_LOCKS:  # so that a second main() in this process may use the folder
            os.close(HELD_LOCKS.pop())
    if notebook_display() is not None:
        return exit_code  # a SystemExit would only print a traceback under the cell
    sys.exit(exit_code)


# %%
# GPU 提速 · Speed on a GPU: the whole step replayed as one CUDA graph
def make_step_function(generator, discriminator, g_optimizer, d_optimizer, batch_size, use_cuda_graph):
    """train_step as a function of the batch alone (images, penalty, labels)."""
    gan = (generator, discriminator, g_optimizer, d_optimizer)
    return CudaGraphStep(gan, batch_size) if use_cuda_graph else lambda *batch: train_step(*gan, *batch)


class CudaGraphStep:
    """train_step, recorded once as a CUDA graph and replayed for every full batch: each of the step's ~60 GPU
    kernels runs for microseconds, less than Python takes to launch it, and a replay sends all in one call. The
    catch: train_step's Python then no longer runs (a print() in it shows only at first): --no-cuda-graph.
    文章之外：在 GPU 上把一整步录制成一个 CUDA Graph，之后每步只需重放一次，算法与 train_step 相同。"""

    def __init__(self, models_and_optimizers, batch_size, ordinary_steps=3):
        self.models_and_optimizers, self.batch_size = models_and_optimizers, batch_size
        self.ordinary_steps_left = ordinary_steps  # first, so CUDA's libraries and Adam's state exist when recording
        self.warmed_up = set()  # penalty strengths that have run once as written
        self.graphs = {}  # penalty strength -> (its recorded graph, the metrics tensor it writes)
        self.batch = self.labels = None

    def __call__(self, real_images, penalty_gamma=0.0, real_labels=None):
        if len(real_images) != self.batch_size:  # an epoch's smaller last batch: the graph's shapes are fixed
            return train_step(*self.models_and_optimizers, real_images, penalty_gamma, real_labels)
        if self.ordinary_steps_left > 0 or penalty_gamma not in self.warmed_up:
            self.ordinary_steps_left -= 1
            self.warmed_up.add(penalty_gamma)
            # PyTorch's rule for steps before recording a graph: run them on a side stream.
            side_stream = torch.cuda.Stream()
            side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side_stream):
                metrics = train_step(*self.models_and_optimizers, real_images, penalty_gamma, real_labels)
            torch.cuda.current_stream().wait_stream(side_stream)
            return metrics
        if penalty_gamma not in self.graphs:  # steps with and without the penalty run different kernels
            self.record(real_images, penalty_gamma, real_labels)
        graph, metrics = self.graphs[penalty_gamma]
        self.batch.copy_(real_images)  # every graph reads its batch from this one place
        if real_labels is not None:
            self.labels.copy_(real_labels)
        graph.replay()
        return metrics.clone()  # the next replay overwrites these metrics

    def record(self, real_images, penalty_gamma, real_labels):
        for optimizer in self.models_and_optimizers[2:]:
            for group in optimizer.param_groups:
                group["capturable"] = True  # fused Adam keeps its step count on the GPU; this lets it be recorded
        if self.batch is None:
            self.batch = real_images.clone()
            self.labels = None if real_labels is None else real_labels.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the kernels; nothing runs yet
            metrics = train_step(*self.models_and_optimizers, self.batch, penalty_gamma, self.labels)
        self.graphs[penalty_gamma] = (graph, metrics)


# %%
# 可靠运行 · The dependable parts: exact resume, safe stops, --generate, and one line for every bad input
CHECKPOINT_FORMAT = "gan_mnist checkpoint v2"
READABLE_FORMATS = (CHECKPOINT_FORMAT, "gan_mnist checkpoint v1")  # v1: shuffled by seed + epoch (load_checkpoint)
RUN_SETTINGS = ["z_dim", "hidden_dim", "batch_size", "lr", "betas", "gp_gamma", "gp_every", "article_pixels",
                "num_classes", "seed"]  # what a checkpoint records of its run, and a resumed run must share
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
MOST_CANDIDATES = 32768  # digits --generate --best-of draws at once to choose from (about 100 MB of pixels)
HELD_LOCKS = []  # open handles of the folders this process has locked, until main() returns


class RunError(Exception):
    """A problem the user can fix: main() prints it as one line, no traceback."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise RunError(f"{message} (see: python {self.prog} --help)")


def check_settings(args):
    """Catch bad values whether they came from a flag or an edited constant."""
    best_of_asked, args.best_of = hasattr(args, "best_of"), getattr(args, "best_of", BEST_OF)  # unset unless asked
    args.epochs_asked, args.epochs = hasattr(args, "epochs"), getattr(args, "epochs", EPOCHS)  # --resume: the run's
    for flag, value in [("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--z-dim", args.z_dim),
                        ("--hidden-dim", args.hidden_dim), ("--sample-every", args.sample_every),
                        ("--gp-every", args.gp_every), ("--best-of", args.best_of), ("--max-steps", args.max_steps),
                        ("--generate", args.generate)]:
        if value is not None and (type(value) is not int or value < 1):
            raise RunError(f"{flag} must be a whole number of at least 1, not {value!r}")
    if not (isinstance(args.lr, (int, float)) and math.isfinite(args.lr) and args.lr > 0):
        raise RunError(f"--lr must be a positive number such as {LR:g}, not {args.lr!r}")
    if not (isinstance(args.gp_gamma, (int, float)) and math.isfinite(args.gp_gamma) and args.gp_gamma >= 0):
        raise RunError(f"--gp-gamma must be a number of at least 0 (0 turns the penalty off), not {args.gp_gamma!r}")
    if len(args.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in args.betas):
        raise RunError(f"--betas takes two numbers in [0, 1), such as 0.5 0.999, not {list(args.betas)!r}")
    if not (type(args.seed) is int and 0 <= args.seed < 2**32):
        raise RunError(f"--seed must be a whole number from 0 to {2**32 - 1}, not {args.seed!r}")
    if args.generate and args.generate > 1024:
        raise RunError(f"--generate draws at most 1024 digits at a time, not {args.generate}")
    if args.generate and args.generate * args.best_of > MOST_CANDIDATES:
        raise RunError(f"--generate {args.generate} --best-of {args.best_of} would draw {args.generate * args.best_of} "
                       f"digits to choose from, over {MOST_CANDIDATES} at once: ask for fewer or a smaller --best-of")
    if args.digit is not None and not (type(args.digit) is int and 0 <= args.digit < DIGITS):
        raise RunError(f"--digit must be a digit from 0 to 9, not {args.digit!r}")
    for flag, asked, what in [("--best-of", best_of_asked, "chooses among"),
                              ("--digit", args.digit is not None, "chooses")]:
        if asked and not args.generate:
            raise RunError(f"{flag} {what} what --generate N draws: add --generate N")
    if args.resume and args.overwrite:
        raise RunError("--resume continues the run in OUT_DIR and --overwrite replaces it: choose one")
    args.betas, args.gp_gamma = tuple(map(float, args.betas)), float(args.gp_gamma)
    args.num_classes = DIGITS if args.conditional else 0


def prepare_out_dir(args):
    """OUT_DIR made, proved writable, locked against a second run (gone with its process), not started over."""
    out_dir = Path(args.out_dir)
    try:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        (out_dir / ".write_test").write_bytes(b"ok")
        (out_dir / ".write_test").unlink()
    except OSError as error:
        raise RunError(f"cannot write to the output folder {out_dir}/ ({error.strerror}). "
                       f"Choose another with --out-dir") from None
    if sys.platform != "win32":
        HELD_LOCKS.append(os.open(out_dir, os.O_RDONLY))
        try:
            fcntl.flock(HELD_LOCKS[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(HELD_LOCKS.pop())
            raise RunError(f"another run is training in {out_dir}/ right now. Let it finish (or stop it with "
                           f"Ctrl-C), or start a second run elsewhere with --out-dir") from None
    if (out_dir / "checkpoint.pt").exists() and not (args.resume or args.overwrite):
        raise RunError(f"{out_dir}/ already holds a run (checkpoint.pt). Continue it with --resume, "
                       f"start a new one with --out-dir NEW_FOLDER, or replace it with --overwrite")
    return out_dir


def write_atomically(path, write):
    """write(file) to a temporary file, flushed to the disk, renamed to path: never half a file where one was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # made again if it was deleted mid-run
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # on the disk itself, not only in its cache, before the rename makes it the one
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):  # the folder itself gone or locked: nothing left to tidy
            temporary.unlink(missing_ok=True)
        raise WriteError(path, error) from None


class WriteError(RunError):
    """A file that could not be written: the end of the run for the checkpoint, a warning for a picture."""

    def __init__(self, path, error):
        self.path, self.cause = path, (error.strerror or str(error)).lower()  # "no space left on device"
        kept = "" if path.suffix == ".png" else "; the last whole checkpoint is kept, and --resume continues from it"
        super().__init__(f"cannot write {path} ({self.cause}). Make room or fix the folder (or choose another "
                         f"--out-dir){kept}")


def load_checkpoint(path, resuming=None):
    """The checkpoint, all on the CPU (weights reach the device as networks load them); checked for `resuming`."""
    if not Path(path).is_file():
        raise RunError(f"no checkpoint at {path}. Train first (python gan_mnist.py), "
                       f"or point at one with --out-dir or --checkpoint")
    try:  # weights_only=True: a checkpoint holds tensors and plain values, never code to run
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0]  # an empty file: EOFError('')
        raise RunError(f"cannot read the checkpoint {path} ({reason}). It is damaged or not a PyTorch file: "
                       f"train again, or use --overwrite to start afresh") from None
    saved_format = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if saved_format not in READABLE_FORMATS and str(saved_format).startswith("gan_mnist checkpoint"):
        raise RunError(f"{path} was written by another version of gan_mnist.py ({saved_format}; this one "
                       f"reads {CHECKPOINT_FORMAT}). Use the version that wrote it, or start afresh with --overwrite")
    if saved_format not in READABLE_FORMATS:
        raise RunError(f"{path} is not a gan_mnist checkpoint. Point at one written by this script "
                       f"(OUT_DIR/checkpoint.pt)")
    checkpoint.setdefault("d_scores", {})  # what early v1 checkpoints lack: as they were trained
    checkpoint["config"] = {"gp_gamma": 0.0, "gp_every": 1, "article_pixels": False, "num_classes": 0,
                            **checkpoint["config"]}
    for name in RUN_SETTINGS if resuming else []:
        if checkpoint["config"][name] != getattr(resuming, name):
            trained, asked = as_flag(name, checkpoint["config"][name]), as_flag(name, getattr(resuming, name))
            raise RunError(f"cannot resume: the checkpoint was trained with {trained}, this run asks for {asked}. "
                           f"Pass {trained}, or start a new run with --out-dir or --overwrite")
    if resuming and not resuming.epochs_asked:  # a bare --resume finishes the run as it was asked for
        resuming.epochs = checkpoint.get("epochs", EPOCHS)
    if resuming and checkpoint["epoch"] >= resuming.epochs:
        raise RunError(f"the run in {resuming.out_dir}/ is finished (--epochs {resuming.epochs}; done: "
                       f"{checkpoint['epoch']}). To go on: --resume --epochs N, N > {checkpoint['epoch']}", exit_code=0)
    if resuming and resuming.max_steps and checkpoint["step"] >= resuming.max_steps:
        raise RunError(f"the run in {resuming.out_dir}/ has already done {checkpoint['step']} steps, which is "
                       f"--max-steps {resuming.max_steps}. Raise --max-steps or drop it", exit_code=0)
    if resuming and saved_format != CHECKPOINT_FORMAT and resuming.seed:  # v1: shuffled by seed + epoch
        say(f"note: seed {resuming.seed}'s data order changed since this checkpoint's version: it goes on in the new")
    return checkpoint


def as_flag(name, value):
    """A setting as the flag that asks for it: --hidden-dim 256, --betas 0.0 0.999, --no-article-pixels."""
    name, value = ("conditional", value > 0) if name == "num_classes" else (name, value)  # set by --conditional
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, (tuple, list)) else value}"


def out_of_memory_error(error, args):
    """For an out-of-memory error, one line: how much more was asked for, and what to try. None for any other."""
    if not (isinstance(error, (torch.OutOfMemoryError, MemoryError)) or re.search(
            "can't allocate memory|not enough memory|out of memory", str(error))):  # CPU (Linux, Windows), CUDA
        return None
    asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGT]iB)", str(error))
    amount = f" (it asked for {f'{int(asked[1]) / 2**30:.1f} GiB' if asked[1] else asked[2]} more)" if asked else ""
    on_a_gpu = "--device cpu, " if re.search("CUDA|MPS", str(error)) else ""
    saved = Path(args.out_dir, "checkpoint.pt")
    kept = f"; the last whole checkpoint in {args.out_dir}/ is kept" if saved.is_file() else ""
    return (f"memory ran out{amount}. Try a smaller --hidden-dim (now {args.hidden_dim}) or --batch-size "
            f"(now {args.batch_size}), {on_a_gpu}or close other programs{kept}")


def make_cpu_arithmetic_repeatable():
    """Same seed, same numbers on this CPU: float sums depend on the order in which Intel MKL adds terms too.
    MKL_CBWR fixes it (STRICT: on any number of threads, Intel AVX2 or later) from MKL's first product on."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


class StopSignals:
    """Ctrl-C, SIGTERM (`kill`, a shutdown) or a closed stdout (say): stop after this step, and save."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
    output_closed = False  # set by say(), for the whole process: standard output is gone

    def __init__(self):
        self.received = self.reason = None  # the signal, once one arrives; why the run stops, once it does
        self.previous_handlers = {number: signal.signal(number, self.handle) for number in self.NAMES}

    def handle(self, signum, frame):
        self.received = signum  # only noted: a print here could land in the middle of another print and raise
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def requested(self):
        if self.reason is None and self.received:
            self.reason = self.NAMES[self.received]
            say(f"\n{self.reason}: saving after this step (send it again to quit without saving)...")
        elif self.reason is None and self.output_closed:
            self.reason = "standard output closed"
        return self.reason is not None

    def restore(self):
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)


@torch.no_grad()
def generate(args):
    """--generate N: N new digits from a checkpoint (D's best of --best-of), and the pictures of what G learned."""
    device, out_dir = pick_device(args.device), Path(args.out_dir)
    checkpoint = load_checkpoint(args.checkpoint or out_dir / "checkpoint.pt")
    settings = argparse.Namespace(**checkpoint["config"])
    if args.digit is not None and not settings.num_classes:
        raise RunError(f"--digit {args.digit}: this checkpoint's GAN was trained without --conditional, so it "
                       f"cannot be asked for a digit. Train one with --conditional (and its own --out-dir)")
    generator, discriminator, *_ = build_gan(settings, device)
    generator.load_state_dict(checkpoint["generator"])
    discriminator.load_state_dict(checkpoint["discriminator"])
    if mnist_files_present(args.data_dir):
        training = [part.to(device) for part in load_mnist(args.data_dir, True, settings.article_pixels)]
        test_images = load_mnist(args.data_dir, False, settings.article_pixels)[0][:EVALUATION_SIZE].to(device)
    else:
        training = test_images = None
        at_once = "" if args.best_of == 1 or settings.num_classes else (
            ", and D chooses from all digits at once, favouring a few (--best-of 1: G alone)")
        say(f"No MNIST in {args.data_dir}/MNIST/raw/, so no nearest_training.png{at_once}: point --data-dir at "
            f"the folder that holds MNIST/raw/")
    columns = math.ceil(args.generate / DIGITS) if settings.num_classes and args.digit is None else None
    count = columns * DIGITS if columns else args.generate  # a conditional GAN's digit table: row r digit r
    labels = torch.full((count,), args.digit, device=device) if args.digit is not None else digits_in_order(
        generator, count, device)
    way = "digit by digit" if training is not None or labels is not None else "all at once"
    what = f"{count} digits" if args.digit is None else f"{count} of digit {args.digit}"
    what += f", D's best of {args.best_of}, {way}" if args.best_of > 1 else ""
    torch.manual_seed(args.seed)  # a different --seed draws different digits
    drawn = draw_the_best(generator, discriminator, count, args.best_of, labels, training)
    files = BackgroundWriter()
    files.submit(draw_digits, [(f"{what}, epoch {checkpoint['epoch']}", drawn)],
                 out_dir / "generated.png", columns, must_succeed=True)
    noise = make_evaluation_noise(settings.z_dim, settings.seed, device)  # the walks of the run's own end
    pictures = show_what_was_learned(generator, discriminator, noise, checkpoint["d_scores"],
                                     None if training is None else training[0], test_images, out_dir, files)
    files.close()
    for name in ["generated.png", *pictures]:
        show_in_notebook(out_dir / name)
    say(f"Wrote {what} to {out_dir / 'generated.png'}, and {', '.join(pictures)} beside it")
    return 0


def mnist_files_present(data_dir):
    return all((Path(data_dir) / "MNIST" / "raw" / name).is_file() for name in MNIST_FILES)


# %%  训练 · Train: run this cell (in a notebook, edit the constants above and run all cells)
if __name__ == "__main__":
    main()
