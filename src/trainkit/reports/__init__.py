"""After training: the numbers and pictures that judge a model (confusion matrix, R², Fréchet distance, grids,
plots), and the raw-input wrapper that predict and export share. Commands decide what to write where."""
