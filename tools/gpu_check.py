"""The GPU check: throughput figures and a short bfloat16 training run, taken unattended in one
command on a fresh accelerator machine (docs/BENCHMARKS.md, "GPU: the prepared check").

  # Here, once, with a package index at hand: the wheels the GPU machine lacks, into .whl/
  python tools/gpu_check.py --prepare_wheels=.whl
  # On the GPU machine (JAX there; no TensorFlow, ml_collections or clu), about 8 minutes:
  python3 tools/gpu_check.py --wheels=.whl --out=OUT
  # Anywhere, the same parts at tiny sizes on the CPU:
  python tools/gpu_check.py --dry_run --out=/tmp/gpu_check

Parts, in this order, each in its own process under its own time limit (`--train_budget`,
`--bench_budget`, all of them within `--time_limit`); a part past its limit is killed and
recorded as timed out with what it had measured, and the next one starts:
- `train`: configs/synthetic.py in bfloat16 with the device placement for `--train_steps`
  steps on a synthetic set generated there (`ldl_jax.synthetic`, decoded with PIL: no
  TensorFlow); the loss must fall (mean of the last tenth of the steps under the first tenth's)
  and every metric and parameter stay finite; test accuracy for reference;
- `bench/BACKBONE-SIZE/DTYPE/bB`: `tools/benchmark.py`'s measurements with `--data=device`
  (the LDLVA step, the floor, the plain cross-entropy step, the memory-bank step and the device
  placement fed end to end) for each backbone at its input size, dtype and batch size, bfloat16
  first, larger batches first. MFU is XLA's FLOP count over the device's dense peak
  (`PEAK_FLOPS`).

OUT gets gpu_check.json (rewritten whenever a part has measured something, so that a killed run
keeps its figures), gpu_check.md (the tables, also printed at the end) and gpu_check.log (the
parts' own output). This orchestrating process imports neither JAX nor the project: it installs
what the parts import and must leave the accelerator's memory to them. If the `train` part fails
with the GPU machine's own flax/optax/orbax, it is run again with the requirements.txt pins
carried in .whl/pinned, and those are kept when that works.
"""

import argparse
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Of the packages the parts import, the only one the GPU machine lacks (its image has JAX, flax,
# optax, orbax-checkpoint, absl-py, etils, pandas, PIL; tests/tools/test_gpu_check.py keeps
# TensorFlow and clu off the parts' path).
REQUIRED_WHEELS = ("ml_collections",)
# The project's pins of what the image has in other versions: the fallback of the `train` part.
PINNED_WHEELS = ("flax", "optax", "orbax-checkpoint")
GPU_PYTHON = "3.12"  # the GPU machine's Python, for which the wheels are downloaded
VERSIONS_REPORTED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml_collections")

# Dense peak FLOP/s (datasheet figures without sparsity) per device kind, the first name that
# `device_kind` contains. float32: JAX's default matmul precision runs float32 convolutions and
# matmuls on TensorFloat-32 tensor cores on these GPUs, so their TF32 peak is what a float32
# step can reach (true float32 on the CUDA cores: about 67e12 on an H100/H200 SXM).
PEAK_FLOPS = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100 NVL", {"bfloat16": 835e12, "float32": 418e12}),
    ("H200 NVL", {"bfloat16": 835e12, "float32": 418e12}),
    ("H100", {"bfloat16": 989e12, "float32": 495e12}),  # SXM
    ("H200", {"bfloat16": 989e12, "float32": 495e12}),  # SXM, and GH200
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
)

# The targets (measured and reported, not asserted): key -> (at least, at most, what).
TARGETS = {
    "floor_ratio": (None, 1.10, "the LDLVA step's time over the floor's"),
    "bank_speedup": (3.0, None, "the LDLVA step's time over the memory-bank step's, K = 8"),
    "fed_ratio": (0.95, None, "device placement: the step alone over the step fed end to end"),
    "mfu": (0.45, None, "bfloat16 LDLVA step, best batch size, ir50-112 and resnet18-224"),
}
MFU_TARGET_BACKBONES = ("ir50-112", "resnet18-224")


