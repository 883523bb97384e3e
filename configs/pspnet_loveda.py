"""pspnet on LoveDA: mmseg's configs/pspnet/pspnet_<variant>_loveda.py, one variant string each.

  python main.py --config=configs/pspnet_loveda.py:r18-d8_512x512_80k --workdir=work_dirs/pspnet_r18-d8_512x512_80k_loveda

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_512x512_80k: 48.62).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/pspnet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_512x512_80k": 48.62,
    "r50-d8_512x512_80k": 50.46,
    "r101-d8_512x512_80k": 51.86,
}


def get_config(variant: str = "r18-d8_512x512_80k"):
  return common.mmseg_config("pspnet", "loveda", variant, PUBLISHED_MIOU)
