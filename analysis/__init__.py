"""Reports on finished searches, read back from MLflow (no Ray): ``python -m analysis NAME``.

``records`` (trials and per-epoch histories as DataFrames), ``tables`` (per-parameter
comparisons, Markdown / CSV), ``plots`` (learning curves, objective per parameter, robustness
vs eps), ``embedding`` (UMAP of a checkpoint's penultimate features), ``calibration`` (ECE and
reliability diagram), ``report`` (all of it in one ``report.md``).
"""
