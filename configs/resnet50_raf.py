"""RAF-DB, IR-50 ("resnet50" of the reference) at 112x112: the reference's main setting.

  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf_ir50 \\
      --config.data.image_dir=RAF/aligned --config.data.train_csv=RAF/train.csv \\
      --config.data.test_csv=RAF/test.csv

The reference reports 90.51% top-1 on the RAF-DB test set (paper, at 224 input; the reference
says 112 is negligibly different). It starts from an MS-Celeb-1M IR-50 (its own file was never
released); face.evoLVe's `backbone_ir50_ms1m_epoch120.pth` (IR-50, MS-Celeb-1M, 112x112, from
face.evoLVe's model zoo) is almost certainly that network. Convert it once, pass the folder:

  python -m ldl_jax.convert --from=evolve_ir50 --in=backbone_ir50_ms1m_epoch120.pth \\
      --out=pretrained/ir50_ms1m
  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf_ir50 \\
      --config.model.pretrained=pretrained/ir50_ms1m ...

Without `config.model.pretrained` the backbone trains from scratch.
"""

from configs import default


def get_config(variant: str = default.DEFAULT_VARIANT):
    config = default.get_config(variant)
    config.data.image_dir = "data/raf/aligned"
    config.data.train_csv = "data/raf/train.csv"
    config.data.test_csv = "data/raf/test.csv"
    config.model.backbone = "ir50"
    config.input_size = 112
    config.pad_size = 4
    return config
