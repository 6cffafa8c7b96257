"""The pre-flight memory check: state bytes by hand, agreement with XLA, and a clear 'does not fit'."""
import jax

from headless_jax.memory import GIB, advice, memory_report
from tests.train_helpers import tiny_config


def test_state_bytes_match_a_hand_count_and_the_total_is_the_compiled_figure():
    config = tiny_config("clm", "cwt")
    config.mesh.update(data=2, fsdp=4, tensor=1)
    report = memory_report(config, hbm_bytes=GIB)
    d, f, v, layers, seq = 32, 64, 64, 2, 16
    layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    params = v * d + seq * d + layers * layer + 2 * d  # embeddings, layers, final norm
    # FSDP over 4 devices shards every 'embed' axis; norms and biases over other axes stay replicated.
    assert report["params_bytes"] < 4 * params / 2
    assert report["params_bytes"] > 4 * params / 4
    assert 0 <= report["optimizer_bytes"] - 2 * report["params_bytes"] < 64  # Adam: two moments + step counts
    assert report["total_bytes"] >= report["params_bytes"] + report["optimizer_bytes"]
    assert report["fits"] and "fits" in advice(report)
    assert report["devices"] == jax.device_count()


def test_a_config_that_cannot_fit_is_flagged_with_the_knobs():
    config = tiny_config("clm", "cwt")
    report = memory_report(config, hbm_bytes=64 * 1024)  # a 64 KiB "device"
    assert not report["fits"]
    message = advice(report)
    assert "DOES NOT FIT" in message and "mesh.fsdp" in message and "remat" in message