def meets(key: str, value: float) -> bool:
    low, high, _ = TARGETS[key]
    return (low is None or value >= low) and (high is None or value <= high)


# Settings of a GPU run and of a dry run; every one can be overridden by its flag.
GPU_SETTINGS = {
    "backbones": "ir50:112,resnet18:224,resnet50:224",
    "dtypes": "bfloat16,float32",
    "batch_sizes": "256,64",
    "num_neighbors": 8,
    "steps": 20,
    "num_rows": 2048,
    "train_steps": 300,
    "train_budget": 90.0,
    "bench_budget": 60.0,
    "time_limit": 450.0,
}
DRY_RUN_SETTINGS = {
    "backbones": "resnet_tiny:16,ir_tiny:32",
    "dtypes": "bfloat16,float32",
    "batch_sizes": "4,2",
    "num_neighbors": 3,
    "steps": 2,
    "num_rows": 16,
    "train_steps": 40,
    "train_budget": 900.0,  # generous: a busy shared CPU compiles the tiny programs slowly
    "bench_budget": 900.0,
    "time_limit": 7200.0,
}
# configs/synthetic.py shrunk for the dry run (the GPU run trains the config as it is).
DRY_RUN_TRAIN_OVERRIDES = {
    "model.backbone": "resnet_tiny",
    "input_size": 16,
    "pad_size": 2,
    "batch_size": 8,
    "num_neighbors": 3,
    "eval_batch_size": 32,
    "data.synthetic.num_train": 64,
    "data.synthetic.num_test": 32,
    "data.synthetic.image_size": 16,
    "data.synthetic.num_neighbors": 4,
}
# A dry run's timings mean nothing: its parts compile without LLVM's optimisations, in about
# half the CPU time.
DRY_RUN_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
POLL_SECONDS = 0.5
ERROR_TAIL_CHARS = 3000


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The dense peak FLOP/s of `device_kind` in `dtype`, or None for a device not listed."""
    for name, peaks in PEAK_FLOPS:
        if name in device_kind:
            return peaks.get(dtype)
    return None


# ---- The parts (each runs in its own process; the project is imported only here) ----


def environment() -> dict:
    """Versions, the device and its peaks, as the part's process sees them."""
    import importlib.metadata
    import platform

    import jax

    versions = {}
    for name in VERSIONS_REPORTED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    kind = jax.devices()[0].device_kind
    return {
        "python": platform.python_version(),
        "versions": versions,
        "backend": jax.default_backend(),
        "device_kind": kind,
        "device_count": jax.device_count(),
        "peak_flops": {dtype: peak_flops(kind, dtype) for dtype in ("bfloat16", "float32")},
    }


def run_bench(spec: dict, report) -> None:
    """tools/benchmark.py's measurements (device-resident data) for one configuration."""
    import jax

    from configs import default
    from tools import benchmark

    config = benchmark.at_input_size(default.get_config(), spec["input_size"])
    config.model.backbone = spec["backbone"]
    config.model.dtype = spec["dtype"]
    config.batch_size = spec["batch_size"]
    config.num_neighbors = spec["num_neighbors"]
    peak = peak_flops(jax.devices()[0].device_kind, spec["dtype"])
    benchmark.benchmark(
        config,
        data="device",
        num_steps=spec["steps"],
        num_rows=spec["num_rows"],
        peak_tflops=(peak or 0.0) / 1e12,
        report=report,
    )


def read_images(paths, size: int):
    """(N, size, size, 3) uint8 from image files already at `size` (PIL, no TensorFlow)."""
    import numpy as np
    from PIL import Image

    images = np.zeros((len(paths), size, size, 3), np.uint8)
    for row, path in enumerate(paths):
        with Image.open(path) as file:
            image = np.asarray(file.convert("RGB"))
        if image.shape != images.shape[1:]:
            raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]}, expected {size}x{size}")
        images[row] = image
    return images


