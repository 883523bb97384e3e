"""deeplabv3plus on ISPRS Potsdam: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_potsdam.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_potsdam.py:r18-d8_512x512_80k --workdir=work_dirs/deeplabv3plus_r18-d8_512x512_80k_potsdam

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_512x512_80k: 77.09).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_512x512_80k": 77.09,
    "r50-d8_512x512_80k": 78.33,
    "r101-d8_512x512_80k": 78.70,
}


def get_config(variant: str = "r18-d8_512x512_80k"):
  return common.mmseg_config("deeplabv3plus", "potsdam", variant, PUBLISHED_MIOU)
