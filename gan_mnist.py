"""Train a GAN to draw MNIST digits: the code for section 5 of the article
"AIGC从入门到实战" (a Generator and a Discriminator, each a two-layer MLP,
trained against each other with the BCE loss of section 4.1).

    python gan_mnist.py                  # train; pictures land in outputs/
    python gan_mnist.py --epochs 5       # every constant below has a flag
    python gan_mnist.py --resume         # continue an interrupted run
    python gan_mnist.py --generate 64    # draw 64 new digits from the checkpoint
    python gan_mnist.py --help

In a notebook: `%run gan_mnist.py --epochs 5`, or open this file as one (its `# %%` cells are the sections).

Read it top to bottom beside the article: each banner names the section it
implements. Where this file departs from the article, a comment says why.
"""
# ---------------------------------------------------------------------------
# 5.1 导入库 · Imports
# ---------------------------------------------------------------------------
import torch
import torch.nn as nn
import torchvision

# The article imports matplotlib.pyplot. We draw on Figure objects instead:
# they render straight to files, need no window, and keep no global state.
from matplotlib.figure import Figure  # 与文章不同：不用 pyplot，画图不需要显示器

# What only the pictures and the dependable parts use (the log, files, checkpoints, Ctrl-C):
import argparse
import csv
import errno
import functools
import io
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np  # comes with torch and matplotlib; the pictures are drawn from NumPy arrays
from PIL import Image  # comes with matplotlib and torchvision; writes the GIF

try:
    import fcntl  # to keep a second run out of a folder in use; not on Windows
except ImportError:
    fcntl = None

# %%
# ---------------------------------------------------------------------------
# 常量 · Constants: change them here, or pass the flag in brackets
# ---------------------------------------------------------------------------
EPOCHS = 200  # passes over the 60,000 training images (--epochs)
BATCH_SIZE = 128  # images per optimiser step (--batch-size)
LR = 2e-4  # Adam's learning rate for both networks (--lr)
BETAS = (0.0, 0.999)  # Adam's decay rates; 0.0: no momentum to carry G and D past each other; article 0.9 (--betas)
# 与文章不同：β1、β2 是 Adam 两个矩估计的衰减率；β1 = 0 即不用动量（文章用默认的 0.9），动量会让两个网络互相冲过头。
Z_DIM = 100  # length of the noise vector z the generator starts from (--z-dim)
HIDDEN_DIM = 256  # width of the hidden layer in both networks (--hidden-dim)
GP_GAMMA = 1.0  # gradient penalty on D's slopes, so D cannot herd G into a few digits; 0.0: the article (--gp-gamma)
GP_EVERY = 8  # the penalty on one step in this many, this many times as strong: nearly as good, cheaper (--gp-every)
ARTICLE_PIXELS = False  # True replays the article's flaw: real pixels in [0, 1] against G's Tanh (--article-pixels)
CONDITIONAL = False  # True: both networks are told the digit, so you can ask for one (--conditional)
BEST_OF = 1  # --generate draws this many times the digits asked for, and D keeps the best; 1: G alone (--best-of)
SAMPLE_EVERY = 1000  # save a sample grid every this many steps, as the article's sample_period (--sample-every)
SEED = 0  # seeds every random choice, so a CPU run repeats exactly (--seed)
DEVICE = "auto"  # "auto" picks cuda, then mps, then cpu (--device); 与文章不同：文章只在 CPU 上运行
DATA_DIR = "data"  # where MNIST is read from, or downloaded to (--data-dir)
OUT_DIR = "outputs"  # where grids, plots and the checkpoint go (--out-dir)

IMAGE_DIM = 28 * 28  # an MNIST digit, flattened into one vector
GRID_SIZE = 64  # digits in each sample grid (8 x 8)


def pick_device(name):
    """'auto' means the fastest device PyTorch can see: CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    check_device_available(name)
    return torch.device(name)


def describe_device(device):
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


# %%
# ---------------------------------------------------------------------------
# 5.2 加载MNIST数据集 · Loading MNIST
# ---------------------------------------------------------------------------
def load_mnist(data_dir, train=True, article_pixels=False):
    """All MNIST images of one split as a single (N, 784) tensor in [-1, 1]
    (in [0, 1], as the article has them, with article_pixels=True).

    The article passes transforms.ToTensor() to the dataset, which gives pixels
    in [0, 1]. But the generator ends in Tanh, so its pixels lie in [-1, 1]:
    the discriminator could then spot fakes by their negative pixels alone,
    and the generator would be chasing images it cannot draw. Scaling the real
    images to [-1, 1] (what Normalize((0.5,), (0.5,)) does) puts both on one scale.
    与文章不同：ToTensor() 给出 [0, 1] 的像素，而生成器的 Tanh 输出在 [-1, 1]，
    判别器只看有没有负像素就能认出假图像；所以这里把真实图像缩放到 [-1, 1]。
    """
    files_present = check_mnist_files(data_dir)
    try:
        # 下载MNIST数据集 (only when the files are not there already)
        dataset = torchvision.datasets.MNIST(root=data_dir, train=train, download=not files_present)
    except Exception as error:  # no network, or a file torchvision cannot parse
        raise mnist_error(data_dir, error) from None
    # 将图像展平为向量: (N, 784), read once, with no transform per image
    pixels = dataset.data.reshape(-1, IMAGE_DIM).float()
    if article_pixels:  # the flaw, kept to be seen: run with --article-pixels and compare the grids
        return pixels.div_(255)
    return pixels.div_(127.5).sub_(1)  # in place: one copy in memory


def load_labels(data_dir, train=True):
    """The digit each image shows. The article's GAN never looks at them (its
    loop reads `for i, (images, _) in ...`); a conditional one learns from them."""
    return torchvision.datasets.MNIST(root=data_dir, train=train).targets


def shuffled_batches(images, labels, batch_size, seed, epoch, skip=0):
    """One epoch: the training images in a new random order, one slice a batch,
    each with its labels. The last batch may be smaller; nothing below assumes otherwise.

    The article's DataLoader(shuffle=True) makes every image a PIL image, then
    a tensor, then stacks 128 of them: Python work per image, every step. Here
    the whole set is one tensor already on the device, so a batch is a single
    indexing operation. The order comes from (seed, epoch) alone, so a run
    resumed part-way through an epoch (skip: the batches it had done) sees the
    very same batches.
    与文章不同：不用 DataLoader 逐张转换图像，整个训练集已是设备上的一个张量，每批只需一次索引。
    """
    # 构建数据加载器: a new order each epoch, cut into batches
    shuffle = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(images), generator=shuffle).to(images.device)
    for indices in order.split(batch_size)[skip:]:
        yield images[indices], labels[indices]


# %%
# ---------------------------------------------------------------------------
# 5.3 定义生成器 · The Generator: noise z -> a 784-pixel image in [-1, 1]
# ---------------------------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, z_dim=Z_DIM, hidden_dim=HIDDEN_DIM, image_dim=IMAGE_DIM, num_classes=0):
        super().__init__()
        self.z_dim = z_dim
        self.num_classes = num_classes  # 0: the article's GAN; 10: told which digit to draw (after 5.6)
        self.gen = nn.Sequential(
            nn.Linear(z_dim + num_classes, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, image_dim),
            nn.Tanh(),  # 输出像素值在(-1,1): the same scale as the real images (see load_mnist)
        )

    def forward(self, z, labels=None):
        if self.num_classes:  # a conditional GAN: the digit to draw rides along with the noise
            z = append_digit(z, labels, self.num_classes)
        return self.gen(z)


# %%
# ---------------------------------------------------------------------------
# 5.4 定义判别器 · The Discriminator: an image -> one score, "how real does it look?"
# ---------------------------------------------------------------------------
class Discriminator(nn.Module):
    def __init__(self, image_dim=IMAGE_DIM, hidden_dim=HIDDEN_DIM, num_classes=0):
        super().__init__()
        self.num_classes = num_classes  # 0: the article's; 10: judges "a real image of this digit?"
        self.disc = nn.Sequential(
            nn.Linear(image_dim + num_classes, hidden_dim),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden_dim, 1),
            # No Sigmoid here, unlike the article: the loss in 5.5 applies it.
            # 与文章不同：这里没有 Sigmoid（文章用它“输出为真实图像的概率”），Sigmoid 交给 5.5 的损失函数计算。
        )

    def forward(self, images, labels=None):
        if self.num_classes:
            images = append_digit(images, labels, self.num_classes)
        return self.disc(images)  # a logit; D(x) = sigmoid(logit) is the probability "real"


# %%
# ---------------------------------------------------------------------------
# 5.5 定义损失函数和优化器 · Loss and optimisers
# ---------------------------------------------------------------------------
# The article's Sigmoid + BCELoss computes -[y log s(l) + (1 - y) log(1 - s(l))]
# with s = sigmoid. BCEWithLogitsLoss computes the same number from the logit l
# in one stable step: it never takes log(0) when D is sure, where BCELoss must
# clamp to -100 and the gradient vanishes.
# 与文章不同：Sigmoid + BCELoss 合并为一步的 BCEWithLogitsLoss，数值相同，但判别器很确定时梯度不会消失。
bce_with_logits = nn.BCEWithLogitsLoss()  # 损失函数


def discriminator_loss(real_logits, fake_logits):
    """Section 4.1: D maximises log D(x) + log(1 - D(G(z))).

    Minimising BCE with label 1 for real images and 0 for generated ones is
    exactly that: BCE(l, 1) = -log D(x) and BCE(l, 0) = -log(1 - D(G(z))).
    """
    real_loss = bce_with_logits(real_logits, torch.ones_like(real_logits))
    fake_loss = bce_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real_loss + fake_loss


def generator_loss(fake_logits):
    """Section 4.1 has G minimise log(1 - D(G(z))). Early on D rejects every
    fake, that curve is flat, and G learns nothing; so, as Goodfellow et al.
    (2014, section 3) advise, G maximises log D(G(z)) instead: BCE with label 1.
    与公式 4.1 不同：生成器最大化 log D(G(z))，而不是最小化 log(1 - D(G(z)))，因为训练初期后者几乎没有梯度。
    """
    return bce_with_logits(fake_logits, torch.ones_like(fake_logits))


def build_gan(args, device):
    """The article's G, D and their two Adam optimisers (its G = Generator(z_dim), D = Discriminator())."""
    generator = Generator(args.z_dim, args.hidden_dim, num_classes=args.num_classes).to(device)  # 生成器
    discriminator = Discriminator(IMAGE_DIM, args.hidden_dim, num_classes=args.num_classes).to(device)  # 判别器
    return (generator, discriminator, *make_optimizers(generator, discriminator, args.lr, args.betas))  # 优化器


