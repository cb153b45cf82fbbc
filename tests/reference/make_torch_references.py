"""torch.nn's values for the torch-parity tests of tests/test_options.py, made once and committed.

    python -m pip install -e ".[test,torch-oracle]"
    python tests/reference/make_torch_references.py           # (re)writes torch_losses.json beside this file
    python tests/reference/make_torch_references.py --check   # recomputes everything, compares, writes nothing

Every case's inputs are drawn here from a seeded numpy Generator and stored in the file next to
torch's outputs, so the tests read both and need neither torch nor numpy's (or jax's) random
streams to stay the same across versions. torch computes in float64 throughout (float64 inputs,
int64 labels); each output records torch's dtype. The file also records the torch and numpy
versions that made it.

tests/test_options.py loads this module (numpy only at import; torch is imported inside
``torch_outputs``) to recompute the same outputs live from the stored inputs when torch is
importable: the "live" variant of each parity test.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

PATH = pathlib.Path(__file__).resolve().parent / "torch_losses.json"
N, C = 12, 5
WEIGHTS = (0.5, 1.0, 2.0, 0.3, 1.5)

# tests/test_options.py parametrises over these.
CROSS_ENTROPY_OPTIONS = [
    {},
    {"ignore_index": -100},
    {"label_smoothing": 0.15},
    {"class_weights": WEIGHTS},
    {"class_weights": WEIGHTS, "label_smoothing": 0.1, "ignore_index": 3},
]
REDUCTIONS = ("mean", "sum", "none")
POS_WEIGHTS = [None, 2.5, (1.0, 3.0, 0.2)]


def cross_entropy_case(options: dict) -> str:
    return "cross_entropy/" + (",".join(options) or "plain")


def bce_case(pos_weight) -> str:
    return f"bce_with_logits/pos_weight={pos_weight}"


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    s = x - x.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def _logits(rng, n=N, c=C):
    return 2 * rng.standard_normal((n, c))


def _labels(rng, n=N, c=C):
    return rng.integers(0, c, n).astype(np.int64)


def _cases() -> dict[str, dict]:
    """name -> {"seed", "options", "torch_call", "inputs" (a function of the Generator)}."""
    cases = {}
    for options in CROSS_ENTROPY_OPTIONS:

        def inputs(rng, options=options):
            z, y = _logits(rng), _labels(rng)
            if "ignore_index" in options:
                y[[1, 4]] = options["ignore_index"]
            return {"z": z, "y": y}

        cases[cross_entropy_case(options)] = {
            "seed": 8,
            "options": options,
            "torch_call": "torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=ignore_index (-100),"
            " label_smoothing=label_smoothing (0), reduction=r)(z, y) for r in outputs",
            "inputs": inputs,
        }
    cases["cross_entropy/soft_targets"] = {
        "seed": 10,
        "options": {"class_weights": WEIGHTS, "label_smoothing": 0.1},
        "torch_call": "torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=0.1)(z, q)",
        "inputs": lambda rng: {"z": _logits(rng), "q": _softmax(rng.standard_normal((N, C)))},
    }
    cases["nll_loss"] = {
        "seed": 12,
        "options": {},
        "torch_call": "torch.nn.NLLLoss()(log_p, y)",
        "inputs": lambda rng: {"log_p": _log_softmax(_logits(rng)), "y": _labels(rng)},
    }
    cases["cross_entropy/all_ignored"] = {
        "seed": 14,
        "options": {"ignore_index": -100},
        "torch_call": "torch.nn.CrossEntropyLoss(ignore_index=-100)(z, y)",
        "inputs": lambda rng: {"z": _logits(rng), "y": np.full((N,), -100, np.int64)},
    }
    for pos_weight in POS_WEIGHTS:
        cases[bce_case(pos_weight)] = {
            "seed": 15,
            "options": {} if pos_weight is None else {"pos_weight": pos_weight},
            "torch_call": "torch.nn.BCEWithLogitsLoss(pos_weight=broadcast(pos_weight, (3,)))(z, y)",
            "inputs": lambda rng: {"z": _logits(rng, c=3), "y": rng.uniform(size=(N, 3))},
        }

    def normal_inputs(rng):
        loc, log_scale, y = (rng.standard_normal(N) for _ in range(3))
        return {"loc": loc, "log_scale": log_scale, "y": y, "var": np.exp(2 * log_scale)}

    cases["gaussian_nll"] = {
        "seed": 17,
        "options": {},
        "torch_call": "torch.nn.GaussianNLLLoss(full=f, eps=1e-12)(loc, y, var) for f in outputs",
        "inputs": normal_inputs,
    }
    cases["poisson_nll"] = {
        "seed": 20,
        "options": {},
        "torch_call": "torch.nn.PoissonNLLLoss(log_input=True, full=f, reduction='none')(log_rate, y) for f in outputs",
        "inputs": lambda rng: {
            "log_rate": rng.standard_normal(4 * N),
            "y": np.concatenate([[0.0, 1.0, 2.0, 3.0, 10.0, 1e3, 1e6], np.arange(4 * N - 7, dtype=np.float64)]),
        },
    }

    def kl_inputs(rng):
        zp, zq = _logits(rng), _logits(rng)
        return {"zp": zp, "zq": zq, "p": _softmax(zp), "log_q": _log_softmax(zq)}

    cases["kl_div"] = {
        "seed": 18,
        "options": {},
        "torch_call": "torch.nn.KLDivLoss(reduction='batchmean')(log_q, p)",
        "inputs": kl_inputs,
    }
    return cases


CASES = _cases()


def make_inputs(name: str) -> dict[str, np.ndarray]:
    case = CASES[name]
    return case["inputs"](np.random.default_rng(case["seed"]))


def torch_outputs(name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch.nn's outputs for one case, from its (stored) inputs, as float64 numpy arrays.

    Raises TypeError if torch computed in another dtype than float64.
    """
    import torch

    t = {k: torch.from_numpy(np.array(v)) for k, v in inputs.items()}
    options = CASES[name]["options"]
    if name.startswith("cross_entropy/") and name not in ("cross_entropy/soft_targets", "cross_entropy/all_ignored"):
        weight = None if "class_weights" not in options else torch.tensor(options["class_weights"], dtype=torch.float64)
        out = {
            r: torch.nn.CrossEntropyLoss(
                weight=weight,
                ignore_index=options.get("ignore_index", -100),
                label_smoothing=options.get("label_smoothing", 0.0),
                reduction=r,
            )(t["z"], t["y"])
            for r in REDUCTIONS
        }
    elif name == "cross_entropy/soft_targets":
        weight = torch.tensor(options["class_weights"], dtype=torch.float64)
        out = {"mean": torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=options["label_smoothing"])(t["z"], t["q"])}
    elif name == "nll_loss":
        out = {"mean": torch.nn.NLLLoss()(t["log_p"], t["y"])}
    elif name == "cross_entropy/all_ignored":
        out = {"mean": torch.nn.CrossEntropyLoss(ignore_index=-100)(t["z"], t["y"])}
    elif name.startswith("bce_with_logits/"):
        pw = options.get("pos_weight")
        pw = None if pw is None else torch.from_numpy(np.broadcast_to(np.asarray(pw, np.float64), (3,)).copy())
        out = {"mean": torch.nn.BCEWithLogitsLoss(pos_weight=pw)(t["z"], t["y"])}
    elif name == "gaussian_nll":
        out = {
            f"full={full}": torch.nn.GaussianNLLLoss(full=full, eps=1e-12)(t["loc"], t["y"], t["var"])
            for full in (True, False)
        }
    elif name == "poisson_nll":
        out = {
            f"full={full}": torch.nn.PoissonNLLLoss(log_input=True, full=full, reduction="none")(t["log_rate"], t["y"])
            for full in (False, True)
        }
    elif name == "kl_div":
        out = {"batchmean": torch.nn.KLDivLoss(reduction="batchmean")(t["log_q"], t["p"])}
    else:
        raise KeyError(name)
    for key, value in out.items():
        if value.dtype != torch.float64:
            raise TypeError(f"{name} {key}: torch computed in {value.dtype}, not torch.float64")
    return {key: value.detach().numpy() for key, value in out.items()}


