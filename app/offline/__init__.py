"""The box's signed offline policy and the engine that decides GetRewards when the host cannot."""