def make_optimizers(generator, discriminator, lr, betas):
    # fused=True runs each Adam update as one kernel instead of one per tensor
    # (on CPU and GPU alike); the arithmetic is Adam's, unchanged. betas: see BETAS at the top.
    # 与文章不同：融合的 Adam，每个网络的一次更新只启动一个内核，算法不变。
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas, fused=True)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas, fused=True)
    return g_optimizer, d_optimizer


# %%
# ---------------------------------------------------------------------------
# 5.6 训练模型 · Training: one step, then the loop
# ---------------------------------------------------------------------------
def train_step(generator, discriminator, g_optimizer, d_optimizer, real_images, penalty_gamma=0.0,
               real_labels=None):
    """One round of the game: a discriminator update, then a generator update.
    penalty_gamma > 0 adds the gradient penalty to D's loss in this step.
    The labels matter only to a conditional GAN (after 5.6); the article's ignores them.

    Returns [D loss, G loss, mean D(x), mean D(G(z))] as one tensor, left on
    the device so that the loop never waits for the GPU.
    """
    z = torch.randn(len(real_images), generator.z_dim, device=real_images.device)  # 生成噪声数据
    fake_labels, both_labels = digits_to_draw(generator, real_labels)  # None, None for the article's GAN
    fake_images = generator(z, fake_labels)  # 生成器生成假图像

    # ---- 训练判别器 · Discriminator: maximise log D(x) + log(1 - D(G(z))) ----
    # 最大化判别器能够正确识别真实图像和生成图像的概率
    # detach(): this update is D's alone, so no gradient flows back into G. Real and fake go through
    # D as one batch: the same numbers as two calls (D has no BatchNorm), with one pass instead of two.
    # 与文章不同：detach() 切断梯度，这一步的梯度不会流回 G；真假图像拼成一批，只经过 D 一次。
    # On penalty steps D also pays for steep slopes at the images (gradient_penalty, after 5.6), so
    # they need gradients. 梯度惩罚（文章没有）：D 在图像处的梯度太陡要付出代价，所以输入也要求梯度。
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
    # spares autograd computing gradients nobody uses. 与文章不同：更新 G 时冻结 D 的权重。
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
    """Section 5.6: the article's two loops, one train_step a batch. Everything
    around them that is not the GAN (the log, the pictures, checkpoints,
    Ctrl-C, resuming) is the RunRecord's work, after 5.6."""
    device = pick_device(args.device)
    with RunRecord(args) as run:  # checks and locks OUT_DIR, and reads the checkpoint of a run to resume
        print(f"Training on {describe_device(device)}", flush=True)
        torch.manual_seed(args.seed)
        images = load_mnist(args.data_dir, train=True, article_pixels=args.article_pixels).to(device)
        labels = load_labels(args.data_dir, train=True).to(device)
        generator, discriminator, g_optimizer, d_optimizer = build_gan(args, device)
        # train_step as a function of the batch alone; on a GPU it is recorded once
        # and replayed as a CUDA graph (see CudaGraphStep near the end of the file).
        take_step = make_step_function(generator, discriminator, g_optimizer, d_optimizer, args.batch_size,
                                       use_cuda_graph=device.type == "cuda" and not args.no_cuda_graph)
        # One noise batch, drawn once: every grid shows the same 64 z's, so the
        # grids are frames of one film and you can watch each digit take shape.
        # 与文章不同：固定一批噪声，每张网格图都用同样的 64 个 z 来画，连起来就是训练过程的一部影片。
        # (A conditional run's grid is a digit table: 10 x 10, row r drawn as digit r.)
        fixed_noise = torch.randn(args.num_classes ** 2 or GRID_SIZE, args.z_dim, device=device)
        run.begin(generator, discriminator, g_optimizer, d_optimizer, fixed_noise, images)  # a resume puts all back

        for epoch in range(run.epoch, args.epochs):
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
# ---------------------------------------------------------------------------
# 文章之外：判别器的梯度惩罚 · Beyond the article: a gradient penalty for the discriminator
# (train_step adds it to D's loss; GP_GAMMA = 0 gives the article's loss exactly)
# ---------------------------------------------------------------------------
def gradient_penalty(logits, images, gamma):
    """R1 + R2 (Mescheder et al. 2018): gamma/2 times the mean squared slope of D's
    logit at the real images (R1) plus the same at the generated ones (R2).

    Without it D can grow steep cliffs next to the digits it has learned to
    reject, and their gradient herds the generator towards a few digits it
    can draw safely. A gentle slope near the data keeps every digit in reach.
    Each logit depends on its own image alone, so the gradient of their sum
    gives every image its own slope.
    文章之外：梯度惩罚让判别器在真实和生成图像附近保持平缓，生成器才够得着每一个数字。
    """
    (slopes,) = torch.autograd.grad(logits.sum(), images, create_graph=True)  # create_graph: we backprop through it
    real_slopes, fake_slopes = slopes.square().sum(dim=1).chunk(2)
    return gamma / 2 * (real_slopes.mean() + fake_slopes.mean())


def penalty_for_step(step, gamma, every):
    """Lazy regularisation (Karras et al. 2020, StyleGAN2): the penalty on one
    step in `every`, `every` times as strong, steers D nearly as much for a fraction of the work."""
    return gamma * every if gamma > 0 and step % every == 0 else 0.0


# %%
# ---------------------------------------------------------------------------
# 文章之外：生成指定的数字 · Beyond the article: choosing the digit
# (a conditional GAN, Mirza and Osindero 2014: both networks are told the digit;
# CONDITIONAL = False leaves the article's GAN exactly as it was)
# ---------------------------------------------------------------------------
DIGITS = 10


def append_digit(inputs, labels, num_classes):
    """A conditional network's input: each noise vector or image with its digit
    appended as num_classes numbers, all 0 but one (one-hot). That one is not 1
    but the square root of the input's width (10 beside 100 noise numbers, 28
    beside 784 pixels): about the length of the input itself, so the digit
    weighs as much as the rest from the first step. A plain 1 is drowned out,
    and the networks take many epochs to learn to listen to it."""
    one_hot = nn.functional.one_hot(labels, num_classes).to(inputs.dtype)
    return torch.cat([inputs, one_hot * inputs.shape[1] ** 0.5], dim=1)


def digits_to_draw(generator, real_labels):
    """A training step's digits: one for each fake, drawn uniformly, so every
    digit is drawn equally often by construction; and the real and fake labels
    together, for D's one pass over both. None, None for the article's GAN."""
    if not generator.num_classes:
        return None, None
    fake_labels = torch.randint(generator.num_classes, real_labels.shape, device=real_labels.device)
    return fake_labels, torch.cat([real_labels, fake_labels])


def digits_in_order(count, num_classes, device):
    """count labels, 0s first, then 1s and so on, as evenly as they go (None
    for the article's GAN). 100 of them are a 10 x 10 digit table, row r digit r."""
    if not num_classes:
        return None
    return torch.arange(count, device=device) * num_classes // count


# %%
# ---------------------------------------------------------------------------
# 文章之外：让判别器挑选 · Beyond the article: the discriminator as a critic
# (after training: --generate N --best-of K; BEST_OF = 1 leaves the generator alone)
# ---------------------------------------------------------------------------
@torch.no_grad()
def draw_the_best(generator, discriminator, count, best_of, labels=None):
    """count digits: the generator draws best_of times as many, and D keeps the
    count it rates most real (a conditional GAN's within each digit asked for:
    labels, one a digit, or None). best_of = 1 is the generator alone, unchanged.

    Section 4.1: for a fixed G the best D is D*(x) = p_data(x) / (p_data(x) + p_g(x)),
    highest where the data holds more of x than G draws. So the samples D rates
    more real are, as far as D can tell, where G draws what the data holds, and
    keeping them moves the samples towards the data (discriminator rejection
    sampling, Azadi et al. 2019). Chosen too hard, it keeps only the digits D
    likes best and loses the rest (docs/results.md has the measurements).
    """
    device = next(generator.parameters()).device
    z = torch.randn(best_of * count, generator.z_dim, device=device)  # best_of = 1: the same z as ever
    candidate_labels = None if labels is None else labels.repeat(best_of)
    images = generator(z, candidate_labels)
    if best_of == 1:
        return images.cpu()
    realness = discriminator(images, candidate_labels).flatten()  # D's logit: higher means "more real"
    # The choice is made within each group: one for the article's GAN, one per digit asked for otherwise.
    groups = torch.zeros(count, dtype=torch.long, device=device) if labels is None else labels
    candidate_groups = groups.repeat(best_of)
    chosen = torch.empty(count, images.shape[1], device=device)
    for group in groups.unique():
        candidates = (candidate_groups == group).nonzero().flatten()
        best = candidates[realness[candidates].topk(int((groups == group).sum())).indices.sort().values]
        chosen[groups == group] = images[best]  # in the order drawn
    return chosen.cpu()