def synthetic_set(config):
    """`config.data.synthetic`'s set (no validation split), generated in a temporary folder and
    decoded: (train table, train images, test table, test images)."""
    from ldl_jax import config_fields, synthetic
    from ldl_jax.data import tables

    spec = config_fields.complete(config).data.synthetic
    with tempfile.TemporaryDirectory(prefix="gpu_check_data_") as folder:
        data_dir = pathlib.Path(folder) / "synthetic"
        synthetic.make_synthetic_fer(
            data_dir,
            seed=spec.seed,
            num_train=spec.num_train,
            num_test=spec.num_test,
            image_size=spec.image_size,
            num_neighbors=spec.num_neighbors,
            class_balance=spec.class_balance,
        )
        table = tables.read_train_table(
            data_dir / "train.csv",
            data_dir / "images",
            num_classes=config.num_classes,
            num_neighbors=config.num_neighbors,
            va_bandwidth=config.data.va_bandwidth,
        )
        test = tables.read_eval_table(
            data_dir / "test.csv", data_dir / "images", num_classes=config.num_classes
        )
        return (
            table,
            read_images(table.paths, config.input_size),
            test,
            read_images(test.paths, config.input_size),
        )


def run_train(spec: dict, report) -> None:
    """configs/synthetic.py with `spec['overrides']` for `spec['steps']` steps, the device
    placement feeding the trainer's step, on a synthetic set generated in a temporary folder."""
    import jax
    import numpy as np

    from configs import synthetic as synthetic_config
    from ldl_jax import evaluation, models, parallel
    from ldl_jax.data import batches, feeds
    from ldl_jax.train_state import create_optimizer, create_train_state

    config = synthetic_config.get_config()
    config.update_from_flattened_dict(spec["overrides"])
    start = time.perf_counter()
    table, images, test, test_images = synthetic_set(config)
    result = {
        "backbone": config.model.backbone,
        "dtype": config.model.dtype,
        "input_size": config.input_size,
        "batch_size": config.batch_size,
        "num_neighbors": config.num_neighbors,
        "train_rows": table.num_rows,
        "data_seconds": time.perf_counter() - start,
    }

    parallelism = parallel.MeshParallel()
    model = models.create_model(config)
    tx = create_optimizer(config, batches.steps_per_epoch(table.num_rows, config.batch_size))
    state = parallelism.place_state(create_train_state(config, model, tx, table.num_rows))
    feed = feeds.device_feed(config, table, images, parallelism)
    train_step = parallelism.compile_train_step(
        model,
        tx,
        config,
        train_labels=table.labels,
        train_neighbors=table.knn,
        input_images=feed.input_images,
    )
    stream = feed.batches(0)
    start = time.perf_counter()
    state, metrics = train_step(state, next(stream))
    jax.block_until_ready(metrics)
    result["first_step_seconds"] = time.perf_counter() - start  # compilation included
    history = [metrics]
    start = time.perf_counter()
    for step in range(2, spec["steps"] + 1):
        state, metrics = train_step(state, next(stream))
        history.append(metrics)
        if step % spec["report_every"] == 0 or step == spec["steps"]:
            fetched = jax.device_get(history)  # waits for the steps so far
            result["seconds_per_step"] = (time.perf_counter() - start) / (step - 1)
            result.update(loss_summary(fetched))
            report(result)
    params_finite = all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))
    eval_step = parallelism.compile_eval_step(model, config.num_classes)
    placed = (
        parallelism.place_batch(batch)
        for batch in batches.eval_batches(
            test_images, test.labels, batch_size=config.eval_batch_size
        )
    )
    accuracy = evaluation.evaluate(eval_step, state.params, state.batch_stats, placed)
    result["params_finite"] = bool(params_finite)
    result["test_accuracy"] = accuracy["accuracy"]
    result["checks_passed"] = bool(
        result["loss_fell"] and result["metrics_finite"] and params_finite
    )
    report(result)


