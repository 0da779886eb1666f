"""Throughput of the stage-2 diffusion model: training images/s of `synthnb.diffusion.train_ddpm` (accelerate + EMA + grad clipping)
next to a plain diffusers loop (same UNet config and batch, no accelerate, no EMA) measured in the same run, and guided DDIM
sampling images/s; on CPU and (when torch sees one) on GPU; with the fraction of the device's measured fp32 (or, where
bf16 is native, bf16) matmul peak each training loop reaches, and the peak memory.

    python bench/generation.py [--size 28] [--channels 32,64,64] [--batch 32] [--steps 8] [--ddim 20] [--n 64] [--threads N]
"""
import argparse, resource, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from synthnb.diffusion import SCHEDULER, ddim_sample, fold, train_ddpm, unet_config
from synthnb.env import bf16_supported
from synthnb.images import to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak, train_flops


def data(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, size, size)).astype(np.uint8), np.arange(n) % 2


def plain_loop(config: dict, images, labels, steps: int, batch: int, device: str) -> float:
    "Seconds for `steps` of a bare diffusers training loop."
    unet = UNet2DModel.from_config(config).to(device).train(); opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    sched, p, g = DDPMScheduler(**SCHEDULER), int(config['in_channels'] ** 0.5), torch.Generator().manual_seed(0)
    x_all, y_all = to_tensor(images, device), torch.as_tensor(labels, device=device)
    def step():
        idx = torch.randint(0, len(x_all), (batch,), generator=g).to(device)
        x0 = fold(x_all[idx], p); noise = torch.randn_like(x0); t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(device, torch.bfloat16, enabled=device == 'cuda'):  # the plain loop: bf16 on a GPU only
            loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t, class_labels=y_all[idx]).sample.float(), noise)
        opt.zero_grad(); loss.backward(); opt.step()
    step(); sync(device); t0 = time.perf_counter()
    for _ in range(steps): step()
    sync(device); return time.perf_counter() - t0


def sync(device):
    if device == 'cuda': torch.cuda.synchronize()


def main(size=28, channels='32,64,64', batch=32, steps=8, ddim=20, n=64, threads=0):
    if threads: torch.set_num_threads(threads)
    chans = [int(c) for c in channels.split(',')]
    images, labels = data(max(64, batch), size)
    config = unet_config(size, 2, chans)
    print(f"diffusion throughput: {size}x{size}, UNet {chans} (patch {int(config['in_channels'] ** 0.5)}), batch {batch}, {steps} timed steps; "
          f"DDIM {ddim} steps, guidance 2.0, {n} images; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for device in ['cpu'] + (['cuda'] if torch.cuda.is_available() else []):
        peak = matmul_peak(torch.bfloat16 if bf16_supported(device) else torch.float32, device=device)
        s = config['sample_size']  # forward and backward of the UNet the stage trains, per image
        flops = train_flops(UNet2DModel.from_config(config).to(device), lambda m, b: m(
            torch.zeros(b, config['in_channels'], s, s, device=device), torch.zeros(b, dtype=torch.long, device=device),
            class_labels=torch.zeros(b, dtype=torch.long, device=device)).sample.pow(2).mean())
        if device == 'cuda': torch.cuda.reset_peak_memory_stats()
        def timed(k):  # seconds of a whole train_ddpm call of k steps (set-up included)
            sync(device); t0 = time.perf_counter()
            out = train_ddpm(UNet2DModel.from_config(config), images, labels, steps=k, batch_size=batch, device=device)
            sync(device); return time.perf_counter() - t0, out
        timed(1)  # warm-up
        setup, _ = timed(1)
        total, (unet, _) = timed(steps + 1)
        ours = total - setup  # `steps` training steps, without accelerate/EMA/data-loader set-up (the plain loop's timing has none either)
        plain = plain_loop(config, images, labels, steps, batch, device)
        t0 = time.perf_counter(); ddim_sample(unet, np.arange(n) % 2, torch.Generator().manual_seed(0), ddim, 2.0); sync(device)
        sample = time.perf_counter() - t0
        print(f"{device:>4}: train (accelerate+EMA) {steps * batch / ours:8.1f} img/s | plain diffusers loop {steps * batch / plain:8.1f} img/s"
              f" | ratio {plain / ours:.2f} | set-up + 1 step {setup:.2f} s | DDIM sampling {n / sample:7.1f} img/s")
        mem = (f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated" if device == 'cuda'
               else f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB process RSS")
        print(f"      {flops / 1e6:.1f} MFLOP per training image; matmul peak {peak:.0f} GFLOP/s "
              f"({'bf16' if bf16_supported(device) else 'fp32'}); ours {steps * batch / ours * flops / 1e9 / peak * 100:.1f} %, "
              f"plain {steps * batch / plain * flops / 1e9 / peak * 100:.1f} % of it; peak memory {mem}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    for k, v in dict(size=28, channels='32,64,64', batch=32, steps=8, ddim=20, n=64, threads=0).items(): ap.add_argument(f'--{k}', type=type(v), default=v)
    main(**vars(ap.parse_args()))
