"""Analysis and reporting: galleries of items and boxes, loss curves, candidate reviews."""
