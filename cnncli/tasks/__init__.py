"""Tasks: what a run learns. Each task is one file holding its LightningModule, metrics and reports;
the trainer, data, run folders, checkpoints and export are shared. classification: cnncli/tasks/classification.py."""