# %%
# ---------------------------------------------------------------------------
# 训练记录 · The run's record: what the loop in 5.6 hands on, and what it keeps
# ---------------------------------------------------------------------------
METRIC_NAMES = ["d_loss", "g_loss", "d_x", "d_g_z"]
PROGRESS_EVERY = 20  # steps between progress-line updates and checks for NaN
LOSS_PLOT_EVERY = 5  # epochs between redraws of losses.png (and always at the end, or a stop)
EVALUATION_SIZE = 1000  # held-out real digits, and as many generated ones, for the end-of-run pictures


class RunRecord:
    """Everything train() does that is not the GAN: the output folder and a
    resumed run's state, the progress line and its ETA, the log line of each
    epoch, metrics.csv, the sample grids and plots (drawn on a background
    thread), D's scores, the coach, the checkpoint, and Ctrl-C. The loop calls
    begin() once, after_step() and should_stop() every step, save_grid() every
    SAMPLE_EVERY steps, after_epoch() at each epoch's end, and finish() last.
    Used as `with RunRecord(args) as run:`, it gives back the signal handlers
    however the run ends."""

    def __init__(self, args):
        self.args = args
        self.epoch = self.step = self.batches_into_epoch = 0  # epochs and steps done; batches of this epoch
        self.stop = None

    def __enter__(self):
        self.out_dir = prepare_out_dir(self.args)
        self.resumed = load_checkpoint(self.out_dir / "checkpoint.pt") if self.args.resume else None
        if self.resumed:
            check_resumable(self.resumed, self.args)
        return self

    def __exit__(self, *error):
        if self.stop:  # on every way out, an error's too: the next Ctrl-C is the caller's again
            self.stop.restore()

    def begin(self, generator, discriminator, g_optimizer, d_optimizer, fixed_noise, images):
        """Before the first step: a resumed run's weights, optimiser states, noise
        and random states put back in place; a fresh run's folder cleared, and
        its first grid drawn, the untrained generator's noise (epoch_000.png)."""
        args, device = self.args, images.device
        self.gan = (generator, discriminator, g_optimizer, d_optimizer)
        self.fixed_noise, self.images = fixed_noise, images
        self.test_images = load_mnist(args.data_dir, False, args.article_pixels)[:EVALUATION_SIZE].to(device)  # unseen
        self.test_labels = load_labels(args.data_dir, train=False)[:EVALUATION_SIZE].to(device)
        self.evaluation_noise = make_evaluation_noise(args.z_dim, args.seed, device)
        self.steps_per_epoch = math.ceil(len(images) / args.batch_size)
        self.last_step = min(args.epochs * self.steps_per_epoch, args.max_steps or math.inf)
        self.history = torch.empty(0, len(METRIC_NAMES))  # one row per step, for the plot and the CSV
        self.d_scores = {}  # D's verdicts on real and generated digits at a few moments, for d_scores.png
        self.files = BackgroundWriter()  # draws and writes while training goes on
        self.inline = InlinePictures()  # in a notebook, the grid under the cell
        if self.resumed:
            self.epoch, self.step, self.batches_into_epoch, self.history, self.d_scores = restore_training_state(
                self.resumed, *self.gan, fixed_noise)
            print(f"Resuming from epoch {self.epoch + 1}, step {self.step}", flush=True)
        else:
            clear_earlier_run(self.out_dir)  # only now: a bad input above leaves earlier work intact
            self.save_grid(samples_from(generator, fixed_noise), "epoch_000.png", epoch=0)
        write_metrics_csv(self.out_dir / "metrics.csv", self.history, first_row=0)
        self.coach = Coach(self.test_images, args)
        self.clock = RunClock(self.step, self.last_step)
        self.start_epoch_clock()
        self.stop = StopSignals()

    def start_epoch_clock(self):
        self.epoch_metrics, self.epoch_start, self.batches_at_start = [], time.perf_counter(), self.batches_into_epoch

    def after_step(self, metrics):
        self.epoch_metrics.append(metrics)
        self.step += 1
        self.batches_into_epoch += 1
        if self.step % PROGRESS_EVERY == 0:
            check_finite(self.epoch_metrics, self.step, self.args.lr)
            show_progress(self.epoch, self.batches_into_epoch, self.steps_per_epoch, self.epoch_metrics,
                          self.clock.eta(self.step))
        if self.coach.should_check_variety(self.step):
            self.coach.watch_variety(self.epoch + 1, self.step, samples_from(self.gan[0], self.fixed_noise))

    def should_stop(self):
        """True at the last step, or once Ctrl-C or SIGTERM has come (said here, not in the signal handler)."""
        if self.stop.requested and not self.stop.announced:
            self.stop.announce()
        return self.stop.requested or self.step >= self.last_step

    def save_grid(self, samples, name=None, epoch=None):
        """A grid of the fixed-noise digits: samples/step_NNNNNNN.png, or the name given
        (an epoch's grid, also shown in a notebook)."""
        path = self.out_dir / "samples" / (name or f"step_{self.step:07d}.png")
        job = self.files.submit(save_sample_grid, samples, self.epoch + 1 if epoch is None else epoch, self.step, path)
        if name:
            self.inline.show_grid(job, path)

    def after_epoch(self, samples):
        """At an epoch's end, or where the run stopped part-way through one."""
        args, (generator, discriminator, *_) = self.args, self.gan
        epoch_history = torch.stack(self.epoch_metrics).cpu()  # waits for the device, so the time is the steps'
        images_done = min(self.batches_into_epoch * args.batch_size, len(self.images)) - min(
            self.batches_at_start * args.batch_size, len(self.images))
        images_per_second = images_done / (time.perf_counter() - self.epoch_start)
        check_finite(self.epoch_metrics, self.step, args.lr)
        self.history = torch.cat([self.history, epoch_history])
        write_metrics_csv(self.out_dir / "metrics.csv", self.history, first_row=len(self.history) - len(epoch_history))
        log_epoch(self.epoch_metrics, self.epoch + 1, args.epochs, self.step, images_per_second, self.clock)
        self.coach.watch_the_game(self.epoch + 1, self.epoch_metrics)
        self.last_samples = samples
        if self.batches_into_epoch == self.steps_per_epoch:  # the epoch ran to its end
            self.epoch, self.batches_into_epoch = self.epoch + 1, 0
            self.save_grid(samples, f"epoch_{self.epoch:03d}.png", epoch=self.epoch)
        else:  # stopped part-way: keep a picture of where it got to
            self.save_grid(samples)
        run_ends = self.epoch == args.epochs or self.step >= self.last_step
        if run_ends or (self.batches_into_epoch == 0 and self.epoch in (1, args.epochs // 2)):  # start, middle, end
            self.d_scores[moment_name(self.epoch, self.step, self.batches_into_epoch)] = score_real_and_fake(
                discriminator, generator, self.test_images, self.evaluation_noise, self.test_labels)
        # Queued after the grids: a checkpoint on disk never claims an epoch whose grid is not.
        self.files.submit(write_checkpoint, self.out_dir / "checkpoint.pt", checkpoint_bytes(
            *self.gan, self.epoch, self.step, self.batches_into_epoch, args, self.history, self.fixed_noise,
            self.d_scores), must_succeed=True)
        if self.epoch % LOSS_PLOT_EVERY == 0:
            self.files.submit(plot_losses, self.history, self.steps_per_epoch, self.out_dir / "losses.png")
        self.start_epoch_clock()

    def finish(self):
        """The end of the run, or of a stop: the last pictures, and where everything is. The exit code."""
        self.stop.restore()
        out_dir, files = self.out_dir, self.files
        files.submit(plot_losses, self.history, self.steps_per_epoch, out_dir / "losses.png")
        if self.stop.requested:
            files.close()
            print(f"Stopped at step {self.step}; everything so far is saved in {out_dir}/. "
                  f"Continue with:  {resume_command(self.args)}", flush=True)
            return 128 + self.stop.received  # the shell's code for "ended by this signal": 130 Ctrl-C, 143 SIGTERM
        # The film, the real digits beside the fakes, and what the generator learned.
        files.submit(write_training_gif, out_dir / "samples", out_dir / "training.gif")
        files.submit(save_real_vs_fake, self.test_images[:GRID_SIZE].cpu(), self.last_samples,
                     out_dir / "real_vs_fake.png")
        drawn = show_what_was_learned(*self.gan[:2], self.evaluation_noise, self.d_scores, self.images,
                                      self.test_images, out_dir, files)
        files.close()
        self.inline.show([out_dir / name for name in ["losses.png", "real_vs_fake.png", *drawn]])
        print(f"Done: {self.step} steps. Pictures, metrics.csv and checkpoint.pt are in {out_dir}/", flush=True)
        return 0


def check_finite(epoch_metrics, step, lr):
    """Stop at the first NaN or infinite loss: nothing useful can follow it."""
    recent = torch.stack(epoch_metrics[-PROGRESS_EVERY:])
    finite = torch.isfinite(recent).all(dim=1)
    if not bool(finite.all()):
        bad_step = step - len(recent) + 1 + int((~finite).nonzero()[0])
        raise RunError(f"the loss became NaN or infinite at step {bad_step}, so training stopped; the last "
                       f"checkpoint written before it is kept. Try a smaller learning rate, e.g. --lr {lr / 10:g}",
                       exit_code=1)


# %%
# ---------------------------------------------------------------------------
# 看懂训练 · What the learner sees: log lines, sample grids, the loss plot, the GIF,
# what the generator learned, and the coach's warnings
# ---------------------------------------------------------------------------
def log_epoch(epoch_metrics, epoch, epochs, step, images_per_second, clock):
    """One line per epoch (means over its steps). A fair fight looks like
    D(x) around 0.5-0.8 and D(G(z)) around 0.2-0.5. D loss near 0 with D(G(z))
    near 0 means the discriminator has won and the generator has stopped learning."""
    d_loss, g_loss, d_x, d_g_z = torch.stack(epoch_metrics).mean(dim=0).tolist()
    clear_progress()
    print(
        f"epoch {epoch:>3}/{epochs}  step {step:>6}  "
        f"D loss {d_loss:.3f}  G loss {g_loss:.3f}  D(x) {d_x:.2f}  D(G(z)) {d_g_z:.2f}  "
        f"{images_per_second:6,.0f} img/s  elapsed {format_seconds(clock.elapsed())}  "
        f"ETA {format_seconds(clock.eta(step))}",
        flush=True,
    )


def show_progress(epoch, batches_into_epoch, steps_per_epoch, epoch_metrics, eta_seconds):
    """A line that rewrites itself within the epoch; only on a terminal, so logs stay clean."""
    if not sys.stdout.isatty():
        return
    d_loss, g_loss = torch.stack(epoch_metrics[-PROGRESS_EVERY:]).mean(dim=0)[:2].tolist()
    done = batches_into_epoch / steps_per_epoch
    bar = "#" * int(20 * done) + "." * (20 - int(20 * done))
    print(f"\r  epoch {epoch + 1} [{bar}] {batches_into_epoch}/{steps_per_epoch}  "
          f"D loss {d_loss:.3f}  G loss {g_loss:.3f}  ETA {format_seconds(eta_seconds)}", end="", flush=True)


def clear_progress():
    if sys.stdout.isatty():
        print("\r\033[K", end="")


class RunClock:
    """Elapsed time, and the time left at this run's average pace."""

    def __init__(self, first_step, last_step):
        self.start = time.perf_counter()
        self.first_step = first_step
        self.last_step = last_step

    def elapsed(self):
        return time.perf_counter() - self.start

    def eta(self, step):
        if step == self.first_step:
            return 0.0
        return self.elapsed() / (step - self.first_step) * (self.last_step - step)


def format_seconds(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def to_picture(flat_images, nrow=None):
    """(N, 784) pixels in [-1, 1] -> one grid image in [0, 1] to draw, nrow
    digits a row, 2-pixel white lines between them. NumPy only, no torch: it
    runs on the drawing thread, where torch would start a second team of CPU
    threads to fight training's."""
    images = (torch.as_tensor(flat_images).detach().cpu().numpy().reshape(-1, 28, 28) + 1) / 2
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / nrow)
    cells = np.ones((rows * nrow, 30, 30), dtype=np.float32)  # each digit with a white line above and left
    cells[:len(images), 2:, 2:] = images
    grid = cells.reshape(rows, nrow, 30, 30).transpose(0, 2, 1, 3).reshape(rows * 30, nrow * 30)
    return np.pad(grid, ((0, 2), (0, 2)), constant_values=1)  # and the lines below and right of the last


def draw_digits(panels, path, nrow=None):
    """Save one picture with a grid of digits per (title, images) panel, side by side.
    Each pixel the generator drew becomes a square of 2 x 2 screen pixels (3 x 3
    in small grids, 1 x 1 in huge ones): no blur, and no axes to lay out, which
    matters for a picture drawn every epoch (benchmarks/README.md has the timings)."""
    pictures = [(title, to_picture(images, nrow)) for title, images in panels]
    scale = max(1, min(3, 700 // max(picture.shape[1] for _, picture in pictures)))
    pictures = [(title, picture.repeat(scale, axis=0).repeat(scale, axis=1)) for title, picture in pictures]
    gap, title_band = 20, 30  # pixels between panels, and above them for the titles
    content_width = sum(picture.shape[1] for _, picture in pictures) + gap * (len(pictures) - 1)
    width = max(content_width, 360)  # room for a title even over a few digits
    height = max(picture.shape[0] for _, picture in pictures) + title_band
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    left = (width - content_width) // 2
    for title, picture in pictures:
        figure.figimage(picture, xo=left, yo=height - title_band - picture.shape[0], cmap="gray", vmin=0, vmax=1)
        figure.text((left + picture.shape[1] / 2) / width, 1 - title_band / 2 / height, title,
                    ha="center", va="center", fontsize="large")
        left += picture.shape[1] + gap
    save_figure(figure, path, crop=False)  # sized to its pixels already


@torch.no_grad()
def samples_from(generator, noise, labels=None):
    """The generator's digits for this noise, on the CPU, ready to draw while
    training goes on. A conditional generator draws the digits asked for in
    `labels`, or by default 0s first, then 1s, and so on: rows of a digit table."""
    if labels is None and generator.num_classes:
        labels = digits_in_order(len(noise), generator.num_classes, noise.device)
    return generator(noise, labels).cpu()


def save_sample_grid(samples, epoch, step, path):
    draw_digits([(f"epoch {epoch}, step {step}", samples)], path)


def plot_losses(history, steps_per_epoch, path):
    """Losses, D(x) and D(G(z)) against steps. Single steps are noisy, so each
    point is the mean of a window of steps (about 400 points in all)."""
    history = history.numpy()
    window = max(1, len(history) // 400)
    usable = len(history) // window * window
    means = history[:usable].reshape(-1, window, history.shape[1]).mean(axis=1)
    steps = (np.arange(len(means)) + 1) * window
    figure = Figure(figsize=(8, 6))
    losses, scores = figure.subplots(2, 1, sharex=True)
    losses.plot(steps, means[:, 0], label="D loss")
    losses.plot(steps, means[:, 1], label="G loss")
    losses.set_ylabel("loss")
    losses.legend()
    scores.plot(steps, means[:, 2], label="D(x): real judged real")
    scores.plot(steps, means[:, 3], label="D(G(z)): fake judged real")
    scores.axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    scores.set_ylim(0, 1)
    scores.set_ylabel("mean D output")
    scores.set_xlabel(f"step ({steps_per_epoch} steps per epoch; each point averages {window})")
    scores.legend()
    save_figure(figure, path, crop=False)  # its margins hold the labels; cropping would draw it twice


def save_real_vs_fake(real_images, samples, path):
    draw_digits([("real (MNIST test set)", real_images), ("generated", samples)], path)


def write_training_gif(samples_dir, path, seconds_per_frame=0.15):
    """The epoch grids as an animation, from the untrained generator's on (its step
    grids after that one if no epoch finished)."""
    frame_files = sorted(samples_dir.glob("epoch_*.png"))
    if len(frame_files) <= 1:
        frame_files += sorted(samples_dir.glob("step_*.png"))
    if not frame_files:
        return
    frames = [Image.open(file).convert("P", palette=Image.Palette.ADAPTIVE) for file in frame_files]
    write_atomically(path, lambda temporary: frames[0].save(
        temporary, format="GIF", save_all=True, append_images=frames[1:],
        duration=int(seconds_per_frame * 1000), loop=0))


def write_metrics_csv(path, history, first_row):
    """The numbers behind losses.png, one row per step. Rows from first_row on
    are appended; first_row=0 rewrites the file (a fresh or a resumed run)."""
    if not path.is_file():  # its folder was deleted mid-run: write it whole again
        first_row = 0
    mode = "w" if first_row == 0 else "a"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, mode, newline="") as file:
            writer = csv.writer(file)
            if first_row == 0:
                writer.writerow(["step"] + METRIC_NAMES)
            for row_number, row in enumerate(history[first_row:].tolist(), start=first_row + 1):
                writer.writerow([row_number] + [f"{value:.5f}" for value in row])
    except OSError as error:  # a resumed run rewrites the file whole from its checkpoint
        raise write_error(path, error) from None


def save_figure(figure, path, crop=True):
    """Write the figure as a PNG, cropped to what was drawn on it unless crop=False."""
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100,
                                                            bbox_inches="tight" if crop else None))


# ---- After training: what did the generator learn? ----
def make_evaluation_noise(z_dim, seed, device, count=1024):
    """Noise for the end-of-run pictures, from its own random stream: drawing it
    leaves training's random numbers, and so the run, exactly as they were.
    (D's picks choose from all 1,024; the other pictures use the first ones.)"""
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)


def moment_name(epoch, step, batches_into_epoch):
    return f"epoch {epoch}" if batches_into_epoch == 0 else f"step {step}"


@torch.no_grad()
def score_real_and_fake(discriminator, generator, real_images, noise, real_labels=None):
    """D's probability "real" for held-out real digits (row 0) and as many generated ones (row 1)."""
    fake_labels = digits_in_order(len(real_images), generator.num_classes, noise.device)
    fake_images = generator(noise[:len(real_images)], fake_labels)
    labels = torch.cat([real_labels, fake_labels]) if generator.num_classes else None
    return torch.sigmoid(discriminator(torch.cat([real_images, fake_images]), labels)).reshape(2, -1).cpu()


def plot_d_scores(d_scores, path):
    """Section 4.1 made visible: early on D tells real from fake (two humps
    apart); as G improves the humps meet, and at the game's end D says 0.5 to both."""
    figure = Figure(figsize=(3.6 * len(d_scores), 3.2))
    bins = np.linspace(0, 1, 41)
    for position, (moment, scores) in enumerate(d_scores.items(), start=1):
        axes = figure.add_subplot(1, len(d_scores), position)
        axes.hist(scores[0].numpy(), bins=bins, alpha=0.6, label="real (test set)")
        axes.hist(scores[1].numpy(), bins=bins, alpha=0.6, label="generated")
        axes.set_title(moment)
        axes.set_xlabel('D\'s probability "real"')
        axes.set_yticks([])
    figure.axes[0].legend(loc="upper left")
    save_figure(figure, path)


def spherical_path(start, end, points):
    """`points` noise vectors from start to end along the sphere they lie on.
    100 random normal numbers make a vector of length close to 10, always; the
    midpoint of a straight line is shorter, a kind of z G never saw in training."""
    angle = torch.arccos(torch.nn.functional.cosine_similarity(start, end, dim=-1).clamp(-1, 1))[:, None, None]
    t = torch.linspace(0, 1, points, device=start.device)[None, :, None]
    return (torch.sin((1 - t) * angle) * start[:, None] + torch.sin(t * angle) * end[:, None]) / torch.sin(angle)


def latent_walk(generator, noise, rows=8, points=10):
    """Each row walks from one noise vector to another: a digit that morphs
    smoothly into another shows that G learned a continuous space of digits.
    (A conditional generator keeps one digit a row, row r digit r: only the style walks.)"""
    path = spherical_path(noise[0:2 * rows:2], noise[1:2 * rows:2], points)
    labels = torch.arange(rows, device=noise.device).repeat_interleave(points) if generator.num_classes else None
    return samples_from(generator, path.reshape(rows * points, -1), labels)


@torch.no_grad()
def nearest_training_digits(images, training_images, k, chunk=250):
    """Pixel distance from each image to its k nearest training digits, and which ones they are."""
    # use_mm: distances from matrix products, which every device has (Apple's MPS too)
    distances, indices = zip(*(torch.cdist(part, training_images, compute_mode="use_mm_for_euclid_dist")
                               .topk(k, largest=False) for part in images.split(chunk)))
    return torch.cat(distances), torch.cat(indices)


def check_for_copying(generator, noise, training_images, test_images, shown=8, k=5):
    """Does G copy training digits (Goodfellow et al. 2014, figure 2)? A copy
    sits almost on top of a training digit; a new digit is as far from its
    nearest training digit as a real test digit is. Prints the comparison;
    returns rows of a generated digit followed by its k nearest training digits."""
    samples = samples_from(generator, noise[:len(test_images)]).to(training_images.device)
    sample_distances, neighbours = nearest_training_digits(samples, training_images, k)
    test_distances, _ = nearest_training_digits(test_images, training_images, 1)
    generated, real = sample_distances[:, 0].median().item(), test_distances[:, 0].median().item()
    print(f"Copying check: the typical generated digit lies {generated:.1f} from its nearest training digit, "
          f"a real test digit {real:.1f} ({generated / real:.2f}x; far below 1 would mean copying)", flush=True)
    picked = torch.arange(shown) * len(samples) // shown  # spread out: a conditional run's come in digit order
    return torch.cat([samples[picked, None], training_images[neighbours[picked]]], dim=1).flatten(0, 1).cpu()


@torch.no_grad()
def what_d_picks(generator, discriminator, noise, shown=32):
    """Of len(noise) samples, the `shown` that D rates most real and the `shown` it rates least
    real: what D learned to look for, as pictures (d_picks.png)."""
    labels = digits_in_order(len(noise), generator.num_classes, noise.device)
    images = generator(noise, labels)
    order = discriminator(images, labels).flatten().argsort(descending=True)
    return images[order[:shown]].cpu(), images[order[-shown:]].cpu()


def show_what_was_learned(generator, discriminator, noise, d_scores, training_images, test_images, out_dir, files):
    """The after-training pictures: latent_walk.png, d_picks.png, d_scores.png, nearest_training.png
    (the last two when there are scores and training digits to draw them from). Returns their names."""
    files.submit(draw_digits, [("walks between noise vectors", latent_walk(generator, noise))],
                 out_dir / "latent_walk.png", 10)  # 10 digits a row
    most_real, least_real = what_d_picks(generator, discriminator, noise)
    files.submit(draw_digits, [(f"D's {len(most_real)} most real of {len(noise)}", most_real),
                               (f"D's {len(least_real)} least real", least_real)], out_dir / "d_picks.png", 8)
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


# ---- The coach: warnings in the log when training goes wrong ----
class Coach:
    """Watches for the two ways GAN training most often fails, and says what to
    try: once when the trouble starts, and once when it clears.

    D has won: D(G(z)) under D_HAS_WON on every step of an epoch. D's sigmoid
    is then flat where the fakes lie, so almost no gradient reaches G and it
    stops improving. (A fair game keeps D(G(z)) well above 0.1.)

    Collapse: the 64 fixed-noise digits vary less than COLLAPSED times as much
    as real digits (mean pixel distance between pairs; 64 real digits score 1,
    64 copies of one picture 0). Judged every CHECK_EVERY steps, and only from
    step WARM_UP_STEPS on: every young generator draws near-copies for a while,
    whatever the batch size, before its digits spread out (the measurements
    are in benchmarks/README.md). A generator that draws one digit in many
    styles can stay above the limit: quality.py's digit shares are the test for that.
    """

    D_HAS_WON = 0.05
    COLLAPSED = 0.5
    WARM_UP_STEPS = 500
    CHECK_EVERY = 100

    def __init__(self, real_images, args):
        self.real_variety = torch.pdist(real_images.cpu()).mean().item()
        self.args = args
        self.troubles = set()

    def should_check_variety(self, step):
        return step >= self.WARM_UP_STEPS and step % self.CHECK_EVERY == 0

    def watch_variety(self, epoch, step, samples):
        variety = torch.pdist(samples).mean().item() / self.real_variety
        self.report("collapse", variety < self.COLLAPSED,
                    f"the samples have collapsed: at step {step} (epoch {epoch}) the {len(samples)} grid digits vary "
                    f"{variety:.2f}x as much as real digits (under {self.COLLAPSED}), nearly one picture for "
                    f"every z. Try {self.gentler_d()}, or another --seed",
                    f"the samples vary again ({variety:.2f}x real digits) at step {step} (epoch {epoch})")

    def watch_the_game(self, epoch, epoch_metrics):
        highest = torch.stack(epoch_metrics)[:, 3].max().item()
        self.report("D won", highest < self.D_HAS_WON,
                    f"the discriminator has won: D(G(z)) stayed below {self.D_HAS_WON} all through epoch {epoch}, "
                    f"so the generator gets almost no gradient. Try {self.gentler_d()}",
                    f"the generator is back in the game: D(G(z)) reached {highest:.2f} in epoch {epoch}")

    def report(self, trouble, now, warning, cleared):
        if now == (trouble in self.troubles):
            return  # no change: said already, or nothing to say
        clear_progress()
        print(f"warning: {warning}" if now else cleared, flush=True)
        self.troubles ^= {trouble}

    def gentler_d(self):
        if self.args.gp_gamma == 0:
            return f"the gradient penalty (--gp-gamma {GP_GAMMA:g})"
        return f"a stronger gradient penalty (--gp-gamma {self.args.gp_gamma * 4:g}) or a smaller --lr"


# ---- In a notebook: the pictures under the cell ----
class InlinePictures:
    """Inside a Jupyter kernel (Jupyter, Colab, VS Code's interactive window):
    the fixed-noise grid shown under the cell and redrawn in place after each
    epoch, and the after-training pictures shown at the end. In a terminal it
    does nothing; IPython is never needed."""

    def __init__(self):
        self.display = notebook_display()
        self.grid = None  # the display handle the grid is redrawn in

    def show_grid(self, job, path):
        if self.display and job.result() is True:  # waits for the grid to be on disk (a notebook only)
            image = self.display.Image(filename=str(path))
            if self.grid is None:
                self.grid = self.display.display(image, display_id=True)
            else:
                self.grid.update(image)

    def show(self, paths):
        for path in paths if self.display else []:
            if path.is_file():
                self.display.display(self.display.Image(filename=str(path)))


def notebook_display():
    """IPython.display inside a Jupyter kernel; None anywhere else (a terminal, a plain IPython shell)."""
    ipython = sys.modules.get("IPython")  # imported by every kernel before it runs a cell
    shell = ipython.get_ipython() if ipython else None
    if shell is None or "IPKernelApp" not in shell.config:
        return None
    from IPython import display
    return display


def in_a_notebook():
    return notebook_display() is not None


def started_by_a_kernel():
    """True when sys.argv is a notebook kernel's own (ipykernel_launcher.py -f kernel.json, or
    `python -m ipykernel`), not a script's: `%run gan_mnist.py --epochs 5` sets it to the script's."""
    launcher = Path(sys.argv[0]).name
    return launcher.endswith("kernel_launcher.py") or (in_a_notebook() and not (
        launcher.endswith(".py") and launcher != "__main__.py"))


# ---- Drawing off the training path ----
class BackgroundWriter:
    """Draws pictures and writes files on one background thread, in the order
    they were asked for, so the training loop never waits for matplotlib or
    the disk. If drawing falls behind (a fast GPU, a tiny data set), training
    waits for it rather than queueing pictures without end.

    A picture that cannot be written (a viewer holding the PNG open, a full
    disk that frees up) is a warning, printed in the training thread, and
    training goes on. A write that must succeed (the checkpoint) is raised in
    the training thread as its one-line error, at the next submit() or at close()."""

    MOST_QUEUED = 4
    open_writers = []  # so that main() can let their queued work finish before it reports an error

    def __init__(self):
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gan_mnist_files",
                                         initializer=yield_the_cpu_to_training)
        self.pending = []
        self.picture_trouble = None  # the cause last warned about, until a picture is written again
        BackgroundWriter.open_writers.append(self)

    def submit(self, function, *args, must_succeed=False):
        if len(self.pending) >= self.MOST_QUEUED:
            self.pending[0].exception()  # waits for the oldest to finish
        self.raise_errors(wait=False)
        job = self.worker.submit(function if must_succeed else functools.partial(report_a_failed_write, function),
                                 *args)
        self.pending.append(job)
        return job  # its result(), once done: True for a picture written

    def close(self):
        """Return once everything asked for is on disk."""
        self.raise_errors(wait=True)
        self.worker.shutdown()
        BackgroundWriter.open_writers.remove(self)

    @classmethod
    def finish_all(cls):
        """Let every queued write finish (any error of theirs aside: another is being reported)."""
        while cls.open_writers:
            cls.open_writers.pop().worker.shutdown(wait=True)

    def raise_errors(self, wait):
        finished = list(self.pending)
        if not wait:  # only those done in the order asked for: each result is handled in turn
            finished = finished[:next((i for i, job in enumerate(finished) if not job.done()), len(finished))]
        self.pending = self.pending[len(finished):]
        for job in finished:
            failed = job.result()  # raises the error of a write that must succeed
            if isinstance(failed, WriteError):
                if failed.cause != self.picture_trouble:  # once, not on every grid, while the trouble lasts
                    clear_progress()
                    print(f"warning: cannot write {failed.path} ({failed.cause}); the run goes on without it, and "
                          f"the next pictures are tried again", flush=True)
                self.picture_trouble = failed.cause
            elif failed is True:  # a picture written: warn afresh if trouble comes back
                self.picture_trouble = None


