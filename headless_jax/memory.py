"""Will a config fit a target before paying for it? `python -m headless_jax.memory --config=... --target=v5e-16`.

Compiles the real train step for the target's device count on fake CPU devices (nothing is allocated) and
reads XLA's compiled memory analysis per device: arguments (parameters, optimiser state, batch) + temporaries
(activations, gradients) + outputs − donated buffers. Parameters and optimiser state are also counted from
their shardings. CPU compilation approximates the accelerator's buffer assignment (fusion differs), so
keep a margin: the verdict asks for 10 % headroom.
"""
import os
import sys

GIB = 2 ** 30
# target -> (devices, HBM bytes per device). TPU names count chips as gcloud's accelerator types do.
TARGETS = {
    "v4-8": (4, 32 * GIB), "v4-32": (16, 32 * GIB), "v4-128": (64, 32 * GIB),
    "v5e-8": (8, 16 * GIB), "v5e-16": (16, 16 * GIB), "v5e-64": (64, 16 * GIB), "v5e-256": (256, 16 * GIB),
    "v5p-8": (4, 95 * GIB), "v5p-32": (16, 95 * GIB),
    "v6e-8": (8, 32 * GIB), "v6e-16": (16, 32 * GIB),
    "1xH100": (1, 80 * GIB), "8xH100": (8, 80 * GIB), "8xH200": (8, 141 * GIB), "8xA100": (8, 80 * GIB),
}
HEADROOM = 0.9


def memory_report(config, hbm_bytes: float) -> dict:
    """Per-device memory of `config`'s train step on all visible devices, against `hbm_bytes`."""
    import jax
    import numpy as np

    from headless_jax.experiment import build_experiment

    experiment = build_experiment(config)
    layout, abstract = experiment.layout, experiment.abstract_state
    with layout.active():
        token = jax.ShapeDtypeStruct((config.train.global_batch_size, config.data.seq_len), np.int32,
                                     sharding=layout.batch_sharding)
        batch = {"tokens": token, "segment_ids": token, "positions": token}
        analysis = experiment.train_step.lower(abstract, batch).compile().memory_analysis()

    def per_device_bytes(tree) -> int:
        return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in jax.tree.leaves(tree))

    total = (analysis.argument_size_in_bytes + analysis.temp_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes)
    return {
        "devices": jax.device_count(),
        "mesh": dict(layout.mesh.shape),
        "params_bytes": per_device_bytes(abstract["params"]),
        "optimizer_bytes": per_device_bytes(abstract["opt_state"]),
        "arguments_bytes": int(analysis.argument_size_in_bytes),
        "temporaries_bytes": int(analysis.temp_size_in_bytes),
        "total_bytes": int(total),
        "hbm_bytes": int(hbm_bytes),
        "fits": bool(total <= HEADROOM * hbm_bytes),
    }


def advice(report: dict) -> str:
    if report["fits"]:
        return f"fits: {report['total_bytes'] / GIB:.2f} GiB of {report['hbm_bytes'] / GIB:.0f} GiB per device"
    state = report["params_bytes"] + report["optimizer_bytes"]
    largest = "parameters + optimiser state" if state > report["temporaries_bytes"] else "activations"
    return (f"DOES NOT FIT: {report['total_bytes'] / GIB:.2f} GiB needed per device, {report['hbm_bytes'] / GIB:.0f} "
            f"GiB available (largest part: {largest}). Shard state with --config.mesh.fsdp=N (N devices), "
            "cut activations with --config.model.remat=full or --config.train.microbatches=M, or lower "
            "train.global_batch_size")


def main(argv):
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
    target = flags.DEFINE_enum("target", None, list(TARGETS), "Where the run will go.")
    flags.mark_flags_as_required(["config", "target"])

    def run(_):
        report = memory_report(config_flag.value, TARGETS[target.value][1])
        rows = [("parameters", report["params_bytes"]), ("optimiser state", report["optimizer_bytes"]),
                ("arguments (state + batch)", report["arguments_bytes"]),
                ("temporaries (activations, gradients)", report["temporaries_bytes"]),
                ("total per device", report["total_bytes"])]
        print(f"{target.value}: {report['devices']} devices, mesh {report['mesh']}")
        for name, value in rows:
            print(f"  {name:<38} {value / GIB:8.3f} GiB")
        print(advice(report))
        sys.exit(0 if report["fits"] else 1)

    app.run(run, argv)


if __name__ == "__main__":
    # The device count must be fixed before JAX starts: read --target first, then fake that many CPU devices.
    chosen = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--target=")), None)
    if chosen in TARGETS:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={TARGETS[chosen][0]}")
    main(sys.argv)
