"""Where metrics go: the console (rich), TensorBoard and metrics.csv, behind one small logger."""