def report_a_failed_write(draw, *args):
    """Run a picture's drawing on the writer's thread: True once it is written,
    or the WriteError that stopped it, for the training thread to warn about."""
    try:
        draw(*args)
    except WriteError as error:
        return error
    return True


def yield_the_cpu_to_training():
    """Give the calling (drawing) thread the lowest CPU priority, so that it
    draws in the moments training leaves a core idle: at the normal priority
    it takes CPU time from training's threads on a small machine (the timings
    are in benchmarks/README.md). If drawing falls behind, MOST_QUEUED makes
    training wait, and the drawing catches up.
    Linux only: there a thread's own id names that thread alone; elsewhere the
    call would slow the whole process."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass  # not allowed here: it draws at the normal priority, only slower


# %%
# ---------------------------------------------------------------------------
# 命令行与 main() · The command line and main()
# ---------------------------------------------------------------------------
def parse_args(argv=None):
    parser = OneLineErrorParser(
        description="Train a GAN on MNIST (the article's section 5), or draw digits with a trained one.",
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the training set (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="images per step (%(default)s)")
    parser.add_argument("--lr", type=float, default=LR, help="Adam learning rate (%(default)s)")
    parser.add_argument("--betas", type=float, nargs=2, default=BETAS, metavar=("BETA1", "BETA2"),
                        help="Adam's moment decay rates, each in [0, 1) (%s %s)" % BETAS)
    parser.add_argument("--z-dim", type=int, default=Z_DIM, help="length of the noise vector (%(default)s)")
    parser.add_argument("--hidden-dim", type=int, default=HIDDEN_DIM, help="hidden layer width (%(default)s)")
    parser.add_argument("--gp-gamma", type=float, default=GP_GAMMA,
                        help="gradient penalty on D's slopes; 0 = the article's loss (%(default)s)")
    parser.add_argument("--gp-every", type=int, default=GP_EVERY,
                        help="apply the gradient penalty every N steps (%(default)s)")
    parser.add_argument("--article-pixels", action=argparse.BooleanOptionalAction, default=ARTICLE_PIXELS,
                        help="real pixels in [0, 1] as the article has them, against G's [-1, 1] (%(default)s)")
    parser.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=CONDITIONAL,
                        help="tell both networks the digit, so that --generate --digit can ask for one (%(default)s)")
    parser.add_argument("--sample-every", type=int, default=SAMPLE_EVERY,
                        help="steps between sample grids (%(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (%(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=DEVICE,
                        help="where to train; auto = cuda, else mps, else cpu (%(default)s)")
    parser.add_argument("--data-dir", default=DATA_DIR, help="folder holding MNIST/raw/ (%(default)s)")
    parser.add_argument("--out-dir", default=OUT_DIR, help="folder for pictures, metrics, checkpoint (%(default)s)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    parser.add_argument("--resume", action="store_true", help="continue the run in OUT_DIR from its checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start afresh over an earlier run in OUT_DIR")
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="on a GPU, run train_step's Python every step instead of replaying it (slower)")
    parser.add_argument("--generate", type=int, metavar="N",
                        help="no training: draw N digits with the saved generator into OUT_DIR/generated.png")
    parser.add_argument("--digit", type=int, help="with --generate and a conditional checkpoint: draw this digit, 0-9")
    parser.add_argument("--best-of", type=int, default=BEST_OF, metavar="K",
                        help="with --generate: draw K times as many, keep those D rates most real (%(default)s)")
    parser.add_argument("--checkpoint", help="the checkpoint --generate reads (OUT_DIR/checkpoint.pt)")
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
    except RunError as error:
        BackgroundWriter.finish_all()  # so that the checkpoint an error mentions is on disk
        clear_progress()
        if error.exit_code == 0:  # not a failure: there was simply nothing left to do
            print(error)
        else:
            print(f"error: {error}", file=sys.stderr)
        exit_code = error.exit_code
    except Exception as error:
        if not is_out_of_memory(error):
            raise  # a bug: its traceback is what a reader needs
        BackgroundWriter.finish_all()
        clear_progress()
        print(f"error: {out_of_memory_error(error, args)}", file=sys.stderr)
        exit_code = 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training began
        clear_progress()
        print("\ninterrupted; the last checkpoint written is kept", file=sys.stderr)
        exit_code = 130
    finally:
        release_out_dir_locks()  # so that a second main() in this process may use the folder
    if in_a_notebook():
        return exit_code  # a SystemExit would only print a traceback under the cell
    sys.exit(exit_code)


# %%
# ---------------------------------------------------------------------------
# GPU 提速 · Speed on a GPU: the whole step as one CUDA graph
# ---------------------------------------------------------------------------
def make_step_function(generator, discriminator, g_optimizer, d_optimizer, batch_size, use_cuda_graph):
    """train_step(..., real_images) as a function of real_images alone."""
    models_and_optimizers = (generator, discriminator, g_optimizer, d_optimizer)
    if use_cuda_graph:
        return CudaGraphStep(models_and_optimizers, batch_size)
    return functools.partial(train_step, *models_and_optimizers)


class CudaGraphStep:
    """train_step, recorded once as a CUDA graph and replayed for every full batch.

    At MNIST's sizes each of the step's ~60 GPU kernels runs for a few
    microseconds, less time than Python takes to launch it: run as written,
    the GPU would mostly wait for Python. A CUDA graph records the launches
    once; each replay sends them all to the GPU in one call. The arithmetic
    is train_step's. The catch: once recorded, train_step's Python no longer
    runs, so a print() added to it shows only in the first few steps. To
    experiment with train_step on a GPU, pass --no-cuda-graph.
    文章之外：在 GPU 上把一整步录成一个 CUDA 图，之后每步一次调用重放，算法与 train_step 相同。
    """

    def __init__(self, models_and_optimizers, batch_size, ordinary_steps=3):
        self.models_and_optimizers = models_and_optimizers
        self.batch_size = batch_size
        # A few ordinary steps first, so CUDA's libraries and Adam's state exist before recording.
        self.ordinary_steps_left = ordinary_steps
        self.warmed_up = set()  # penalty strengths that have run once as written
        self.graphs = {}  # penalty strength -> (its recorded graph, the metrics tensor it writes)
        self.batch = self.labels = None

    def __call__(self, real_images, penalty_gamma=0.0, real_labels=None):
        if len(real_images) != self.batch_size:  # an epoch's smaller last batch: the graph's shapes are fixed
            return train_step(*self.models_and_optimizers, real_images, penalty_gamma, real_labels)
        if self.ordinary_steps_left > 0 or penalty_gamma not in self.warmed_up:
            self.ordinary_steps_left -= 1
            self.warmed_up.add(penalty_gamma)
            return self._step_on_side_stream(real_images, penalty_gamma, real_labels)
        if penalty_gamma not in self.graphs:  # steps with and without the penalty run different kernels
            self._record(real_images, penalty_gamma, real_labels)
        graph, metrics = self.graphs[penalty_gamma]
        self.batch.copy_(real_images)  # every graph reads its batch from this one place
        if real_labels is not None:
            self.labels.copy_(real_labels)
        graph.replay()
        return metrics.clone()  # the next replay overwrites these metrics

    def _step_on_side_stream(self, real_images, penalty_gamma, real_labels):
        # PyTorch's rule for steps before recording a graph: run them on a side stream.
        side_stream = torch.cuda.Stream()
        side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side_stream):
            metrics = train_step(*self.models_and_optimizers, real_images, penalty_gamma, real_labels)
        torch.cuda.current_stream().wait_stream(side_stream)
        return metrics

    def _record(self, real_images, penalty_gamma, real_labels):
        for optimizer in self.models_and_optimizers[2:]:
            for group in optimizer.param_groups:
                # Fused Adam already keeps its step count on the GPU; this flag lets it be recorded.
                group["capturable"] = True
        if self.batch is None:
            self.batch = real_images.clone()
            self.labels = None if real_labels is None else real_labels.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the kernels; nothing runs yet
            metrics = train_step(*self.models_and_optimizers, self.batch, penalty_gamma, self.labels)
        self.graphs[penalty_gamma] = (graph, metrics)


# %%
# ---------------------------------------------------------------------------
# 可靠运行 · The dependable parts: checkpoints, resume, Ctrl-C and SIGTERM, generate,
# one-line errors for bad input and for faults during a run.
# Not part of the GAN; kept here, out of the lesson's way.
# ---------------------------------------------------------------------------
CHECKPOINT_FORMAT = "gan_mnist checkpoint v1"
# Settings a resumed run must share with its checkpoint to continue the same run.
SETTINGS_FIXED_FOR_RESUME = ["z_dim", "hidden_dim", "batch_size", "lr", "betas", "gp_gamma", "gp_every",
                             "article_pixels", "num_classes", "seed"]
# What a checkpoint from before a setting existed was trained with.
SETTINGS_BEFORE_THEY_EXISTED = {"gp_gamma": 0.0, "gp_every": 1, "article_pixels": False, "num_classes": 0}
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


class RunError(Exception):
    """A problem the user can fix: main() prints it as one line, no traceback."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        raise RunError(f"{message} (see: python {self.prog} --help)")


