"""Ray Tune adapters over ``aminet`` (thin): ``aminet_trainable`` runs one engine training per trial and
reports to Ray; ``params`` maps sampled values onto the config. ``aminet`` itself never imports Ray."""
