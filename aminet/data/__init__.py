"""Datasets in their official layouts (SYSU-MM01, RegDB) and the synthetic benchmark; splits; what a config
reads (``builders``); the memory-mapped image cache, the cross-modal sampler and loader, device augmentation."""
