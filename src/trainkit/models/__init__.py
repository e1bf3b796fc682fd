"""Plain nn.Modules, sized from the data's shapes: forward only, no loss, no optimizer, no config."""
