"""Throughput of the stage-2 learned generators: training images/s of `synthnb.generators.ddpm.train_ddpm` (accelerate + EMA +
grad clipping) next to a plain diffusers loop (same UNet config and batch, no accelerate, no EMA) measured in the same
run; guided DDIM sampling images/s with the default batch (64 images on a CPU) against 256 images per batch (the
default before), with the fraction of the matmul peak the sampler's network passes reach; the GAN's training step; on
CPU and (when torch sees one) on GPU; with the fraction of the device's measured fp32 (or, where bf16 is native, bf16) matmul peak each
training loop reaches, and the peak memory.

    python bench/generation.py [--size 28] [--channels 32,64,64] [--batch 32] [--steps 8] [--n 256] [--threads N]
"""
import argparse, os, resource, sys, time

os.environ.setdefault('TQDM_DISABLE', '1')
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch.utils.flop_counter import FlopCounterMode

from synthnb.generators.ddpm import SCHEDULER, ddim_sample, patchify, train_ddpm, unet_config
from synthnb.generators.diffusion import DiffusionSettings
from synthnb.generators.gan import GANSettings, train_gan
from synthnb.generators.stylegan import ResidualDiscriminator, StyleGenerator
from synthnb.core.runtime import bf16_supported
from synthnb.core.images import to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak, train_flops


def data(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, size, size)).astype(np.uint8), np.arange(n) % 2


def plain_loop(config: dict, images, labels, steps: int, batch: int, device: str) -> float:
    "Seconds for `steps` of a bare diffusers training loop."
    unet = UNet2DModel.from_config(config).to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched, p, g = DDPMScheduler(**SCHEDULER), int(config['in_channels'] ** 0.5), torch.Generator().manual_seed(0)
    x_all, y_all = to_tensor(images, device), torch.as_tensor(labels, device=device)
    def step():
        idx = torch.randint(0, len(x_all), (batch,), generator=g).to(device)
        x0 = patchify(x_all[idx], p)
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(device, torch.bfloat16, enabled=device == 'cuda'):  # the plain loop: bf16 on a GPU only
            loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t, class_labels=y_all[idx]).sample.float(), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps): step()
    sync(device)
    return time.perf_counter() - t0


def sync(device):
    if device == 'cuda': torch.cuda.synchronize()


SAMPLING_STEPS = (20, 12)  # DDIM steps: the issue's reference figure; the profiles' setting


def gan_rate(size, batch, steps, device):
    "img/s (real + fake images through D per step, per batch image) of `train_gan`, set-up excluded; MFLOP per step image."
    images, labels = data(max(64, batch), size)
    def timed(k):
        torch.manual_seed(0)
        G, D = StyleGenerator(size, 2, 64, 32, 128, 2), ResidualDiscriminator(size, 2)
        sync(device)
        t0 = time.perf_counter()
        train_gan(G, D, images, labels, GANSettings(train_steps=k, batch_size=batch), device=device)
        sync(device)
        return time.perf_counter() - t0

    timed(2)
    short, long = timed(2), timed(2 + steps)
    G, D = StyleGenerator(size, 2, 64, 32, 128, 2).to(device), ResidualDiscriminator(size, 2).to(device)
    z, y = torch.randn(batch, 64, device=device), torch.zeros(batch, dtype=torch.long, device=device)
    x = torch.zeros(batch, 1, size, size, device=device)
    with FlopCounterMode(display=False) as counter:  # one step: D on real and fake, then G through D
        fake = G(z, y)
        (D(x, y).mean() + D(fake.detach(), y).mean()).backward()
        D(fake, y).mean().backward()
    return steps * batch / (long - short), counter.get_total_flops() / batch


