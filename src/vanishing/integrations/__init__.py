"""Where people train: `vanishing.watch` as a callback of their trainer, one line in its callbacks.

    from vanishing.integrations.lightning import VanishingCallback     # PyTorch Lightning
    from vanishing.integrations.transformers import VanishingCallback  # Hugging Face Trainer

Each finds the model and the optimizer itself, watches the training (the same records, reports
and verdicts as `watch`), writes an epoch row from what the framework evaluated, sends each new
probe row's headline numbers to the framework's own loggers (tags "vanishing/...") and ends the
run with the training. Each module needs its framework (an optional extra:
`pip install 'vanishing[lightning]'`, `'vanishing[transformers]'`); this package imports
neither, nor does `import vanishing`.
"""
