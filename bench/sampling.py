"""How many DDIM steps a trained diffusion model needs, chosen on the stage-3 metrics; and the images/s each choice costs.

    python bench/sampling.py RUN/02_generation [--n 300] [--reference 50] [--grid 8,12,20,30] [--threads N]

The model is the diffusion generator a stage-2 run saved (`models/diffusion`), with the guidance it was set to. Each
step count of the grid draws the same `n` labels (classes in turn) from the same noises, and is compared with up to
2,000 real images of stage 1's pool (outside the scarce set) in stage 3's fixed random-feature space
(`random_features`, standardised by those real images):

- **KID** (×10³): mean ± SD over 50 random subsets of 100 images;
- **FD**, for reference (unstable at this n; KID decides).

The reference is DDIM with `--reference` steps. The choice is the cheapest grid entry whose KID is no worse than the
reference's mean + 2 SD: as good as the expensive sampler at the precision this n allows.
"""
import argparse, os, time
from pathlib import Path

os.environ.setdefault('TQDM_DISABLE', '1')
import numpy as np
import torch

from synthnb.generators.ddpm import ddim_sample
from synthnb.stages.features import random_features, standardise
from synthnb.generators.registry import load_generator
from synthnb.core.images import to_uint8
from synthnb.stages.metrics import frechet_distance, kernel_distance


def draw(gen, labels, steps, seed=0):
    "uint8 images and images/s of DDIM with `steps` from the noises of `seed`."
    t0 = time.perf_counter()
    x = ddim_sample(gen.unet, labels, torch.Generator().manual_seed(seed), steps, gen.settings.guidance_scale)
    return to_uint8(x), len(labels) / (time.perf_counter() - t0)


def main(run='', n=300, reference=50, grid='8,12,20,30', threads=0):
    if threads: torch.set_num_threads(threads)
    run = Path(run)
    gen = load_generator(run/'models'/'diffusion')
    pool = np.load(run.parent/'01_domain'/'pool.npz')['images']  # the real images outside the scarce set
    real = pool[np.random.default_rng(0).permutation(len(pool))[:2000]]
    labels = np.arange(n) % gen.n_classes
    side = gen.unet.config.sample_size * int(gen.unet.config.in_channels ** 0.5)
    print(f"sampling steps on the stage-3 metrics: {run} ({side} px, guidance {gen.settings.guidance_scale}), "
          f"{n} images against {len(real)} real images of the pool; torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    r = random_features(real)
    f_real = standardise(r, r)
    def score(images):
        f = standardise(random_features(images), r)
        return kernel_distance(f, f_real, subset_size=100), frechet_distance(f, f_real)
    rows = []
    for k in [reference, *map(int, grid.split(','))]:
        images, ips = draw(gen, labels, k)
        kid, fd = score(images)
        rows.append(dict(steps=k, img_s=ips, kid=kid['mean'], kid_sd=kid['std'], fd=fd))
    ref, band = rows[0], rows[0]['kid'] + 2 * rows[0]['kid_sd']
    print(f"{'DDIM steps':>10s} {'img/s':>7s} {'KID ×10³ (mean ± SD)':>22s} {'FD':>8s}  verdict")
    for i, row in enumerate(rows):
        row['as_good'] = row['kid'] <= band
        verdict = 'reference' if i == 0 else ('as good as the reference' if row['as_good'] else 'worse')
        print(f"{row['steps']:10d} {row['img_s']:7.1f} {row['kid'] * 1e3:12.2f} ± {row['kid_sd'] * 1e3:6.2f}"
              f" {row['fd']:8.2f}  {verdict}")
    best = max((r for r in rows[1:] if r['as_good']), key=lambda r: r['img_s'], default=ref)
    print(f"\nchoice: DDIM with {best['steps']} steps: {best['img_s']:.1f} img/s, "
          f"×{best['img_s'] / ref['img_s']:.2f} the reference (DDIM {reference})")
    return rows


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('run', help='a stage-2 run folder (RUN/02_generation) holding models/diffusion')
    for k, v in dict(n=300, reference=50, grid='8,12,20,30', threads=0).items():
        ap.add_argument(f'--{k}', type=type(v), default=v)
    main(**vars(ap.parse_args()))