MOST_CANDIDATES = 32768  # digits --generate --best-of draws at once to choose from (about 100 MB of pixels)


def check_settings(args):
    """Catch bad values whether they came from a flag or an edited constant."""
    whole_numbers = [("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--z-dim", args.z_dim),
                     ("--hidden-dim", args.hidden_dim), ("--sample-every", args.sample_every),
                     ("--gp-every", args.gp_every), ("--best-of", args.best_of)]
    optional = [("--max-steps", args.max_steps), ("--generate", args.generate)]
    for flag, value in whole_numbers + [(flag, value) for flag, value in optional if value is not None]:
        if type(value) is not int or value < 1:
            raise RunError(f"{flag} must be a whole number of at least 1, not {value!r}")
    if not (isinstance(args.lr, (int, float)) and math.isfinite(args.lr) and args.lr > 0):
        raise RunError(f"--lr must be a positive number such as {LR:g}, not {args.lr!r}")
    if not (isinstance(args.gp_gamma, (int, float)) and math.isfinite(args.gp_gamma) and args.gp_gamma >= 0):
        raise RunError(f"--gp-gamma must be a number of at least 0 (0 turns the penalty off), not {args.gp_gamma!r}")
    if len(args.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in args.betas):
        raise RunError(f"--betas takes two numbers in [0, 1), such as 0.5 0.999, not {list(args.betas)!r}")
    args.betas = tuple(float(b) for b in args.betas)
    args.gp_gamma = float(args.gp_gamma)
    if args.generate and args.generate > 1024:
        raise RunError(f"--generate draws at most 1024 digits at a time, not {args.generate}")
    if args.generate and args.generate * args.best_of > MOST_CANDIDATES:
        raise RunError(f"--generate {args.generate} --best-of {args.best_of} would draw {args.generate * args.best_of} "
                       f"digits to choose from, more than {MOST_CANDIDATES} at a time: ask for fewer, or a smaller "
                       f"--best-of (2 to 4 do best)")
    if args.digit is not None and not (type(args.digit) is int and 0 <= args.digit < DIGITS):
        raise RunError(f"--digit must be a digit from 0 to 9, not {args.digit!r}")
    if args.best_of != BEST_OF and not args.generate:
        raise RunError("--best-of chooses among what --generate N draws: add --generate N")
    if args.digit is not None and not args.generate:
        raise RunError("--digit chooses what --generate N draws: add --generate N (and train with --conditional)")
    args.num_classes = DIGITS if args.conditional else 0
    if args.resume and args.overwrite:
        raise RunError("--resume continues the run in OUT_DIR and --overwrite replaces it: choose one")


