"""Split word trials with the paper's own code (run as a script, in its own process).

Writes a tiny subject in the released layout, runs ``train/duin/run_cls.py``'s
``_load_data_seeg_he2023xuanwu`` on it (loading, per-run shuffles, z-scoring, the stratified
80 % cut, the RNG draws of its sanity check, the random validation half, the final shuffles),
and prints which trial ended up in which split, as JSON ``{"train": [[run, index], ...], ...}``.

A trial is recognised by its channel 0, which holds its number as a constant: z-scoring and
the FFT resampling keep constants constant and their order, so ranking the values recovers the
numbers. The paper's code is imported from the folder given (never modified); the only thing
patched from outside is the run order, which is sorted naturally (run2 < run10) instead of the
filesystem's ``os.listdir`` order, as duin does.

Usage: python reference_split.py REF_DIR WORK_DIR SPEC_JSON
SPEC_JSON: {"seed": int, "train_ratio": float, "n_channels": int, "n_times": int,
            "runs": {"run2": ["label", ...], ...}}  (labels in record order)
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
import types

import numpy as np

sys.dont_write_bytecode = True


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _import_reference(ref_dir: str):
    # Optional tools the training script imports at module level; unused by the data loading.
    if "torchinfo" not in sys.modules:
        try:
            import torchinfo  # noqa: F401
        except ImportError:
            sys.modules["torchinfo"] = types.SimpleNamespace(summary=lambda *a, **k: "")
    sys.path.insert(0, ref_dir)
    for name in ("models", "params", "utils", "train"):
        assert name not in sys.modules, f"a module named {name!r} is already imported"
    import train.duin.run_cls as run_cls
    import utils
    import utils.data.seeg.he2023xuanwu.word_recitation as word_recitation

    return run_cls, utils, word_recitation


def main() -> int:
    ref_dir, work_dir, spec_json = sys.argv[1:4]
    spec = json.loads(spec_json)
    run_cls, utils, word_recitation = _import_reference(ref_dir)
    n_channels, n_times = spec["n_channels"], spec["n_times"]
    ch_names = [f"C{i}" for i in range(n_channels)]
    subject_dir = os.path.join(work_dir, "data", "seeg.he2023xuanwu", "001")
    number = 0
    ids: dict[int, tuple[str, int]] = {}
    for run, labels in spec["runs"].items():
        folder = os.path.join(
            subject_dir, "word-recitation", run, "dataset.bipolar.default.unaligned"
        )
        os.makedirs(folder)
        records = []
        rng = np.random.default_rng(number)
        for index, label in enumerate(labels):
            data = rng.standard_normal((n_channels, n_times))
            data[0] = number
            records.append(utils.DotDict({"name": label, "data_s": data, "data_n": 0 * data}))
            ids[number] = (run, index)
            number += 1
        with open(os.path.join(folder, "data"), "wb") as handle:
            pickle.dump(records, handle)
        with open(os.path.join(folder, "info"), "wb") as handle:
            pickle.dump(utils.DotDict({"ch_names": ch_names}), handle)

    class NaturalOS(types.SimpleNamespace):
        def __getattr__(self, name):
            return getattr(os, name)

        def listdir(self, path):
            return sorted(os.listdir(path), key=_natural)

    word_recitation.os = NaturalOS()
    run_cls.params = utils.DotDict(
        {
            "train": utils.DotDict({"train_ratio": spec["train_ratio"], "batch_size": 4}),
            "model": utils.DotDict(
                {
                    "seg_len": 100,
                    "subj": utils.DotDict(),
                    "tokenizer": utils.DotDict({"seg_len": 100}),
                    "encoder": utils.DotDict({"d_model": 8}),
                    "cls": utils.DotDict(),
                }
            ),
        }
    )
    log = types.SimpleNamespace(info=lambda *a, **k: None)
    run_cls.paths = types.SimpleNamespace(
        run=types.SimpleNamespace(logger=types.SimpleNamespace(summaries=log))
    )
    load_params = utils.DotDict(
        {
            "type": "bipolar_default",
            "task": "word_recitation",
            "use_align": False,
            "permutation": False,
            "resample_rate": 1000,
            "n_channels": None,
            "n_subjects": None,
            "subj_idxs": None,
            "subjs_cfg": [
                utils.DotDict({"name": "001", "path": subject_dir, "ch_names": ch_names})
            ],
        }
    )
    np.random.seed(spec["seed"])  # noqa: NPY002 (what the paper's set_seeds does for numpy)
    loaders = run_cls._load_data_seeg_he2023xuanwu(load_params)
    firsts = {
        name: [float(item.X[0, 0]) for item in loader.dataset.data_items]
        for name, loader in zip(("train", "val", "test"), loaders, strict=True)
    }
    values = sorted(v for part in firsts.values() for v in part)
    assert len(values) == number and len(set(values)) == number, "trials not recoverable"
    rank = {v: i for i, v in enumerate(values)}
    out = {name: [list(ids[rank[v]]) for v in part] for name, part in firsts.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
