"""The compiler: RASP -> craft IR -> transformer weights, and the forward pass."""
