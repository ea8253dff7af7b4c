"""Training: the recipe-driven ATSS trainer, loss tracking (stats writer) and evaluation."""
