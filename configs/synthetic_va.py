"""A valence/arousal regressor on a synthetic set, to annotate another synthetic set.

  python -m ldl_jax.main --config=configs/synthetic_va.py --workdir=runs/synthetic_va
  python -m ldl_jax.annotate_va --workdir=runs/synthetic_va --csv=data/synthetic/train.csv \\
      --image_dir=data/synthetic/images --out=data/synthetic/train_pseudo_va.csv

Plays AffectNet's part on CPU: generates `data/synthetic_va` (2,000 train / 300 val / 500 test
images at 48 px, another seed than configs/synthetic.py's `data/synthetic`, so the set it
annotates was never seen) and trains the small ResNet on its valence/arousal columns. RMSE and
CCC per dimension land in runs/synthetic_va/eval_results.json.

`--config=configs/synthetic_va.py:SEED` generates and trains on the set of another data seed
instead, in `data/synthetic_va_seedSEED` (the noise study's `--va_regressor`, docs/METHOD.md §3,
uses seed 5, which no other set shares).
"""

import ml_collections

from configs import synthetic


def get_config(seed: str = "1"):
    data_dir = "data/synthetic_va" if seed == "1" else f"data/synthetic_va_seed{seed}"
    config = synthetic.get_config()
    config.task = "va"
    config.va_loss = "ccc"
    config.data.synthetic = ml_collections.ConfigDict(
        {
            "dir": data_dir,
            "seed": int(seed),
            "num_train": 2000,
            "num_val": 300,
            "num_test": 500,
            "image_size": 48,
            "num_neighbors": 20,
            "class_balance": "default",
        }
    )
    config.data.image_dir = f"{data_dir}/images"
    config.data.train_csv = f"{data_dir}/train.csv"
    config.data.val_csv = f"{data_dir}/val.csv"
    config.data.test_csv = f"{data_dir}/test.csv"
    config.num_epochs = 40
    config.lr = 3e-3
    config.lr_steps = (30, 36)
    config.val_interval = 250
    return config
