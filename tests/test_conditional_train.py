"""Training and checkpoints of class-conditional GANs (``refine train --method cgan``) on small synthetic labelled images."""

from __future__ import annotations

import pytest
import torch

import refine
from refine.conditional import ConditionalDiscriminatorRatio, ConditionalGenerator
from refine.data.images import ImageData
from refine.errors import CheckpointError, ConfigError, DataError
from refine.io import safe_load
from refine.nets import build
from refine.train.cgan import (
    fit_conditional_discriminator,
    save_cgan_checkpoint,
    train_cgan,
)
from refine.train.checkpointing import training_state

K = 3


def labelled_images(n: int = 96) -> ImageData:
    """Class c is a bright horizontal band at rows 8c..8c+8 of a 28 px image, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % K
    x = (torch.rand(n, 1, 28, 28, generator=g) * 60).to(torch.uint8)
    for c in range(K):
        x[y == c, :, 8 * c : 8 * c + 8] += 180
    return ImageData(x, y, [f"c{c}" for c in range(K)], "synthetic", "train")


SMALL = {"batch_size": 32, "latent_dim": 8, "g_width": 4, "d_width": 4}


def test_conditional_networks_take_labels():
    g, d = (
        build("cdcgan-g", image_size=28, channels=1, nz=8, width=4, num_classes=K).eval(),
        build("proj-d", image_size=28, channels=1, width=4, num_classes=K),
    )
    z, y = torch.randn(5, 8, 1, 1), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        x = g(z, y)
        assert x.shape == (5, 1, 28, 28) and float(x.abs().max()) <= 1
        assert d(x, y).shape == (5,)
        assert not torch.allclose(
            d(x, torch.zeros(5, dtype=torch.long)), d(x, torch.full((5,), 2))
        )  # the projection reads the label
        # the class enters G only through conditional BatchNorm, which starts as plain BatchNorm
        assert torch.equal(g(z, torch.zeros(5, dtype=torch.long)), g(z, torch.full((5,), 2)))
        # conditional BatchNorm starts as plain BatchNorm (scales 1, shifts 0); its per-class shift changes the output of that class only
        before1, before2 = g(z, torch.full((5,), 1)), g(z, torch.full((5,), 2))
        g.norms[0].beta.weight[2] += 1.0
        assert torch.equal(g(z, torch.full((5,), 1)), before1) and not torch.allclose(
            g(z, torch.full((5,), 2)), before2
        )


def test_cgan_trains_saves_loads_and_resumes_exactly(tmp_path):
    data = labelled_images()
    full = train_cgan(data, epochs=2, rng=torch.Generator().manual_seed(3), init_seed=3, **SMALL)
    save_cgan_checkpoint(tmp_path / "full.pt", full)
    states = {}

    def keep(epoch, run, trainer):
        rng_state = rng.get_state().clone()
        states[epoch] = training_state(trainer, epoch=epoch, rng=rng, history=run.meta["history"])
        save_cgan_checkpoint(tmp_path / "half.pt", run, train_state=states[epoch])
        assert torch.equal(rng.get_state(), rng_state)

    rng = torch.Generator().manual_seed(3)
    train_cgan(data, epochs=1, rng=rng, init_seed=3, on_epoch=keep, **SMALL)
    rng = torch.Generator().manual_seed(99)  # the state restores the generator's stream
    resumed = train_cgan(data, epochs=2, rng=rng, init_seed=3, resume=states[1], **SMALL)
    a, b = full.generator.net.state_dict(), resumed.generator.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    loaded = refine.load_gan(tmp_path / "full.pt")
    assert isinstance(loaded.generator, ConditionalGenerator) and isinstance(
        loaded.ratio, ConditionalDiscriminatorRatio
    )
    assert (
        loaded.generator.num_classes == K
        and loaded.generator.label == "index"
        and loaded.generator.output_range == "[-1,1]"
    )
    assert safe_load(tmp_path / "full.pt")["conditional"] == {"num_classes": K, "label": "index"}
    target = refine.wrap(
        loaded.generator.net,
        latent_shape=(8, 1, 1),
        output_range="[-1,1]",
        num_classes=K,
        discriminator=loaded.discriminator,
        output="logit",
    )
    res = refine.sample(target, "drs", 9, rng=torch.Generator().manual_seed(0), classes="balanced")
    assert res.x.shape == (9, 1, 28, 28) and res.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]

    # the refit keeps the generator and leaves the discriminator in eval mode
    before = {k: v.clone() for k, v in loaded.generator.net.state_dict().items()}
    hist = fit_conditional_discriminator(
        loaded.generator, loaded.discriminator, data, epochs=1, batch_size=32, rng=torch.Generator().manual_seed(0)
    )
    assert len(hist) == 1 and 0 <= hist[0]["acc"] <= 1 and not loaded.discriminator.training
    assert all(torch.equal(before[k], v) for k, v in loaded.generator.net.state_dict().items())


def test_checkpoint_conditional_entry_is_checked(tmp_path):
    run = train_cgan(labelled_images(), epochs=1, rng=torch.Generator().manual_seed(0), init_seed=0, **SMALL)
    save_cgan_checkpoint(tmp_path / "c.pt", run)
    ckpt = safe_load(tmp_path / "c.pt")
    for bad in (
        {"num_classes": 0},
        {"num_classes": K + 1, "label": "index"},
        {"num_classes": K, "label": "text"},
        "3",
        {"num_classes": K, "x": 1},
    ):
        ckpt["conditional"] = bad
        torch.save(ckpt, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError):
            refine.load_gan(tmp_path / "bad.pt")


def test_cgan_refuses_unlabelled_or_2d_data(tmp_path):
    data = labelled_images()
    with pytest.raises(DataError, match="labels"):
        train_cgan(ImageData(data.images, None), epochs=1, **SMALL)
    with pytest.raises(ConfigError, match="unknown option"):
        train_cgan(data, epochs=1, method_options={"gp": 1}, **SMALL)
    with pytest.raises(ConfigError, match="loss"):
        train_cgan(data, epochs=1, method_options={"loss": "wasserstein"}, **SMALL)
    from typer.testing import CliRunner

    from refine.cli import app

    out = CliRunner().invoke(app, ["train", "--method", "cgan", "--data", "grid25", "--out", str(tmp_path / "x.pt")])
    assert out.exit_code == 2 and "labelled images" in out.output and not (tmp_path / "x.pt").exists()


def test_refine_sample_per_class_cli(tmp_path):
    import json

    import numpy as np
    from typer.testing import CliRunner

    from refine.cli import app

    run = train_cgan(labelled_images(), epochs=1, rng=torch.Generator().manual_seed(0), init_seed=0, **SMALL)
    save_cgan_checkpoint(tmp_path / "cg.pt", run)
    cli = CliRunner()
    res = cli.invoke(
        app,
        [
            "sample",
            "--ckpt",
            str(tmp_path / "cg.pt"),
            "--method",
            "drs",
            "--classes",
            "2,0",
            "-n",
            "7",
            "--out",
            str(tmp_path / "s"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    d = np.load(tmp_path / "s" / "samples.npz")
    assert d["x"].shape == (7, 1, 28, 28) and d["y"].dtype == np.int64 and d["y"].tolist() == [2, 2, 2, 2, 0, 0, 0]
    record = json.loads((tmp_path / "s" / "run.json").read_text())
    assert (
        record["classes"] == [2, 0]
        and record["info"]["counts"] == {"2": 4, "0": 3}
        and set(record["info"]["per_class"]) == {"2", "0"}
    )
    assert (tmp_path / "s" / "samples.png").is_file()
    # the same seed gives class 0 the same samples whichever other classes are asked for
    res = cli.invoke(
        app,
        [
            "sample",
            "--ckpt",
            str(tmp_path / "cg.pt"),
            "--method",
            "drs",
            "--classes",
            "0",
            "-n",
            "3",
            "--out",
            str(tmp_path / "t"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "t" / "samples.npz")["x"], d["x"][4:])
    for bad in (["--classes", "5"], ["--classes", "0,0"], ["--ratio", str(tmp_path / "cg.pt")]):
        res = cli.invoke(
            app, ["sample", "--ckpt", str(tmp_path / "cg.pt"), "-n", "4", "--out", str(tmp_path / "bad"), *bad]
        )
        assert (
            res.exit_code == 2 and res.output.startswith("error:") and not (tmp_path / "bad" / "run.json").exists()
        ), res.output
    res = cli.invoke(app, ["sample", "--classes", "3", "-n", "4", "--out", str(tmp_path / "u")])
    assert res.exit_code == 2 and "unconditional" in res.output
