"""The user-level jobs: one module per workflow, each taking validated configurations.

- :mod:`~duin.workflows.prepare`: read/simulate recordings, preprocess into the cache, build a
  subject's datasets, choose channels
- :mod:`~duin.workflows.pretrain`: stage 1 (VQ-VAE) and stage 2 (MAE), per subject
- :mod:`~duin.workflows.finetune`: stage 3, the one fine-tuning path (Du-IN and baselines)
- :mod:`~duin.workflows.evaluate`: a fine-tuning run's report and table
- :mod:`~duin.workflows.predict`: decode the events of a recording
- :mod:`~duin.workflows.export`: a trained classifier as ONNX or TorchScript for deployment
- :mod:`~duin.workflows.demo`: simulate, pretrain, fine-tune and compare, in one call
- :mod:`~duin.workflows.bench`: every model of the paper's Table 2, over subjects and seeds
- :mod:`~duin.workflows.rundir`: run-directory file names and helpers

Workflows know nothing of the command line (:mod:`duin.cli` imports them, never the reverse).
"""