def check_device_available(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: PyTorch sees no CUDA GPU here. Use --device cpu (or auto), "
                       "or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RunError("--device mps: Apple's MPS is not available here. Use --device cpu (or auto)")


def prepare_out_dir(args):
    """Make OUT_DIR and prove it writable before any training time is spent;
    refuse to start over an earlier run unless asked to."""
    out_dir = Path(args.out_dir)
    try:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write_test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"cannot write to the output folder {out_dir}/ ({error.strerror}). "
                       f"Choose another with --out-dir") from None
    lock_out_dir(out_dir)
    checkpoint = out_dir / "checkpoint.pt"
    if checkpoint.exists() and not (args.resume or args.overwrite):
        raise RunError(f"{out_dir}/ already holds a run (checkpoint.pt). Continue it with --resume, "
                       f"start a new one with --out-dir NEW_FOLDER, or replace it with --overwrite")
    return out_dir


HELD_LOCKS = []  # open handles of the folders this run has locked


def lock_out_dir(out_dir):
    """One run per folder: a second run started in it would overwrite the first's
    files. The lock is the operating system's, on the folder itself: no lock
    file to clean up, and it ends with its process, however that ends (main()
    also lets it go when it returns)."""
    if fcntl is None:  # Windows has no flock; there a second run is not caught
        return
    handle = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise RunError(f"another run is training in {out_dir}/ right now. Let it finish (or stop it with Ctrl-C), "
                       f"or start a second run elsewhere with --out-dir") from None
    HELD_LOCKS.append(handle)  # held until main() returns, or this process ends


