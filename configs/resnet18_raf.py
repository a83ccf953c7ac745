"""RAF-DB, ResNet-18 at 224x224 (docs/METHOD.md §4).

  python -m ldl_jax.main --config=configs/resnet18_raf.py --workdir=runs/raf_r18 \\
      --config.data.image_dir=RAF/aligned --config.data.train_csv=RAF/train.csv \\
      --config.data.test_csv=RAF/test.csv

The reference starts from an MS-Celeb-1M ResNet-18 (as SCN/RUL/DAN); its paper reports ResNet-50
numbers only (90.51% on RAF-DB), so expect a few points less with ResNet-18. The weights are
`resnet18_msceleb.pth`, the file SCN, RUL and DAN distribute; convert it once and pass the folder:

  python -m ldl_jax.convert --from=msceleb_resnet18 --in=resnet18_msceleb.pth \\
      --out=pretrained/resnet18_msceleb
  python -m ldl_jax.main --config=configs/resnet18_raf.py --workdir=runs/raf_r18 \\
      --config.model.pretrained=pretrained/resnet18_msceleb ...

(`--from=torchvision_resnet18` converts torchvision's ImageNet ResNet-18 the same way.) Without
`config.model.pretrained` the backbone trains from scratch.
"""

from configs import default


def get_config(variant: str = default.DEFAULT_VARIANT):
    config = default.get_config(variant)
    config.data.image_dir = "data/raf/aligned"
    config.data.train_csv = "data/raf/train.csv"
    config.data.test_csv = "data/raf/test.csv"
    config.model.backbone = "resnet18"
    config.input_size = 224
    config.pad_size = 8
    config.lr = 1e-3
    config.lr_decay = 0.1
    config.lr_steps = (10, 20, 40)
    return config
