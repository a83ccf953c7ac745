"""AffectNet-7, ResNet-18 at 224x224 with class-balanced L_cls weights (docs/METHOD.md §4).

  python -m ldl_jax.main --config=configs/resnet18_affectnet.py --workdir=runs/affectnet_r18 \\
      --config.data.image_dir=AffectNet/images --config.data.train_csv=AffectNet/train.csv \\
      --config.data.test_csv=AffectNet/val.csv

The paper reports 66.23% on AffectNet-7 (its validation set serves as the test set). For the
8-class variant set --config.num_classes=8 and append 'Contempt' to config.class_names.

Like resnet18_raf it starts from the MS-Celeb-1M ResNet-18 `resnet18_msceleb.pth` (SCN/RUL/DAN):

  python -m ldl_jax.convert --from=msceleb_resnet18 --in=resnet18_msceleb.pth \\
      --out=pretrained/resnet18_msceleb
  ... --config.model.pretrained=pretrained/resnet18_msceleb

or from a RAF-DB run's backbone: --config.model.pretrained=runs/raf_r18 (a workdir).
"""

from configs import default, resnet18_raf


def get_config(variant: str = default.DEFAULT_VARIANT):
    """ResNet-18 at 224 as resnet18_raf, with AffectNet's data and optimisation.

    Reference values: docs/METHOD.md §4.
    """
    config = resnet18_raf.get_config(variant)
    config.data.image_dir = "data/affectnet/images"
    config.data.train_csv = "data/affectnet/train.csv"
    config.data.test_csv = "data/affectnet/test.csv"
    config.lr = 3e-4
    config.lr_decay = 0.2
    config.lr_steps = (5, 10, 20)
    config.lamb_init = 0.8
    config.lamb_beta = 0.9
    config.class_weights = True
    config.val_interval = 2000
    return config
