"""Strip a checkpoint to its weights and name it by content (mmseg's tools/publish_model.py).

  python tools/publish_model.py work_dirs/pspnet_synthetic pspnet_synthetic.msgpack
  -> pspnet_synthetic-<sha256[:8]>.msgpack (params and batch_stats only, no optimizer state)

The file loads with ``segjax.apis.init_segmentor(config, 'pspnet_synthetic-xxxxxxxx.msgpack')``
and ``--config.load_from``.
"""
import argparse
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import serialization  # noqa: E402

from segjax.train.checkpoint import load_variables  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("in_file", help="segjax workdir, checkpoint folder or converted directory")
  parser.add_argument("out_file", help="output name; '-<sha256[:8]>' is inserted before the suffix")
  args = parser.parse_args(argv)
  variables = jax.tree.map(np.asarray, load_variables(args.in_file))
  data = serialization.msgpack_serialize(variables)
  digest = hashlib.sha256(data).hexdigest()[:8]
  stem, suffix = os.path.splitext(args.out_file)
  out = f"{stem}-{digest}{suffix or '.msgpack'}"
  with open(out + ".tmp", "wb") as f:
    f.write(data)
  os.replace(out + ".tmp", out)  # atomic: a reader never sees a partial file
  print(out)


if __name__ == "__main__":
  main()