# -- the file: strict JSON, arrays as {"dtype", "shape", "data"}, non-finite numbers as strings ------


def _encode_number(x):
    x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)  # "nan", "inf", "-inf"
    return x  # floats print as repr: the shortest string that reads back to the same float64


def _encode(a: np.ndarray, **extra) -> dict:
    a = np.asarray(a)
    return {"dtype": a.dtype.name, **extra, "shape": list(a.shape), "data": [_encode_number(x) for x in a.ravel()]}


def decode(entry: dict) -> np.ndarray:
    data = [float(x) if isinstance(x, str) else x for x in entry["data"]]
    return np.array(data, dtype=entry["dtype"]).reshape(entry["shape"])


def load(path: pathlib.Path = PATH) -> dict:
    """The file's contents, arrays decoded; cases[name]["inputs"/"outputs"] are dicts of numpy arrays."""
    ref = json.loads(path.read_text())
    for case in ref["cases"].values():
        case["inputs"] = {k: decode(v) for k, v in case["inputs"].items()}
        case["outputs"] = {k: decode(v) for k, v in case["outputs"].items()}
    return ref


def build() -> dict:
    import torch

    cases = {}
    for name, case in CASES.items():
        inputs = make_inputs(name)
        outputs = torch_outputs(name, inputs)
        cases[name] = {
            "seed": case["seed"],
            "options": case["options"],
            "torch_call": case["torch_call"],
            "inputs": {k: _encode(v) for k, v in inputs.items()},
            "outputs": {k: _encode(v, torch_dtype="torch.float64") for k, v in outputs.items()},
        }
    return {
        "about": "torch.nn's losses on seeded inputs, for tests/test_options.py; made by "
        "tests/reference/make_torch_references.py (inputs from numpy.random.default_rng(seed), stored here).",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "cases": cases,
    }


