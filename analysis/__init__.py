"""Reports on finished searches, read back from MLflow (no Ray): ``search report NAME``.

The records themselves (trials, per-epoch histories, the best trial) come from the record layer
``records``; here: ``tables`` (per-parameter comparisons, Markdown / CSV), ``plots`` (learning
curves, objective per parameter, robustness vs eps), ``embedding`` (UMAP of a checkpoint's
penultimate features), ``calibration`` (ECE and reliability diagram), ``report`` (all of it in
one ``report.md``).
"""
