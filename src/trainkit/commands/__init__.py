"""One module per `trainkit` subcommand: short functions from built objects to results."""