def loss_summary(metrics: list[dict]) -> dict:
    """The steps so far: loss means of the first and last tenth (and of each tenth), whether
    every metric of every step is finite."""
    import numpy as np

    losses = np.array([float(step["loss"]) for step in metrics])
    window = max(1, len(losses) // 10)
    finite = all(np.isfinite(float(value)) for step in metrics for value in step.values())
    first, last = float(losses[:window].mean()), float(losses[-window:].mean())
    return {
        "steps": len(losses),
        "loss_window": window,
        "loss_first": first,
        "loss_last": last,
        "loss_curve": [float(losses[i : i + window].mean()) for i in range(0, len(losses), window)],
        "metrics_finite": bool(finite),
        "loss_fell": bool(last < first),
    }


PART_RUNNERS = {"train": run_train, "bench": run_bench}


def exit_with_parent() -> None:
    """Ends this process when the orchestrating one is gone (killed without a chance to kill
    its part), so that no orphan keeps the accelerator."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_part(spec: dict, out_path: pathlib.Path) -> None:
    """Runs one part in this process, rewriting `out_path` whenever it has measured something."""
    exit_with_parent()
    sys.path.insert(0, str(REPO))
    record = {"environment": environment(), "result": None}

    def report(result: dict) -> None:
        record["result"] = result
        record["tensorflow_imported"] = "tensorflow" in sys.modules
        write_json(out_path, record)

    report(None)
    PART_RUNNERS[spec["kind"]](spec, report)


# ---- The orchestrating process (standard library only) ----


def write_json(path: pathlib.Path, value) -> None:
    """Writes via a temporary file, so that a reader never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    temporary.replace(path)


def plan(settings: dict) -> list[dict]:
    """The parts in the order they run: `train`, then each benchmark configuration."""
    train_overrides = {"model.dtype": "bfloat16", "data.placement": "device"}
    if settings["dry_run"]:
        train_overrides.update(DRY_RUN_TRAIN_OVERRIDES)
    parts = [
        {
            "name": "train",
            "kind": "train",
            "budget": settings["train_budget"],
            "steps": settings["train_steps"],
            "report_every": max(1, settings["train_steps"] // 10),
            "overrides": train_overrides,
        }
    ]
    for dtype in settings["dtypes"].split(","):
        for batch_size in (int(b) for b in settings["batch_sizes"].split(",")):
            for backbone_size in filter(None, settings["backbones"].split(",")):
                backbone, size = backbone_size.split(":")
                parts.append(
                    {
                        "name": f"bench/{backbone}-{size}/{dtype}/b{batch_size}",
                        "kind": "bench",
                        "budget": settings["bench_budget"],
                        "backbone": backbone,
                        "input_size": int(size),
                        "dtype": dtype,
                        "batch_size": batch_size,
                        "num_neighbors": settings["num_neighbors"],
                        "steps": settings["steps"],
                        "num_rows": settings["num_rows"],
                    }
                )
    return parts


def install_wheels(wheel_dir: pathlib.Path, target: pathlib.Path) -> None:
    """pip-installs every wheel of `wheel_dir` into `target`, offline and without dependencies."""
    wheels = sorted(str(path) for path in wheel_dir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"{wheel_dir}: no wheels; run `--prepare_wheels` where pip can download")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        + ["--no-cache-dir", "--upgrade", "--target", str(target), *wheels],
        check=True,
    )


def requirement_pins(path: pathlib.Path = REPO / "requirements.txt") -> dict[str, str]:
    """name (lower case, '_' as '-') -> version of each `name==version` line."""
    pins = {}
    for line in path.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if version:
            pins[name.lower().replace("_", "-")] = version
    return pins


def prepare_wheels(dest: pathlib.Path) -> None:
    """Downloads the pinned wheels of REQUIRED_WHEELS and PINNED_WHEELS for the GPU machine's
    Python into DEST/required and DEST/pinned (pure-Python wheels, no dependencies)."""
    pins = requirement_pins()
    for group, names in (("required", REQUIRED_WHEELS), ("pinned", PINNED_WHEELS)):
        folder = dest / group
        for stale in folder.glob("*.whl"):
            stale.unlink()  # one version of each: two would stop the install there
        requirements = [f"{name}=={pins[name.lower().replace('_', '-')]}" for name in names]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
            + ["--python-version", GPU_PYTHON, "--implementation", "cp"]
            + ["--platform", "manylinux2014_x86_64", "-d", str(folder), *requirements],
            check=True,
        )
    print(f"Wheels in {dest}: " + ", ".join(sorted(p.name for p in dest.rglob("*.whl"))))


