"""Train the foreign 64-px MNIST DCGAN of ``benchmarks/foreign_dcgan.py`` without refine.

    python benchmarks/foreign_dcgan_train.py --mnist ../shared/data/mnist --out DIR [--epochs 2]

Plain PyTorch, the recipe of the PyTorch examples' DCGAN (Adam 2e-4, betas (0.5, 0.999), batch
128, binary cross-entropy, the non-saturating generator loss) with one-sided label smoothing (real
images labelled 0.9, Salimans et al. 2016: at width 32 without it the discriminator won within 50
steps and the generator never recovered), on the 60,000 MNIST training images resized to 64 px
(bilinear) and scaled to [-1, 1]. Its discriminator is therefore not a calibrated classifier: at
best it outputs 0.9 p_data / (p_data + p_G), as foreign discriminators often are. Writes ``DIR/G.pt`` and ``DIR/D.pt``
(state dicts) and ``DIR/train.json`` (losses per epoch, time). Nothing from refine is imported.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from foreign_dcgan_nets import NZ, discriminator, generator  # noqa: E402

REAL_LABEL = 0.9  #: one-sided label smoothing


def load_mnist(folder: Path) -> torch.Tensor:
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "rb") as fh:
        raw = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    x = torch.from_numpy(raw.copy()).float() / 127.5 - 1.0
    return torch.cat([F.interpolate(c, size=64, mode="bilinear", antialias=True) for c in x.split(5000)])


def init_weights(m: torch.nn.Module) -> None:  # the DCGAN paper's initialisation
    if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, torch.nn.BatchNorm2d):
        torch.nn.init.normal_(m.weight, 1.0, 0.02)
        torch.nn.init.zeros_(m.bias)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    data = load_mnist(args.mnist)
    g, d = generator(), discriminator()
    g.apply(init_weights)
    d.apply(init_weights)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    history, t0, batch = [], time.perf_counter(), 128
    for epoch in range(args.epochs):
        perm = torch.randperm(len(data))
        sums = np.zeros(4)
        for i in range(0, len(data) - batch + 1, batch):
            real = data[perm[i : i + batch]]
            fake = g(torch.randn(batch, NZ, 1, 1))
            p_real, p_fake = d(real), d(fake.detach())
            loss_d = F.binary_cross_entropy(p_real, torch.full((batch,), REAL_LABEL)) + F.binary_cross_entropy(
                p_fake, torch.zeros(batch)
            )
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy(d(fake), torch.ones(batch))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            sums += [loss_d.item(), loss_g.item(), p_real.mean().item(), p_fake.mean().item()]
            if (i // batch) % 50 == 0:
                print(
                    f"epoch {epoch + 1} batch {i // batch}: loss_d {loss_d.item():.3f} loss_g {loss_g.item():.3f}",
                    flush=True,
                )
        k = len(data) // batch
        history.append(
            dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), (sums / k).round(4).tolist()), epoch=epoch + 1)
        )
        print(history[-1], flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        torch.save(g.state_dict(), args.out / f"G_epoch{epoch + 1}.pt")
        torch.save(d.state_dict(), args.out / f"D_epoch{epoch + 1}.pt")
    torch.save(g.state_dict(), args.out / "G.pt")
    torch.save(d.state_dict(), args.out / "D.pt")
    info = {
        "epochs": args.epochs,
        "seed": args.seed,
        "batch": batch,
        "real_label": REAL_LABEL,
        "train_s": time.perf_counter() - t0,
        "history": history,
    }
    (args.out / "train.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
