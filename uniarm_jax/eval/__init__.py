"""Evaluation: scorers, Pareto metrics, plots, reports, and the small-scale task's data."""
