"""nnU-Net itself, driven through its Python API in a child process (the parity tests' oracle).

nnU-Net reads ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` when it is imported, so
each step runs as ``python oracle.py STEP ...`` with those set by the caller (see ``conftest.py``)::

    plan JOBS.json      [[dataset_id, [configurations]], ...]: fingerprint, plan, preprocess
    train JOBS.json     [[dataset_id, configuration, fold, iterations], ...]: a trainer subclass, CPU
    predict JOBS.json   [[result_folder, in, out, "0,1", mirror, precision], ...]: nnUNetPredictor, CPU,
                        probabilities saved

(one process per step: nnU-Net and torch import once.)

PRECISION ``fp16`` runs nnU-Net as it ships: on the CPU too it accumulates the blended logits and
the Gaussian weights in float16 (value-scaled by 10), which rounds logits where patches overlap
with tiny weights (near the image's edges and corners: subnormal float16) by up to ~0.5. ``fp32``
changes only that dtype (the predictor module sees ``torch.half`` as float32 and builds its
Gaussian in float32): the same algorithm in the precision seg-runtime blends in. Everything else
(reading, cropping, normalising, resampling, network, mirroring, folds, export) is nnU-Net's own.

Training uses a fixed ``splits_final.json`` (written by the caller) and ``nnUNet_n_proc_DA=0``.
"""

from __future__ import annotations

import sys

import torch

ITERATIONS = [1]


def _trainer_class():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerTiny(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
        """nnU-Net's trainer, a handful of iterations: a real, non-trivial model in seconds."""

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")) -> None:
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = ITERATIONS[0]
            self.num_val_iterations_per_epoch = 1
            self.num_epochs = 1

    return nnUNetTrainerTiny


def plan(dataset_id: int, configurations: list[str]) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=False, verbose=False)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=configurations, num_processes=[1], verbose=False)


def train(dataset_id: int, configuration: str, fold: int) -> None:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    torch.manual_seed(0)
    name = maybe_convert_to_dataset_name(dataset_id)
    plans = load_json(f"{nnUNet_preprocessed}/{name}/nnUNetPlans.json")
    plans["continue_training"] = False  # what nnU-Net's own entry point adds
    dataset_json = load_json(f"{nnUNet_preprocessed}/{name}/dataset.json")
    trainer = _trainer_class()(plans, configuration, fold, dataset_json, device=torch.device("cpu"))
    trainer.run_training()


class _Float32Results:
    """``torch`` as the predictor module sees it, with ``torch.half`` meaning float32."""

    half = torch.float32

    def __getattr__(self, name: str):
        return getattr(torch, name)


def _float32_results(predictor_module) -> None:
    gaussian = predictor_module.compute_gaussian

    def float32_gaussian(*args, **kwargs):
        return gaussian(*args, **{**kwargs, "dtype": torch.float32})

    float32_gaussian.cache_clear = gaussian.cache_clear
    predictor_module.torch = _Float32Results()
    predictor_module.compute_gaussian = float32_gaussian


def predict(result_folder: str, source: str, target: str, folds: str, mirror: bool, precision: str) -> None:
    import nnunetv2.inference.predict_from_raw_data as predictor_module
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if precision == "fp32":
        _float32_results(predictor_module)

    tiny = _trainer_class()
    finder = predictor_module.recursive_find_trainer_class_by_name
    # the tiny trainer lives here, not in nnunetv2's package where the predictor looks for it
    predictor_module.recursive_find_trainer_class_by_name = (
        lambda name, *a, **k: tiny if name == tiny.__name__ else finder(name, *a, **k))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    chosen = tuple(f if f == "all" else int(f) for f in folds.split(","))
    predictor.initialize_from_trained_model_folder(result_folder, chosen, "checkpoint_final.pth")
    predictor.predict_from_files(source, target, save_probabilities=True, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)


def main(step: str, jobs_file: str) -> None:
    import json

    torch.set_num_threads(2)
    jobs = json.loads(open(jobs_file, encoding="utf-8").read())
    for job in jobs:
        if step == "plan":
            plan(int(job[0]), list(job[1]))
        elif step == "train":
            ITERATIONS[0] = int(job[3])
            train(int(job[0]), job[1], int(job[2]))
        elif step == "predict":
            predict(job[0], job[1], job[2], job[3], bool(job[4]), job[5])
        else:
            raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
