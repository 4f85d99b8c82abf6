"""Training LRRNet (``run_configs.py``): the config schema and named recipes (``config``), the run's setup
(``setup``), its state (``state``), the loop (``loop``), validation (``validate``), the loss (``losses``),
hard negatives (``mining``) and the per-epoch log (``log``)."""
