"""Datasets in their official layouts, one registered file each (``registry``: SYSU-MM01, RegDB, LLCM), and the
synthetic benchmark in each layout; splits; what a config reads (``builders``); the memory-mapped image cache, the cross-modal sampler and loader, device augmentation."""
