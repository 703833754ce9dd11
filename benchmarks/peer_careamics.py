"""CAREamics' CARE as a peer of bench_quality.py, run in its own environment (benchmarks/.venv-careamics,
made by setup_careamics.sh) as a subprocess: PyTorch on the CPU, no carecore or TensorFlow here.

    .venv-careamics/bin/python peer_careamics.py IN.npz OUT_DIR --budget 180 --eval-every 18 [--eval-after 30]

``IN.npz`` (written by bench_quality.py): ``X, Y`` training and ``Xv, Yv`` validation patches, channels
last (carecore's ``PatchSet.train`` / ``.val``), ``Xs`` the validation patches the SSIM curve is measured
on, ``test`` the test input (already on the output grid and normalized like the patches), ``axes`` its
spatial axes ("YX" or "ZYX").

CAREamics' own defaults (``create_advanced_care_config``: UNet depth 2, 32 first filters, MAE, Adam
1e-4 with ReduceLROnPlateau, flips and 90° rotations, mean/std normalization computed on the training
patches, best checkpoint by validation loss), batch size 16 as CSBDeep, no data-loader workers (the
arrays are in memory). Training runs until ``--budget`` seconds of training have passed (a Lightning
callback stops it; the clock starts when training starts, after the data module's setup). CAREamics'
early stopping (Lightning's, after 3 validation epochs without a lower validation loss) is off, as
CSBDeep has none: every method trains for its whole budget, and its best checkpoint predicts. (With it,
on the BPAE actin at 5 photons, CAREamics stopped after 36 s of a 180 s budget, at test SSIM 0.566.) Every
``--eval-every`` seconds the callback runs the network on ``Xs`` (normalized as the training inputs)
and keeps the raw outputs; that time is taken off the clock. The parent scores them with carecore's
``patch_ssim``. Written to OUT_DIR: ``curve.json`` (elapsed training seconds, last validation loss,
index into ``val_preds.npy``), ``val_preds.npy`` and ``test_pred.npy`` (with the best checkpoint,
tiled prediction).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""   # PyTorch on the CPU (the wheel is a CUDA build: see setup_careamics.sh)

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--eval-every", type=float, required=True)
    p.add_argument("--eval-after", type=float, default=None,
                   help="from this training time on, evaluate every 3 x --eval-every")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)

    import torch
    from lightning.pytorch.callbacks import Callback
    from careamics import CAREamist, __version__
    from careamics.config import create_advanced_care_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = np.load(args.inp)
    axes = str(d["axes"])
    X, Y, Xv, Yv, Xs, test = (np.asarray(d[k], np.float32) for k in ("X", "Y", "Xv", "Yv", "Xs", "test"))
    sq = lambda a: a[..., 0]  # noqa: E731  (N, ..., 1) -> (N, ...): CAREamics axes S + spatial
    patch = list(X.shape[1:-1])

    class Clock(Callback):
        """Stops training after ``budget`` seconds of training and records the validation outputs."""

        def __init__(self):
            self.t0 = None
            self.paused = 0.0
            self.next = args.eval_every
            self.curve, self.preds = [], []
            self.val_loss = None

        def elapsed(self):
            return time.perf_counter() - self.t0 - self.paused

        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            v = trainer.callback_metrics.get("val_loss")
            if v is not None:
                self.val_loss = float(v)

        def evaluate(self, trainer, pl_module):
            t = time.perf_counter()
            norm = trainer.datamodule.train_dataset.normalization
            xs = np.stack([norm(np.moveaxis(x, -1, 0))[0] for x in Xs])          # (N, C, ...)
            was_training = pl_module.training
            pl_module.eval()
            with torch.no_grad():
                y = pl_module.model(torch.from_numpy(np.ascontiguousarray(xs, np.float32))).cpu().numpy()
            if was_training:
                pl_module.train()
            self.preds.append(np.moveaxis(y, 1, -1).astype(np.float32))
            e = self.elapsed()
            self.paused += time.perf_counter() - t
            self.curve.append((e, self.val_loss, len(self.preds) - 1))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            e = self.elapsed()
            if e >= args.budget:
                self.evaluate(trainer, pl_module)
                trainer.should_stop = True
            elif e >= self.next:
                self.evaluate(trainer, pl_module)
                step = args.eval_every * (3 if args.eval_after and e >= args.eval_after else 1)
                while self.next <= e:
                    self.next += step

    config = create_advanced_care_config(
        experiment_name="bench_care", data_type="array", axes="S" + axes, patch_size=patch,
        batch_size=args.batch_size, num_epochs=100000, num_workers=0, logger="none",
        early_stopping_params={},   # no early stopping: the budget decides (see above)
        trainer_params={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                        "enable_model_summary": False}, seed=1)
    clock = Clock()
    t = time.perf_counter()
    careamist = CAREamist(config, work_dir=out, callbacks=[clock], enable_progress_bar=False)
    careamist.train(train_data=sq(X), train_data_target=sq(Y), val_data=sq(Xv), val_data_target=sq(Yv))
    wall_train = time.perf_counter() - t
    tile = (256, 256) if axes == "YX" else (16, 64, 64)
    overlap = (48, 48) if axes == "YX" else (8, 32, 32)
    tile = tuple(min(s, n - n % 8 if n >= 16 else n) for s, n in zip(tile, test.shape))
    tile = tile[:-2] + (min(tile[-2:]),) * 2   # CAREamics tiles are square in YX (the embryo's test part is narrow)
    overlap = tuple(min(o, s // 2) for o, s in zip(overlap, tile))
    t = time.perf_counter()
    pred, _ = careamist.predict(test[None], axes="S" + axes, data_type="array", tile_size=tile, tile_overlap=overlap,
                                checkpoint="best")
    predict_s = time.perf_counter() - t
    pred = np.asarray(pred[0], np.float32).reshape(test.shape)
    np.save(out / "test_pred.npy", pred)
    np.save(out / "val_preds.npy", np.stack(clock.preds) if clock.preds else np.zeros((0,) + Xs.shape, np.float32))
    (out / "curve.json").write_text(json.dumps({
        "careamics": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "train_s": clock.elapsed() if clock.t0 else None, "paused_s": clock.paused, "wall_train_s": wall_train,
        "predict_s": predict_s, "epochs": careamist.trainer.current_epoch,
        "steps": careamist.trainer.global_step, "tile": tile, "overlap": overlap, "curve": clock.curve}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
