"""Facts about the run frame's columns that the command line needs before any table library loads."""

# The run-level losses a fit can read, and the metrics.csv column that matches each (for the
# training-curve envelope).
CURVE_LOSS = {"val_loss": "val/loss", "best_val_loss": "val/loss", "train_loss": "train/loss"}
