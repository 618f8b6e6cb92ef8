"""Train the demo network shipped as etc/data/demo_x2.npz (seeded; a few minutes on 2 CPU cores).

    python examples/train_demo_model.py                      # writes etc/data/demo_x2.npz
    python examples/train_demo_model.py --steps 200 --out /tmp/w.npz

Data: scikit-image's bundled photos etc.tools.demo.TRAIN_PHOTOS; etc.tools.demo.EVAL_PHOTOS are held out and only
evaluated. LR = PIL antialiased bicubic downscale x2 of the uint8 photo. Random 48x48 LR patches (96x96 HR) with
flips and 90-degree turns, L1 loss, Adam (lr 5e-4) with a cosine decay over 4000 steps. The loss is computed with
every ECB re-parameterized on the fly (fast_forward: same function, 4 convs instead of 36); the gradients reach
the branch parameters, so what is trained and shipped is the multi-branch model. The tail ECB starts at a small
scale so the untrained net is the nearest-neighbour anchor. One torch thread by default: the same seed then gives
the same weights.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from etc.tools import demo


def patches(pairs, rng: np.random.Generator, batch: int, size: int, scale: int):
    """A batch of aligned (LR, HR) float patches, randomly flipped and turned."""
    lrs, hrs = [], []
    for _ in range(batch):
        lr, hr = pairs[int(rng.integers(len(pairs)))]
        top, left = int(rng.integers(lr.shape[0] - size + 1)), int(rng.integers(lr.shape[1] - size + 1))
        a = lr[top : top + size, left : left + size]
        b = hr[top * scale : (top + size) * scale, left * scale : (left + size) * scale]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        a, b = np.rot90(a, turns), np.rot90(b, turns)
        if flip:
            a, b = a[:, ::-1], b[:, ::-1]
        lrs.append(demo.to_nchw(np.ascontiguousarray(a)))
        hrs.append(demo.to_nchw(np.ascontiguousarray(b)))
    return torch.from_numpy(np.concatenate(lrs)), torch.from_numpy(np.concatenate(hrs))


def fast_forward(model, x: torch.Tensor) -> torch.Tensor:
    """The model's function with every ECB re-parameterized on the fly (same outputs, 4 convs instead of 36).

    Gradients reach the branch parameters through ECB.rep(), so what is trained is the multi-branch model.
    """
    y = x
    for ecb in model.body:
        kernel, bias = ecb.rep()
        y = ecb.act(F.conv2d(y, kernel, bias, padding=1))
    y = y + torch.repeat_interleave(x, model.scale**2, dim=1)
    return F.pixel_shuffle(y, model.scale).clamp(0.0, 1.0)


def evaluate(model, pairs, scale: int) -> tuple[float, float]:
    """Mean PSNR-Y of the model and of bicubic on the held-out pairs."""
    ours, base = [], []
    with torch.no_grad():
        for lr, hr in pairs:
            sr = demo.to_hwc_uint8(model(torch.from_numpy(demo.to_nchw(lr))).numpy())
            ours.append(demo.psnr_y(sr, hr, scale))
            base.append(demo.psnr_y(demo.bicubic_upscale(lr, scale), hr, scale))
    return float(np.mean(ours)), float(np.mean(base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--out", type=Path, default=demo.WEIGHTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    scale = demo.SCALE
    train = [demo.make_pair(demo.load_photo(n), scale) for n in demo.TRAIN_PHOTOS]
    held_out = [demo.make_pair(demo.load_photo(n), scale) for n in demo.EVAL_PHOTOS]

    model = demo.demo_model_class()(args.channels, args.blocks, scale)
    with torch.no_grad():
        for p in model.body[-1].parameters():
            p.mul_(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.005 + 0.995 * 0.5 * (1 + math.cos(math.pi * i / args.steps))
    )
    start = time.time()
    for step in range(1, args.steps + 1):
        lr, hr = patches(train, rng, args.batch, args.patch, scale)
        loss = F.l1_loss(fast_forward(model, lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            ours, base = evaluate(model, held_out, scale)
            model.train()
            print(
                f"step {step:5d}  loss {loss.item():.4f}  held-out PSNR-Y {ours:.2f} dB "
                f"(bicubic {base:.2f}, {ours - base:+.2f})  {time.time() - start:.0f}s",
                flush=True,
            )
    model.eval()
    ours, base = evaluate(model, held_out, scale)
    facts = {
        "steps": args.steps,
        "seed": args.seed,
        "held_out_psnr_y": round(ours, 3),
        "bicubic": round(base, 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    demo.save_weights(model, args.out, facts)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
