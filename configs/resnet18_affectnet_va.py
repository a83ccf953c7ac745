"""Valence/arousal regressor on AffectNet: ResNet-18 at 224x224, 2-d tanh head, 1 - CCC loss.

  python tools/prepare_affectnet.py --root=AffectNet --out=data/affectnet --num_neighbors=20
  python -m ldl_jax.main --config=configs/resnet18_affectnet_va.py --workdir=runs/affectnet_va \\
      --config.data.image_dir=PRINTED_IMAGE_DIR
  python -m ldl_jax.annotate_va --workdir=runs/affectnet_va --csv=data/raf/train.csv \\
      --image_dir=RAF/basic/Image/aligned --out=data/raf/train_va.csv --num_neighbors=20

Trains on train.csv's valence and arousal and reports RMSE and CCC per dimension on test.csv
(AffectNet's validation set). The reference ships no such model (docs/METHOD.md §8), so there is no
reference number; published ResNet-18-class AffectNet regressors reach a CCC of roughly 0.6-0.7
for valence and 0.5-0.6 for arousal. Set `config.model.pretrained` to start from a converted
face-recognition backbone (see `python -m ldl_jax.convert`).
"""

from configs import resnet18_affectnet


def get_config():
    """AffectNet's data and the ResNet-18 at 224 of resnet18_affectnet, as a VA regressor."""
    config = resnet18_affectnet.get_config()
    config.task = "va"
    config.va_loss = "ccc"
    config.class_weights = False  # classification only
    config.batch_size = 64
    config.num_epochs = 20
    config.lr = 3e-4
    config.lr_decay = 0.1
    config.lr_steps = (10, 16)
    config.val_interval = 2000
    return config
