"""Multi-process start-up through JAX's own distributed runtime."""
import logging
import os

import jax


def running_in_cluster() -> bool:
    """True under launchers that JAX's `initialize()` detects by itself: TPU pod slices and SLURM jobs."""
    tpu_hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    return "," in tpu_hosts or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ or slurm_tasks > 1


def initialize(dist_cfg) -> None:
    """Starts `jax.distributed` when the run spans several processes; a no-op for one process.

    Explicit `coordinator_address`, `num_processes` and `process_id` (e.g. local multi-process tests) win;
    otherwise TPU VMs and SLURM are detected automatically. Must run before JAX initialises its backends.
    """
    if not (dist_cfg.coordinator_address or running_in_cluster()):
        return
    use_gloo_on_cpu()
    if dist_cfg.coordinator_address:
        if dist_cfg.num_processes < 1 or dist_cfg.process_id < 0:
            raise ValueError("distributed.coordinator_address is set: also set --config.distributed.num_processes "
                             "and --config.distributed.process_id (0 … num_processes-1)")
        jax.distributed.initialize(dist_cfg.coordinator_address, dist_cfg.num_processes, dist_cfg.process_id)
    else:
        jax.distributed.initialize()
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def use_gloo_on_cpu() -> None:
    """Cross-process collectives of CPU devices go over TCP with gloo; without an implementation a
    multi-process CPU run cannot all-reduce. (JAX 0.10's default, pinned here so that it does not depend on
    the JAX version; JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi in the environment still chooses MPI.) It only
    affects CPU devices: TPU and GPU collectives have their own transport."""
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