class Check:
    """Runs the parts one after another, keeping OUT/gpu_check.json up to date."""

    def __init__(self, settings: dict, out: pathlib.Path, wheels: pathlib.Path | None):
        self.out = out
        self.settings = settings
        self.wheels = wheels
        self.site = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check_site_"))
        self.python_path = []
        self.log = open(out / "gpu_check.log", "ab")  # noqa: SIM115 (open for the whole run)
        self.record = {
            "command": " ".join(sys.argv),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "settings": settings,
            "targets": TARGETS,
            "packages": "image",
            "environment": None,
            "parts": {},
        }

    def use_wheels(self, *groups: str) -> None:
        """Installs the wheel groups (`required`, `pinned`) and puts them first on the path."""
        target = self.site / "+".join(groups)
        for group in groups:
            install_wheels(self.wheels / group, target)
        self.python_path = [str(target)]

    def child_env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        paths = [*self.python_path, str(REPO), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
        if self.settings["dry_run"]:
            env["JAX_PLATFORMS"] = "cpu"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {DRY_RUN_XLA_FLAGS}".strip()
        return env

    def save(self) -> None:
        write_json(self.out / "gpu_check.json", self.record)
        (self.out / "gpu_check.md").write_text(markdown(self.record))

    def run(self, part: dict, budget: float) -> dict:
        """Runs `part` in a child process for at most `budget` seconds; returns its entry."""
        entry = {"kind": part["kind"], "budget_s": budget, "status": "running", "result": None}
        self.record["parts"][part["name"]] = entry
        if budget <= 0:
            entry.update(status="timed_out", started=False, seconds=0.0)
            self.save()
            return entry
        part_out = self.site / "part.json"
        part_out.unlink(missing_ok=True)
        self.log.write(f"\n==== {part['name']} ====\n".encode())
        self.log.flush()
        log_start = os.fstat(self.log.fileno()).st_size
        command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--part"]
        command += [json.dumps(part), "--part_out", str(part_out)]
        start = time.monotonic()
        child = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=self.child_env(),
            cwd=REPO,
            process_group=0,  # its own process group, killed as one (in the same session)
        )
        try:
            returncode, timed_out = self.wait(child, entry, part_out, start + budget)
        except BaseException:  # this process is being stopped: take the part down with it
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        entry["seconds"] = time.monotonic() - start
        entry["returncode"] = returncode
        entry["started"] = True
        self.collect(entry, part_out, None)
        if timed_out:
            entry["status"] = "timed_out"
        elif returncode != 0:
            entry["status"] = "failed"
            with open(self.log.name, "rb") as log:
                log.seek(max(log_start, os.fstat(log.fileno()).st_size - ERROR_TAIL_CHARS))
                entry["error"] = log.read().decode(errors="replace")
        else:
            entry["status"] = "ok"
        self.save()
        return entry

    def wait(self, child, entry: dict, part_out: pathlib.Path, deadline: float):
        """Waits for `child` until `deadline`, taking in its reports as they come; returns
        (its return code, whether it was killed at the deadline)."""
        seen = None
        while True:
            try:
                return child.wait(timeout=POLL_SECONDS), False
            except subprocess.TimeoutExpired:
                seen = self.collect(entry, part_out, seen)
                if time.monotonic() > deadline:
                    os.killpg(child.pid, signal.SIGKILL)
                    return child.wait(), True

    def collect(self, entry: dict, part_out: pathlib.Path, seen):
        """Takes the child's latest report into `entry` if it changed since `seen`."""
        try:
            stamp = part_out.stat().st_mtime_ns
        except FileNotFoundError:
            return seen
        if stamp == seen:
            return seen
        try:
            reported = json.loads(part_out.read_text())
        except (OSError, json.JSONDecodeError):
            return seen  # read next time
        entry.update(reported)
        if self.record["environment"] is None:
            self.record["environment"] = reported["environment"]
        self.save()
        return stamp

    def run_all(self, parts: list[dict], time_limit: float) -> None:
        deadline = time.monotonic() + time_limit
        if self.wheels:
            try:
                self.use_wheels("required")
            except subprocess.CalledProcessError as error:
                self.record["packages"] = f"image; installing the required wheels failed: {error}"
        fallback = self.wheels is not None and any((self.wheels / "pinned").glob("*.whl"))
        for part in parts:
            budget = min(part["budget"], max(0.0, deadline - time.monotonic()))
            print(f"{part['name']}: up to {budget:.0f} s", flush=True)
            entry = self.run(part, budget)
            if entry["status"] == "failed" and part["kind"] == "train" and fallback:
                first_error = entry.get("error")
                self.use_wheels("required", "pinned")
                budget = min(part["budget"], max(0.0, deadline - time.monotonic()))
                entry = self.run(part, budget)
                entry["error_with_image_packages"] = first_error
                if entry["status"] == "failed":
                    self.use_wheels("required")  # not the packages: keep the image's
                else:
                    self.record["packages"] = "pinned (requirements.txt)"
                self.save()
            print(f"{part['name']}: {entry['status']} ({entry['seconds']:.1f} s)", flush=True)
            environment = self.record["environment"]
            if environment and environment["backend"] == "cpu" and not self.settings["dry_run"]:
                self.record["stopped"] = "JAX found no accelerator (backend cpu): parts not run"
                self.save()
                print(self.record["stopped"], flush=True)
                break


