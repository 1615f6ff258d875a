"""Ray Tune adapters over ``aminet`` (thin: map sampled values onto the config, report, checkpoint).

The Ray Tune function trainable lands with the search issue; ``aminet`` itself never imports Ray.
"""
