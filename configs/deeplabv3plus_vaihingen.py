"""deeplabv3plus on ISPRS Vaihingen: mmseg's configs/deeplabv3plus/deeplabv3plus_<variant>_vaihingen.py, one variant string each.

  python main.py --config=configs/deeplabv3plus_vaihingen.py:r18-d8_4x4_512x512_80k --workdir=work_dirs/deeplabv3plus_r18-d8_4x4_512x512_80k_vaihingen

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r18-d8_4x4_512x512_80k: 72.50).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/deeplabv3plus/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r18-d8_4x4_512x512_80k": 72.50,
    "r50-d8_4x4_512x512_80k": 73.97,
    "r101-d8_4x4_512x512_80k": 73.06,
}


def get_config(variant: str = "r18-d8_4x4_512x512_80k"):
  return common.mmseg_config("deeplabv3plus", "vaihingen", variant, PUBLISHED_MIOU)
