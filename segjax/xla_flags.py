"""segjax's measured XLA defaults, applied before JAX starts its backend.

On XLA's CPU backend, ``--xla_cpu_experimental_ynn_fusion_type=dot`` (Eigen convolutions instead of
YNNPACK's) was reported 25-30% faster for ResNet-D8 training and inference on the project's 2-core
machines; experiments/README.md records segjax's own runs with it. A flag the user already set in
``XLA_FLAGS`` is never overridden; the flags have no effect on GPU/TPU backends. Set
``SEGJAX_NO_XLA_DEFAULTS=1`` to run with XLA's own defaults.
"""
import os

DEFAULTS = {"--xla_cpu_experimental_ynn_fusion_type": "dot"}


def apply_defaults() -> None:
  if os.environ.get("SEGJAX_NO_XLA_DEFAULTS"):
    return
  flags = os.environ.get("XLA_FLAGS", "")
  extra = [f"{k}={v}" for k, v in DEFAULTS.items() if k not in flags]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
