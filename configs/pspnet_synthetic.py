"""PSPNet (ResNetV1c-18, half width) on segjax's embedded synthetic dataset: the default job.

Command (generates the dataset on first use, ~1 s):
  python main.py --config=configs/pspnet_synthetic.py --workdir=work_dirs/pspnet_synthetic

Expected on a 2-core CPU: 13-15 minutes, val mIoU 0.77 (0.7665 and 0.7683 in experiments/README.md).
Variants: ``:r50`` (full PSPNet R50-D8 head/backbone widths; for a GPU).
"""
import ml_collections

from configs import common


def model(depth: int = 18, base_channels: int = 32, head_channels: int = 128) -> dict:
  in_ch = base_channels * 8 * (4 if depth >= 50 else 1)
  return dict(
      type="EncoderDecoder",
      pretrained=ml_collections.config_dict.placeholder(str),
      backbone=dict(type="ResNetV1c", depth=depth, stem_channels=base_channels,
                    base_channels=base_channels, num_stages=4, out_indices=(0, 1, 2, 3),
                    dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=common.BN,
                    norm_eval=False, style="pytorch", contract_dilation=True),
      decode_head=dict(type="PSPHead", in_channels=in_ch, in_index=3, channels=head_channels,
                       pool_scales=(1, 2, 3, 6), dropout_ratio=0.1, num_classes=6,
                       norm_cfg=common.BN, align_corners=False,
                       loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
      auxiliary_head=dict(type="FCNHead", in_channels=in_ch // 2, in_index=2,
                          channels=head_channels // 2, num_convs=1, concat_input=False,
                          dropout_ratio=0.1, num_classes=6, norm_cfg=common.BN,
                          align_corners=False,
                          loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
      train_cfg=dict(),
      test_cfg=dict(mode="whole"),
  )


def get_config(variant: str = "r18") -> ml_collections.ConfigDict:
  c = common.base_config()
  if variant == "r18":
    c.model = model(18, 32, 128)
  elif variant == "r50":
    c.model = model(50, 64, 512)
  else:
    raise ValueError(f"unknown variant {variant!r}; expected 'r18' or 'r50'")
  crop = (128, 128)
  dataset = dict(type="SyntheticDataset", data_root=ml_collections.config_dict.placeholder(str),
                 img_dir="img_dir/train", ann_dir="ann_dir/train")
  val = dict(dataset, img_dir="img_dir/val", ann_dir="ann_dir/val", pipeline=common.test_pipeline())
  c.data = dict(
      samples_per_gpu=8,
      workers_per_gpu=2,
      check_samples=64,  # images checked before training (tools/check_dataset.py checks all)
      packed_dir=ml_collections.config_dict.placeholder(str),  # tools/pack_dataset.py output
      train=dict(dataset, pipeline=common.train_pipeline((128, 128), crop, ratio_range=(0.75, 1.5))),
      val=val,
      test=val,  # as mmseg's configs: the split tools/test.py evaluates
  )
  c.optimizer = common.sgd(lr=0.02)
  c.update(common.schedule(2000))
  c.log_interval = 25
  c.evaluation.interval = 500
  c.checkpoint.interval = 250
  c.lock()
  return c
