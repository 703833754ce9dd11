"""Data-parallel training on two devices (issue 15): two logical CPU devices stand in for two GPUs.

TensorFlow fixes its devices when it starts, so the run happens in a fresh Python process. The same
network trained for the same steps on one and on two devices (the global batch split in two) must
learn the same: both far below the input's error, and within a few per cent of each other.
"""
import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, os
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from scipy.ndimage import gaussian_filter
    import carecore as cc
    from carecore import CareError
    from carecore.training.devices import available_devices

    rng = np.random.default_rng(0)
    clean = gaussian_filter(rng.random((160, 32, 32)), (0, 2, 2))[..., None].astype(np.float32)
    clean = (clean - clean.min()) / np.ptp(clean)
    noisy = (clean + rng.normal(0, 0.3, clean.shape)).astype(np.float32)
    data = (noisy[:128], clean[:128], noisy[128:], clean[128:])
    out = {"available": available_devices(), "identity": float(np.mean(np.abs(noisy[128:] - clean[128:])))}
    for devices in (None, 2):
        model = cc.create_model(cc.care_config("YX", quick=True, patch_size=(32, 32), batch_size=8, seed=1))
        replicas = []
        r = model.train(data, epochs=3, steps_per_epoch=25, devices=devices, callback=lambda e: replicas.append(
            model.keras_model.distribute_strategy.num_replicas_in_sync) if e["kind"] == "batch" else None)
        val_mae = float(np.mean(np.abs(np.asarray(model.keras_model.predict_on_batch(data[2])) - data[3])))
        out[str(devices)] = {"val_mae": val_mae, "history_val_loss": r.best_val_loss, "status": r.status,
                             "devices": model.run_card.get("devices"), "replicas": sorted(set(replicas)),
                             "after": model.keras_model.distribute_strategy.num_replicas_in_sync}
        pred = model.predict(noisy[128:130, :, :, 0].transpose(1, 0, 2).reshape(32, 64), axes="YX")
        out[str(devices)]["finite"] = bool(np.isfinite(pred).all())
    try:
        cc.create_model(cc.care_config("YX", quick=True, patch_size=(32, 32))).train(data, epochs=1,
                                                                                     steps_per_epoch=1, devices=3)
    except CareError as e:
        out["too_many"] = str(e)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_two_devices_learn_what_one_learns(tmp_path):
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert p.returncode == 0 and line, p.stderr[-3000:]
    out = json.loads(line[len("RESULT"):])
    assert len(out["available"]) == 2, out
    one, two = out["None"], out["2"]
    assert one["replicas"] == [1] and one["devices"] is None, out
    assert two["replicas"] == [2] and len(two["devices"]) == 2, out   # every step ran on both devices
    assert two["after"] == 1, out   # and the trained network predicts on one again
    assert one["status"] == two["status"] == "completed" and one["finite"] and two["finite"], out
    # both learned (far below the input's own error) and agree
    assert one["val_mae"] < 0.8 * out["identity"] and two["val_mae"] < 0.8 * out["identity"], out
    assert abs(one["val_mae"] - two["val_mae"]) < 0.05 * one["val_mae"], out
    # the history reports the real validation loss (MAE over the validation patches), on two devices too
    for run in (one, two):
        assert abs(run["history_val_loss"] - run["val_mae"]) < 0.02 * run["val_mae"], out
    assert "3 asked for" in out["too_many"] and "2" in out["too_many"], out
