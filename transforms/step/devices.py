"""The devices of the step's MirroredStrategy: a `--devices` spec, and the CPU split in several."""

from typing import Optional


def split_cpu(n: int) -> None:
    """Split the CPU into `n` logical devices (must run before TensorFlow initialises).

    This is how the multi-replica path of MirroredStrategy is exercised on a
    machine without GPUs.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )


def resolve_devices(spec: Optional[str]) -> Optional[list]:
    """Turn a `--devices` value into a device list for MirroredStrategy.

    None or "auto": all local GPUs, else the CPU (MirroredStrategy's default).
    "cpu": the CPU only, even when GPUs exist.
    "cpu:N": the CPU split into N logical devices (testing the multi-replica path).
    "gpu:0,2": those GPUs.
    """
    import tensorflow as tf

    if spec in (None, "", "auto"):
        return None
    if spec == "cpu":
        return ["/cpu:0"]
    kind, _, rest = spec.partition(":")
    if kind == "cpu" and rest.isdigit():
        n = int(rest)
        cpu = tf.config.list_physical_devices("CPU")[0]
        # Asking for the logical devices would initialise the runtime; the
        # configuration does not.
        if len(tf.config.get_logical_device_configuration(cpu) or []) < n:
            try:
                split_cpu(n)
            except RuntimeError:
                raise ValueError(
                    f"--devices={spec}: TensorFlow had started in this process before the CPU "
                    f"could be split into {n} devices; call resolve_devices() at process "
                    f"start (the shardmeans CLI does)"
                ) from None
        return [f"/cpu:{i}" for i in range(n)]
    if kind == "gpu" and rest:
        return [f"/gpu:{int(i)}" for i in rest.split(",")]
    raise ValueError(f"--devices={spec!r} is not one of: auto, cpu, cpu:N, gpu:I[,J...]")
