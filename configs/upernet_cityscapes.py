"""upernet on Cityscapes: mmseg's configs/upernet/upernet_<variant>_cityscapes.py, one variant string each.

  python main.py --config=configs/upernet_cityscapes.py:r50_512x1024_40k --workdir=work_dirs/upernet_r50_512x1024_40k_cityscapes

Data: see the dataset's preparation hint (printed when data_root is missing) and README.md.
Expected result: the variant's mIoU in PUBLISHED_MIOU (r50_512x1024_40k: 77.10).
"""
from configs import common

# mmseg's published single-scale mIoU (configs/upernet/README.md), one entry per mmseg config.
PUBLISHED_MIOU = {
    "r50_512x1024_40k": 77.10,
    "r101_512x1024_40k": 78.69,
    "r50_769x769_40k": 77.98,
    "r101_769x769_40k": 79.03,
    "r50_512x1024_80k": 78.19,
    "r101_512x1024_80k": 79.40,
    "r50_769x769_80k": 79.39,
    "r101_769x769_80k": 80.10,
}


def get_config(variant: str = "r50_512x1024_40k"):
  return common.mmseg_config("upernet", "cityscapes", variant, PUBLISHED_MIOU)
