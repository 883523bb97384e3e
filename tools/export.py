"""Export a model with its weights to a serialized ``jax.export`` artifact (StableHLO).

  python tools/export.py configs/pspnet_synthetic.py work_dirs/pspnet_synthetic --shape 128 128 \
      --out pspnet_synthetic.jaxexport

The artifact maps a normalised NHWC float32 batch of the given shape to test-mode logits at the
input size (whole or slide per the config), weights embedded. Reload without segjax:

  exported = jax.export.deserialize(open(path, 'rb').read()); logits = exported.call(images)

``--saved-model DIR`` also writes a TensorFlow SavedModel through ``jax2tf`` (needs TensorFlow,
which segjax does not require: ``pip install tensorflow``); its ``serve`` signature takes
``images`` of the given shape and returns ``logits``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segjax import xla_flags  # noqa: E402

xla_flags.apply_defaults()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax import export  # noqa: E402

from segjax import apis  # noqa: E402
from segjax.config import apply_overrides, load_config  # noqa: E402
from segjax.models.segmentors.inference import inference_logits  # noqa: E402


def export_segmentor(segmentor: apis.Segmentor, shape) -> bytes:
  variables = jax.tree.map(np.asarray, segmentor.variables)
  fn = jax.jit(lambda x: inference_logits(segmentor.model, variables, x, segmentor.test_cfg))
  return export.export(fn)(jax.ShapeDtypeStruct(tuple(shape), np.float32)).serialize()


def save_tf_saved_model(segmentor: apis.Segmentor, shape, out_dir: str) -> None:
  """The test-mode logits function as a TF SavedModel (jax2tf, native serialization)."""
  try:
    import tensorflow as tf
    from jax.experimental import jax2tf
  except ImportError as e:
    sys.exit(f"--saved-model needs TensorFlow ({e}); pip install tensorflow, or use the "
             "jax.export artifact written by --out")
  variables = jax.tree.map(np.asarray, segmentor.variables)
  fn = lambda x: inference_logits(segmentor.model, variables, x, segmentor.test_cfg)
  module = tf.Module()
  module.serve = tf.function(jax2tf.convert(fn, with_gradient=False), autograph=False,
                             input_signature=[tf.TensorSpec(tuple(shape), tf.float32, name="images")])
  tf.saved_model.save(module, out_dir, signatures={"serve": module.serve})


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("config", help="configs/X.py[:variant]")
  parser.add_argument("checkpoint")
  parser.add_argument("--shape", type=int, nargs="+", required=True, help="H W, or N H W")
  parser.add_argument("--out", required=True)
  parser.add_argument("--saved-model", help="also write a TF SavedModel here (needs TensorFlow)")
  parser.add_argument("--cfg-options", nargs="*", default=[])
  args = parser.parse_args(argv)
  shape = ([1] + args.shape if len(args.shape) == 2 else args.shape) + [3]
  config = load_config(args.config)
  apply_overrides(config, args.cfg_options)
  segmentor = apis.init_segmentor(config, args.checkpoint)
  if args.saved_model:
    save_tf_saved_model(segmentor, shape, args.saved_model)
    print(f"wrote TF SavedModel {args.saved_model}")
  data = export_segmentor(segmentor, shape)
  with open(args.out + ".tmp", "wb") as f:
    f.write(data)
  os.replace(args.out + ".tmp", args.out)
  print(f"wrote {args.out} ({len(data) / 1e6:.1f} MB) for input {tuple(shape)}")


if __name__ == "__main__":
  main()
