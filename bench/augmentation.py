"""Throughput of stage-4 augmentation: images/s for a realistic defect policy at batch 256 on 64×64 greyscale images,
on CPU and (when torch sees one) on GPU, next to an identity and a flip-only policy measured in the same run.

    python bench/augmentation.py [--n 1024] [--repeats 2] [--threads N]
"""
import argparse, os, time

import numpy as np
import torch
import yaml

from synthnb.stages.policies import augment, build_policy

REALISTIC = yaml.safe_load("""
background: {p: 0.5, feather: 1.0}
hflip: {p: 0.5}
vflip: {p: 0.5}
affine: {p: 0.5, degrees: 5, translate: 0.04}
elastic: {p: 0.2, alpha: [0.5, 1.5], sigma: 4}
brightness: {p: 0.5, range: [0.85, 1.15]}
contrast: {p: 0.5, range: [0.85, 1.15]}
randomize: {n_ops: [0, 2], ops: {gradient: {gain: [0.05, 0.15]}, vignette: {}, blur: {sigma: [0.3, 0.8]}, noise: {std: 0.015}, sharpen: {}}}
fda: {p: 0.3, beta: [0.01, 0.05]}
histmatch: {p: 0.3, strength: [0.5, 1.0]}
""")  # the defect experiment's policy plus FDA
POLICIES = {'identity (baseline)': {}, 'flip only': {'hflip': {'p': 0.5}}, 'realistic': REALISTIC}


def data(n: int, size: int = 64, seed: int = 0):
    "Smooth random uint8 surfaces with a rectangular defect mask on half of them."
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    freq, phase = rng.uniform(2, 12, (n, 1, 1)), rng.uniform(0, 6, (n, 1, 1))
    images = np.clip(110 + 50 * np.sin(freq * xx + phase) + 30 * yy + rng.normal(0, 6, (n, size, size)), 0, 255).astype(np.uint8)
    masks = np.zeros_like(images)
    masks[: n // 2, 20:30, 24:40] = 1
    return images, masks


def throughput(policy: dict, images, masks, refs, device: str, batch: int, repeats: int) -> float:
    "Images/s of `augment` (uint8 in, uint8 out, transfers included), best of `repeats` after one warm-up batch."
    pipeline = build_policy(policy, **refs).to(device)
    augment(images[:batch], masks[:batch], pipeline, batch_size=batch, device=device)
    best = float('inf')
    for r in range(repeats):
        if device == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(images), batch):  # one call per batch: the same work as the stage, without progress bars
            augment(images[i:i + batch], masks[i:i + batch], pipeline, seed=r * 1000 + i, batch_size=batch, device=device)
        if device == 'cuda': torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return len(images) / best


def main(n: int = 1024, batch: int = 256, repeats: int = 2, threads: int = 0):
    if threads: torch.set_num_threads(threads)
    images, masks = data(n)
    refs = {'targets': data(40, seed=1)[0], 'backgrounds': data(20, seed=2)[0]}
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    print(f"augmentation throughput: {n} images of 64x64, batch {batch}, best of {repeats}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" + (f", GPU {torch.cuda.get_device_name()}" if 'cuda' in devices else ', no GPU'))
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (CPU figures drop sharply when cores are shared; try --threads 1)")
    for device in devices:
        rates = {name: throughput(p, images, masks, refs, device, batch, repeats) for name, p in POLICIES.items()}
        base = rates['identity (baseline)']
        for name, rate in rates.items():
            print(f"  {device:4s} {name:20s} {rate:10.0f} images/s   {rate / base:6.3f} × identity")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1024, help='images per timed pass')
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads; 0 → torch default')
    a = ap.parse_args()
    main(a.n, a.batch, a.repeats, a.threads)
