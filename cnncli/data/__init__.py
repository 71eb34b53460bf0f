"""Data sets: one file each, a LightningDataModule named by `_target_` in conf/data/<name>.yaml."""
