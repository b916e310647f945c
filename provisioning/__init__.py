"""The box's life with the provider: identity, enrollment, config, updates (never imports app/)."""
