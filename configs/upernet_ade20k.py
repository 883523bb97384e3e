"""upernet on ADE20K: mmseg's configs/upernet/upernet_<variant>_ade20k.py, one variant string each.

  python main.py --config=configs/upernet_ade20k.py:r50_512x512_80k --workdir=work_dirs/upernet_r50_512x512_80k_ade20k

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50_512x512_80k: 40.70).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/upernet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50_512x512_80k": 40.70,
    "r101_512x512_80k": 42.91,
    "r50_512x512_160k": 42.05,
    "r101_512x512_160k": 43.82,
}


def get_config(variant: str = "r50_512x512_80k"):
  return common.mmseg_config("upernet", "ade20k", variant, PUBLISHED_MIOU)