def main(size=28, channels='32,64,64', batch=32, steps=8, n=256, threads=0):
    if threads: torch.set_num_threads(threads)
    chans = [int(c) for c in channels.split(',')]
    images, labels = data(max(64, batch), size)
    config = unet_config(size, 2, chans)
    print(f"generator throughput: {size}x{size}, UNet {chans} (patch {int(config['in_channels'] ** 0.5)}), batch {batch}, "
          f"{steps} timed steps; sampling {n} images, guidance 2.0; torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {bf16_supported('cpu')}, {torch.get_num_threads()} CPU threads")
    for device in ['cpu'] + (['cuda'] if torch.cuda.is_available() else []):
        peak = matmul_peak(torch.bfloat16 if bf16_supported(device) else torch.float32, device=device)
        s = config['sample_size']  # forward and backward of the UNet the stage trains, per image
        flops = train_flops(UNet2DModel.from_config(config).to(device), lambda m, b: m(
            torch.zeros(b, config['in_channels'], s, s, device=device), torch.zeros(b, dtype=torch.long, device=device),
            class_labels=torch.zeros(b, dtype=torch.long, device=device)).sample.pow(2).mean())
        if device == 'cuda': torch.cuda.reset_peak_memory_stats()
        ds = DiffusionSettings()  # the hyperparameters stage 2 trains with
        def timed(k):  # seconds of a whole train_ddpm call of k steps (set-up included)
            sync(device)
            t0 = time.perf_counter()
            out = train_ddpm(UNet2DModel.from_config(config), images, labels, steps=k, batch_size=batch, lr=ds.lr,
                             label_dropout=ds.label_dropout, ema_decay=ds.ema_decay, device=device)
            sync(device)
            return time.perf_counter() - t0, out
        timed(1)  # warm-up
        setup, _ = timed(1)
        total, (unet, _) = timed(steps + 1)
        ours = total - setup  # `steps` training steps, without accelerate/EMA/data-loader set-up (the plain loop's timing has none either)
        plain = plain_loop(config, images, labels, steps, batch, device)
        print(f"{device:>4}: train (accelerate+EMA) {steps * batch / ours:8.1f} img/s | plain diffusers loop {steps * batch / plain:8.1f} img/s"
              f" | ratio {plain / ours:.2f} | set-up + 1 step {setup:.2f} s")
        s = config['sample_size']
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(torch.zeros(8, config['in_channels'], s, s, device=device), torch.tensor(500, device=device),
                 class_labels=torch.zeros(8, dtype=torch.long, device=device))
        forward = counter.get_total_flops() / 8
        for k in SAMPLING_STEPS:
            rates = {}
            for b in (256, None):
                best = 0.0
                for _ in range(2):
                    t0 = time.perf_counter()
                    ddim_sample(unet, np.arange(n) % 2, torch.Generator().manual_seed(0), k, 2.0, batch_size=b)
                    sync(device)
                    best = max(best, n / (time.perf_counter() - t0))
                rates[b] = best
            print(f"      DDIM {k} steps, guidance (2 passes a step): batch 256 {rates[256]:.1f} img/s | default batch "
                  f"{rates[None]:.1f} img/s (×{rates[None] / rates[256]:.2f}); {forward / 1e6:.0f} MFLOP a pass, "
                  f"{rates[None] * 2 * k * forward / 1e9 / peak * 100:.0f} % of the matmul peak")
        mem = (f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated" if device == 'cuda'
               else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB process RSS")
        print(f"      {flops / 1e6:.1f} MFLOP per training image; matmul peak {peak:.0f} GFLOP/s "
              f"({'bf16' if bf16_supported(device) else 'fp32'}); ours {steps * batch / ours * flops / 1e9 / peak * 100:.1f} %, "
              f"plain {steps * batch / plain * flops / 1e9 / peak * 100:.1f} % of it; peak memory {mem}")
        gan, gan_flops = gan_rate(size, batch, steps * 4, device)
        peak32 = matmul_peak(torch.float32, device=device)
        print(f"      GAN (StyleGAN2-ADA train_gan, width 32, ADA, lazy R1, EMA): {gan:.1f} img/s, {gan / batch:.1f} steps/s; "
              f"{gan_flops / 1e6:.1f} MFLOP per image of a step, {gan * gan_flops / 1e9 / peak32 * 100:.1f} % of the "
              f"fp32 matmul peak ({peak32:.0f} GFLOP/s; the GAN trains in fp32)")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    for k, v in dict(size=28, channels='32,64,64', batch=32, steps=8, n=256, threads=0).items():
        ap.add_argument(f'--{k}', type=type(v), default=v)
    main(**vars(ap.parse_args()))