def release_out_dir_locks():
    while HELD_LOCKS:
        os.close(HELD_LOCKS.pop())


def clear_earlier_run(out_dir):
    """A fresh run starts from a clean folder, so no old grid ends up in the new GIF."""
    for old in [*out_dir.glob("samples/*.png"), out_dir / "checkpoint.pt", out_dir / "training.gif",
                out_dir / "real_vs_fake.png", out_dir / "losses.png", out_dir / "metrics.csv",
                out_dir / "latent_walk.png", out_dir / "d_picks.png", out_dir / "d_scores.png",
                out_dir / "nearest_training.png"]:
        old.unlink(missing_ok=True)


def checkpoint_bytes(generator, discriminator, g_optimizer, d_optimizer, epoch, step,
                     batches_into_epoch, args, history, fixed_noise, d_scores):
    """Everything a resumed run needs, serialised now, in memory, while training waits."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "generator": generator.state_dict(),
        "discriminator": discriminator.state_dict(),
        "g_optimizer": g_optimizer.state_dict(),
        "d_optimizer": d_optimizer.state_dict(),
        "epoch": epoch,  # epochs completed
        "step": step,  # optimiser steps completed
        "batches_into_epoch": batches_into_epoch,  # > 0 when stopped part-way through an epoch
        "config": {name: getattr(args, name) for name in
                   ["epochs", "batch_size", "lr", "betas", "gp_gamma", "gp_every", "article_pixels", "num_classes",
                    "z_dim", "hidden_dim", "sample_every", "seed"]},
        "history": history,
        "fixed_noise": fixed_noise.cpu(),
        "d_scores": d_scores,
        "rng": random_states(),
    }
    # In memory first: torch.save reports a failed disk write as an unreadable
    # RuntimeError, Python's own write (write_checkpoint) as an OSError that says why.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getbuffer()


def write_checkpoint(path, data):
    def write_to_the_disk(temporary):
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # on the disk itself, not only in its cache, before the rename makes it the one

    write_atomically(path, write_to_the_disk)


def write_atomically(path, write):
    """write(temporary_path), then rename it to path: a crash or a full disk
    mid-write never leaves half a file where a whole one was. A failed write
    removes its temporary file and becomes one line that says why."""
    temporary = path.with_name(path.name + ".tmp")

    def write_then_rename():
        path.parent.mkdir(parents=True, exist_ok=True)  # made again if it was deleted mid-run
        write(temporary)
        os.replace(temporary, path)

    try:
        try:
            write_then_rename()
        except FileNotFoundError:  # the folder was being deleted as we wrote: once more, into a new one
            write_then_rename()
    except OSError as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is gone or locked: there is nothing left to tidy
        raise write_error(path, error) from None


WRITE_FAILURES = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                  errno.EFBIG: "the file is over this system's size limit", errno.EACCES: "permission denied",
                  errno.EPERM: "permission denied", errno.EROFS: "the disk is read-only",
                  errno.ENOENT: "the folder was removed"}


class WriteError(RunError):
    """A file that could not be written: the end of the run for the checkpoint, a warning for a picture."""

    def __init__(self, path, cause):
        super().__init__(f"cannot write {path} ({cause}). The last whole checkpoint is kept: make room or fix the "
                         f"folder, then continue with --resume (or choose another --out-dir)")
        self.path, self.cause = path, cause


def write_error(path, error):
    return WriteError(path, WRITE_FAILURES.get(error.errno, error.strerror or first_line(error)))


def load_checkpoint(path):
    """The checkpoint, every tensor in it on the CPU. The networks' weights go to
    the training device when they are loaded into the networks; the rest (D's
    scores, the loss history, random states) is drawn or kept, which happens on
    the CPU, so it must never come back as a GPU tensor."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}. Train first (python gan_mnist.py), "
                       f"or point at one with --out-dir or --checkpoint")
    try:
        # weights_only=True: a checkpoint holds tensors and plain values, never code to run.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RunError(f"cannot read the checkpoint {path} ({first_line(error)}). It is damaged or not a "
                       f"PyTorch file: train again, or use --overwrite to start afresh") from None
    saved_format = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if isinstance(saved_format, str) and saved_format.startswith("gan_mnist checkpoint") \
            and saved_format != CHECKPOINT_FORMAT:
        raise RunError(f"{path} was written by another version of gan_mnist.py ({saved_format}; this one reads "
                       f"{CHECKPOINT_FORMAT}). Use the version that wrote it, or start afresh with --overwrite")
    if saved_format != CHECKPOINT_FORMAT:
        raise RunError(f"{path} is not a gan_mnist checkpoint. Point at one written by this script "
                       f"(OUT_DIR/checkpoint.pt)")
    return checkpoint


def check_resumable(checkpoint, args):
    saved = {**SETTINGS_BEFORE_THEY_EXISTED, **checkpoint["config"]}
    for name in SETTINGS_FIXED_FOR_RESUME:
        if saved[name] != getattr(args, name):
            trained, asked = as_flag(name, saved[name]), as_flag(name, getattr(args, name))
            raise RunError(f"cannot resume: the checkpoint was trained with {trained}, this run asks for {asked}. "
                           f"Pass {trained}, or start a new run with --out-dir or --overwrite")
    if checkpoint["epoch"] >= args.epochs:
        raise RunError(f"the run in {args.out_dir}/ is finished ({checkpoint['epoch']} of {args.epochs} epochs). "
                       f"Train it further with --resume --epochs N (N > {checkpoint['epoch']})", exit_code=0)
    if args.max_steps and checkpoint["step"] >= args.max_steps:
        raise RunError(f"the run in {args.out_dir}/ has already done {checkpoint['step']} steps, "
                       f"which is --max-steps {args.max_steps}. Raise --max-steps or drop it", exit_code=0)


