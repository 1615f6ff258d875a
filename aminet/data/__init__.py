"""Dataset layouts (SYSU-MM01, RegDB), image decoding and, later, caches, samplers and augmentation."""