def dumps(ref: dict) -> str:
    """Indented JSON with each array on one line (small and diffable)."""
    placeholders = {}

    def swap(obj):
        if isinstance(obj, dict):
            if "data" in obj and "shape" in obj:
                key = f"@@{len(placeholders)}@@"
                placeholders[key] = json.dumps(obj, allow_nan=False)
                return key
            return {k: swap(v) for k, v in obj.items()}
        return obj

    text = json.dumps(swap(ref), indent=1, allow_nan=False)
    for key, data in placeholders.items():
        text = text.replace(f'"{key}"', data)
    return text + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="recompute and compare with the file; write nothing")
    args = parser.parse_args(argv)
    try:
        ref = build()
    except ImportError as e:
        print(f"needs torch (python -m pip install -e \".[test,torch-oracle]\"): {e}", file=sys.stderr)
        return 2
    if not args.check:
        PATH.write_text(dumps(ref))
        print(f"wrote {PATH} ({PATH.stat().st_size} bytes, torch {ref['torch_version']})")
        return 0
    old = load()
    fresh = json.loads(dumps(ref))
    worst, bad = 0.0, []
    for name, case in fresh["cases"].items():
        for part in ("inputs", "outputs"):
            for key, entry in case[part].items():
                a, b = decode(entry), old["cases"][name][part][key]
                if a.dtype != b.dtype or a.shape != b.shape:
                    bad.append(f"{name} {part} {key}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
                    continue
                if part == "inputs" and not np.array_equal(a, b):
                    bad.append(f"{name} inputs {key} differ (numpy's stream changed?)")
                with np.errstate(invalid="ignore", divide="ignore"):
                    rel = np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))
                worst = max(worst, float(np.nanmax(rel, initial=0.0)))
                if not np.array_equal(np.isnan(a), np.isnan(b)):
                    bad.append(f"{name} {part} {key}: NaNs differ")
    print(f"file made by torch {old['torch_version']}, numpy {old['numpy_version']}; "
          f"now torch {ref['torch_version']}, numpy {ref['numpy_version']}; largest relative difference {worst:.3g}")
    for line in bad:
        print("  " + line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
