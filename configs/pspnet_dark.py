"""PSPNet on Dark Zurich (trained on Cityscapes): mmseg's configs/pspnet/pspnet_<variant>_dark.py by variant.

  python main.py --config=configs/pspnet_dark.py:r50-d8_512x1024_40k --workdir=work_dirs/pspnet_r50-d8_512x1024_40k_dark

A variant names one mmseg config file (configs/mmseg.py runs any of them by path). Variants and
their published mIoU: configs/ZOO.md (from configs/results_not_in_metafiles.yml).
Data: README.md, "Datasets".
Expected result: r50-d8_512x1024_40k: mIoU 10.91.
"""
from configs import zoo


def get_config(variant: str = "r50-d8_512x1024_40k"):
  return zoo.shim_config("pspnet", "dark", variant)
