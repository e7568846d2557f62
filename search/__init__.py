"""The search service: study file -> Ray Tune + Optuna + ASHA -> MLflow. See `search --help`."""