# ---- The report ----


def _number(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _bench_row(name: str, entry: dict) -> str:
    result = entry.get("result") or {}
    ldl = result.get("ldl_step", {})
    plain = result.get("plain_step", {})
    fed = result.get("placements", {}).get("device", {})
    memory = result.get("device_memory") or {}
    peak_bytes = memory.get("peak_bytes_in_use")
    _, backbone, dtype, batch = name.split("/")
    cells = [
        backbone,
        dtype,
        batch[1:],
        entry["status"],
        _number(ldl.get("all_images_per_s"), 0),
        _number(result.get("floor_ratio")),
        _number(result.get("bank_speedup")),
        _number(fed.get("fed_ratio")),
        _number(plain.get("central_images_per_s"), 0),
        _number(ldl.get("mfu")),
        _number(ldl.get("compile_seconds"), 1),
        _number(None if peak_bytes is None else peak_bytes / (1 << 30), 1),
    ]
    return "| " + " | ".join(cells) + " |"


def _target_lines(parts: dict) -> list[str]:
    """Per target: the values measured and whether each meets it."""
    results = {
        name: entry["result"]
        for name, entry in parts.items()
        if entry["kind"] == "bench" and entry.get("result")
    }
    lines = []
    for key in ("floor_ratio", "bank_speedup", "fed_ratio"):
        values = {}
        for name, result in results.items():
            if key == "fed_ratio":
                result = result.get("placements", {}).get("device", {})
            if result.get(key) is not None:
                values[name] = result[key]
        met = sum(meets(key, value) for value in values.values())
        missed = ", ".join(f"{n} {v:.2f}" for n, v in values.items() if not meets(key, v))
        lines.append(
            f"- `{key}` ({_target_text(key)}): met in {met} of {len(values)} measured;"
            f" missed: {missed or 'none'}"
        )
    for backbone in MFU_TARGET_BACKBONES:
        mfus = [
            result["ldl_step"]["mfu"]
            for name, result in results.items()
            if name.startswith(f"bench/{backbone}/bfloat16/")
            and "mfu" in result.get("ldl_step", {})
        ]
        best = max(mfus) if mfus else None
        verdict = "not measured" if best is None else ("met" if meets("mfu", best) else "missed")
        lines.append(f"- MFU of {backbone} ({_target_text('mfu')}): {_number(best)}, {verdict}")
    return lines


def markdown(record: dict) -> str:
    """The tables of a (possibly partial) record."""
    environment = record["environment"] or {}
    versions = environment.get("versions", {})
    lines = [
        f"GPU check, {record['started']}: {environment.get('device_kind', 'device unknown')}"
        f" ({environment.get('backend', '?')}), jax {versions.get('jax', '?')},"
        f" flax {versions.get('flax', '?')}, packages: {record['packages']}.",
        f"`{record['command']}`",
        "",
    ]
    parts = record["parts"]
    train = parts.get("train")
    if train:
        result = train.get("result") or {}
        lines += [
            "| train part | status | steps | loss first → last | finite | loss fell "
            "| test accuracy | s / step | first step (compile) s |",
            "|---|---|---|---|---|---|---|---|---|",
            "| {} {} B={} | {} | {} | {} → {} | {} | {} | {} | {} | {} |".format(
                result.get("backbone", "synthetic"),
                result.get("dtype", ""),
                result.get("batch_size", "?"),
                train["status"],
                result.get("steps", "—"),
                _number(result.get("loss_first"), 3),
                _number(result.get("loss_last"), 3),
                _yes_no(result.get("metrics_finite") and result.get("params_finite", True)),
                _yes_no(result.get("loss_fell")),
                _number(result.get("test_accuracy"), 3),
                _number(result.get("seconds_per_step"), 4),
                _number(result.get("first_step_seconds"), 1),
            ),
            "",
        ]
    bench = [(name, entry) for name, entry in parts.items() if entry["kind"] == "bench"]
    if bench:
        lines += [
            "| backbone | dtype | B | status | LDL img/s (1+K) | floor_ratio | bank_speedup "
            "| fed_ratio | CE img/s | LDL MFU | LDL compile s | peak GiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(_bench_row(name, entry) for name, entry in bench),
            "",
            "Targets:",
            *_target_lines(parts),
        ]
    return "\n".join(lines) + "\n"


def _target_text(key: str) -> str:
    low, high, what = TARGETS[key]
    return f"{what}, {'>= ' + str(low) if high is None else '<= ' + str(high)}"


def _yes_no(value) -> str:
    return "—" if value is None else ("yes" if value else "NO")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, help="Folder for the JSON, table and log.")
    parser.add_argument("--dry_run", action="store_true", help="Tiny sizes on the CPU.")
    parser.add_argument("--wheels", type=pathlib.Path, help="The --prepare_wheels folder.")
    parser.add_argument("--prepare_wheels", type=pathlib.Path, help="Download wheels there.")
    for name, value in GPU_SETTINGS.items():
        parser.add_argument(f"--{name}", type=type(value), help=f"GPU default {value}.")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # a part's spec (child process)
    parser.add_argument("--part_out", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.part or args.prepare_wheels or args.out):
        parser.error("--out is required")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run `finally`s
    if args.part:
        run_part(json.loads(args.part), args.part_out)
        return 0
    if args.prepare_wheels:
        prepare_wheels(args.prepare_wheels)
        return 0
    defaults = DRY_RUN_SETTINGS if args.dry_run else GPU_SETTINGS
    settings = {name: getattr(args, name) for name in defaults}
    settings = {name: defaults[name] if v is None else v for name, v in settings.items()}
    settings["dry_run"] = args.dry_run
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(settings, args.out, args.wheels)
    try:
        check.run_all(plan(settings), settings["time_limit"])
    finally:
        shutil.rmtree(check.site, ignore_errors=True)
    text = markdown(check.record)
    print(text)
    failed = [name for name, entry in check.record["parts"].items() if entry["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