# Where a run can run out of memory, by the function that was running.
MEMORY_HUNGRY_WORK = {"load_mnist": "loading MNIST", "load_labels": "loading MNIST",
                      "Generator": "building the networks",
                      "Discriminator": "building the networks", "train_step": "a training step",
                      "CudaGraphStep": "a training step", "checkpoint_bytes": "saving the checkpoint",
                      "draw_digits": "drawing the pictures", "plot_losses": "drawing the pictures",
                      "plot_d_scores": "drawing the pictures", "write_training_gif": "drawing the pictures",
                      "check_for_copying": "comparing samples with the training digits",
                      "generate": "drawing digits",
                      "train": "setting up training"}


def is_out_of_memory(error):
    message = str(error).lower()  # the CPU allocator says "can't allocate memory", CUDA "out of memory"
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in message or "out of memory" in message))


def out_of_memory_error(error, args):
    """One line for an out-of-memory error: what was running, how much it asked for, and what to try."""
    work = "the run"
    for frame, _ in traceback.walk_tb(error.__traceback__):  # outermost first: the innermost match wins
        if frame.f_globals.get("__name__") == __name__:
            name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name).split(".")[0]
            work = MEMORY_HUNGRY_WORK.get(name, work)
    asked = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGT]iB)", str(error))
    if asked:
        amount = f"{int(asked[1]) / 2**30:.1f} GiB" if asked[1] else asked[2]
        work += f" (it asked for {amount} more)"
    on_gpu = isinstance(error, torch.OutOfMemoryError) and "CUDA" in str(error)
    kept = (f"; the last whole checkpoint in {args.out_dir}/ is kept"
            if (Path(args.out_dir) / "checkpoint.pt").is_file() else "")
    return RunError(f"memory ran out during {work}. Try a smaller --hidden-dim (now {args.hidden_dim}) or "
                    f"--batch-size (now {args.batch_size}), " + ("--device cpu, " if on_gpu else "")
                    + f"or close other programs{kept}")


def first_line(error):
    """An exception's message cut to one line, for a one-line error."""
    message = str(error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def as_flag(name, value):
    """A setting as the flag that asks for it: --hidden-dim 256, --betas 0.0 0.999, --no-article-pixels."""
    if name == "num_classes":  # set by --conditional
        name, value = "conditional", value > 0
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, (tuple, list)) else value}"


def restore_training_state(checkpoint, generator, discriminator, g_optimizer, d_optimizer, fixed_noise):
    """Weights, optimiser states and the fixed noise put back in place (on their own
    device), the random states restored; returns the counters, history and D's scores."""
    generator.load_state_dict(checkpoint["generator"])
    discriminator.load_state_dict(checkpoint["discriminator"])
    g_optimizer.load_state_dict(checkpoint["g_optimizer"])
    d_optimizer.load_state_dict(checkpoint["d_optimizer"])
    fixed_noise.copy_(checkpoint["fixed_noise"])
    restore_random_states(checkpoint["rng"])
    return (checkpoint["epoch"], checkpoint["step"], checkpoint["batches_into_epoch"], checkpoint["history"],
            checkpoint.get("d_scores", {}))


def make_cpu_arithmetic_repeatable():
    """Same seed, same numbers on this CPU.

    The seed fixes every random number, but not the order in which Intel MKL
    (PyTorch's matrix products on x86 CPUs) adds up each product's terms, and
    float sums depend on that order: without this, two runs can drift apart
    in the last digits on some machines. MKL_CBWR ("conditional numerical
    reproducibility") fixes the order; STRICT keeps it the same on any number
    of threads (on Intel CPUs with AVX2 or AVX-512). MKL reads it at its first
    matrix product, so call this before any; it costs no measurable speed.
    A user's own MKL_CBWR is kept.
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def random_states():
    """Everything random a step draws from, so a resumed run draws the same noise."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def restore_random_states(states):
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])
    if "mps" in states and torch.backends.mps.is_available():
        torch.mps.set_rng_state(states["mps"].cpu())


class StopSignals:
    """Ctrl-C (SIGINT), or SIGTERM (what `kill`, job schedulers and a shutting-down
    machine send), asks the loop to stop after the current step, save everything
    and exit. A second signal stops at once; the last checkpoint is still whole."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.received = None  # the signal's number, once one arrives
        self.announced = False
        self.previous_handlers = {number: signal.signal(number, self._handle) for number in self.NAMES}

    @property
    def requested(self):
        return self.received is not None

    def _handle(self, signum, frame):
        # Only note it: a print here could land in the middle of another print and raise.
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def announce(self):
        self.announced = True
        clear_progress()
        print(f"\n{self.NAMES[self.received]}: saving after this step (send it again to quit without saving)...",
              flush=True)

    def restore(self):
        for number, handler in self.previous_handlers.items():
            signal.signal(number, handler)


def resume_command(args):
    """What continues this run: the arguments main() was given, plus --resume
    (in a notebook, as the main() call to run in a cell)."""
    words = [word for word in args.command_line if word != "--overwrite"]
    words += [] if "--resume" in words else ["--resume"]
    if in_a_notebook():
        return f"main({words!r})"
    script = sys.argv[0] if Path(sys.argv[0]).name == "gan_mnist.py" else "gan_mnist.py"
    return shlex.join(["python", script, *words])


@torch.no_grad()
def generate(args):
    """--generate N: draw N new digits with a trained generator, and the
    after-training pictures. MNIST is needed only for nearest_training.png."""
    device = pick_device(args.device)
    out_dir = Path(args.out_dir)
    checkpoint = load_checkpoint(args.checkpoint or out_dir / "checkpoint.pt")
    config = {**SETTINGS_BEFORE_THEY_EXISTED, **checkpoint["config"]}
    if args.digit is not None and not config["num_classes"]:
        raise RunError(f"--digit {args.digit}: this checkpoint's GAN was trained without --conditional, so it "
                       f"cannot be asked for a digit. Train one with --conditional (and its own --out-dir)")
    generator = Generator(config["z_dim"], config["hidden_dim"], num_classes=config["num_classes"]).to(device)
    generator.load_state_dict(checkpoint["generator"])
    discriminator = Discriminator(IMAGE_DIM, config["hidden_dim"], num_classes=config["num_classes"]).to(device)
    discriminator.load_state_dict(checkpoint["discriminator"])
    count, columns, labels = args.generate, None, None
    if args.digit is not None:
        labels = torch.full((count,), args.digit, device=device)
    elif config["num_classes"]:  # a table of all ten digits, row r digit r
        columns = math.ceil(count / config["num_classes"])
        count = columns * config["num_classes"]
        labels = digits_in_order(count, config["num_classes"], device)
    torch.manual_seed(args.seed)  # a different --seed draws different digits
    what = f"{count} digits" if args.digit is None else f"{count} of digit {args.digit}"
    chosen = f", D's best of {args.best_of}" if args.best_of > 1 else ""
    title = f"{what}{chosen}, epoch {checkpoint['epoch']}, step {checkpoint['step']}"
    files = BackgroundWriter()
    files.submit(draw_digits, [(title, draw_the_best(generator, discriminator, count, args.best_of, labels))],
                 out_dir / "generated.png", columns, must_succeed=True)  # what was asked for: it must be written
    training_images = test_images = None
    if check_mnist_files(args.data_dir):
        article_pixels = config.get("article_pixels", False)
        training_images = load_mnist(args.data_dir, True, article_pixels).to(device)
        test_images = load_mnist(args.data_dir, False, article_pixels)[:EVALUATION_SIZE].to(device)
    else:
        print(f"No MNIST in {args.data_dir}/MNIST/raw/, so no nearest_training.png (it compares samples with "
              f"the training digits): point --data-dir at MNIST to draw it")
    # The checkpoint's own evaluation noise: the same walks as at the end of its run.
    noise = make_evaluation_noise(config["z_dim"], config["seed"], device)
    drawn = show_what_was_learned(generator, discriminator, noise, checkpoint.get("d_scores"), training_images,
                                  test_images, out_dir, files)
    files.close()
    InlinePictures().show([out_dir / name for name in ["generated.png", *drawn]])
    print(f"Wrote {what}{chosen} to {out_dir / 'generated.png'}, and {', '.join(drawn)} beside it")
    return 0


def check_mnist_files(data_dir):
    """True if all four MNIST files are in place and whole; False if none or
    some are missing (so torchvision may download them). Damaged files are an error."""
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    if not all((raw_dir / name).is_file() for name in MNIST_FILES):
        return False
    for name in MNIST_FILES:
        path = raw_dir / name
        with open(path, "rb") as file:
            header = file.read(16)
        magic, count = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
        is_images = "images" in name
        expected_magic, expected_size = (2051, 16 + count * IMAGE_DIM) if is_images else (2049, 8 + count)
        rows_cols = (int.from_bytes(header[8:12], "big"), int.from_bytes(header[12:16], "big"))
        if (len(header) < (16 if is_images else 8) or magic != expected_magic or count == 0
                or (is_images and rows_cols != (28, 28)) or path.stat().st_size != expected_size):
            raise RunError(f"the MNIST file {path} is truncated or not an MNIST IDX file. "
                           f"Delete it and place a fresh copy there (or let the script download it)")
    return True


def mnist_error(data_dir, error):
    raw_dir = Path(data_dir) / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw_dir / name).is_file()]
    if missing:
        return RunError(f"MNIST is not in {raw_dir}/ and could not be downloaded (no network?). "
                        f"Place these files there, unzipped: {', '.join(MNIST_FILES)}; "
                        f"or point --data-dir at a folder that holds MNIST/raw/")
    return RunError(f"could not read MNIST from {raw_dir}/ ({first_line(error)}). "
                    f"Delete the files there and place fresh copies")


# %%  训练 · Train: run this cell (in a notebook, edit the constants above and run all cells)
if __name__ == "__main__":
    main()
