"""segjax entry point.

  python main.py --config=configs/pspnet_synthetic.py --workdir=work_dirs/pspnet_synthetic
  python main.py --config=configs/pspnet_cityscapes.py:r101-d8_769x769_80k --workdir=... \
      --config.data.samples_per_gpu=2
  python main.py --config=... --workdir=... --mode=eval
  python main.py --config=... --workdir=... --no-validate   # train without evaluating

Running the same command again resumes from the workdir's latest checkpoint. A bad --config
value ends with one line naming it (no traceback).
"""
import sys

from segjax import xla_flags

xla_flags.apply_defaults()  # before JAX initialises its backend

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from segjax import config as config_lib, sharding  # noqa: E402
from segjax.train import loop  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<algo>_<dataset>.py[:variant]", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, TensorBoard events.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes automatically) or eval.")
flags.DEFINE_bool("no-validate", False, "Train without evaluating (mmseg's tools/train.py "
                  "--no-validate): the same as --config.evaluation.interval=0.")
flags.mark_flags_as_required(["config", "workdir"])


def _config_spec(argv) -> str | None:
  return next((a.partition("=")[2] for a in argv if a.startswith("--config=")), None)


def _unknown_override(argv) -> str | None:
  """The first ``--config.a.b=value`` whose key the config (``--config=FILE``) does not have."""
  spec = _config_spec(argv)
  if spec is None:
    return None
  config = config_lib.load_config(spec)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    node = config
    for part in arg[len("--config."):].partition("=")[0].split("."):
      if not hasattr(node, "keys") or part not in node:
        return arg
      node = node[part]
  return None


def parse_flags(argv):
  """absl's parser, but a bad --config flag ends with one line naming it, not ml_collections'
  traceback with the key at its end; so does a --config file that is no config (a .pth, a
  directory), which ml_collections would try to import."""
  spec = _config_spec(argv)
  if spec:
    from segjax.convert.mmseg_config import read_config_text
    try:
      read_config_text(spec.partition(":")[0])
    except (OSError, ValueError) as e:
      sys.exit(f"main.py: {e}")
  try:
    return FLAGS(argv)
  except Exception as e:  # noqa: BLE001 -- any parse failure is the user's flag, not a bug
    unknown = None
    if isinstance(e, (AttributeError, KeyError)):
      try:
        unknown = _unknown_override(argv)
      except Exception:  # noqa: BLE001 -- the config file itself is broken: show the original error
        pass
    if unknown:
      sys.exit(f"main.py: {unknown}: the config has no key {unknown.partition('=')[0][len('--config.'):]!r} "
               "(python tools/print_config.py CONFIG lists its keys)")
    sys.exit(f"main.py: {type(e).__name__}: {e}")


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS["no-validate"].value:
    config.evaluation.interval = 0
  try:
    config_lib.validate(config)
  except ValueError as e:
    sys.exit(f"main.py: {e}")
  sharding.initialize_distributed(config)
  logging.info("config:\n%s", config_lib.to_python(config))
  if FLAGS.mode == "train":
    loop.train_and_evaluate(config, FLAGS.workdir)
  else:
    loop.evaluate_checkpoint(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
