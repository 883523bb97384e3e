"""segjax entry point.

  python main.py --config=configs/pspnet_synthetic.py --workdir=work_dirs/pspnet_synthetic
  python main.py --config=configs/pspnet_cityscapes.py:r101-d8_769x769_80k --workdir=... \
      --config.data.samples_per_gpu=2
  python main.py --config=... --workdir=... --mode=eval

Running the same command again resumes from the workdir's latest checkpoint.
"""
from segjax import xla_flags

xla_flags.apply_defaults()  # before JAX initialises its backend

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from segjax import sharding  # noqa: E402
from segjax.train import loop  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/<algo>_<dataset>.py[:variant]", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, TensorBoard events.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resumes automatically) or eval.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = FLAGS.config
  sharding.initialize_distributed(config)
  logging.info("config:\n%s", config)
  if FLAGS.mode == "train":
    loop.train_and_evaluate(config, FLAGS.workdir)
  else:
    loop.evaluate_checkpoint(config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
