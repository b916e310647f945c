"""Card readers: transports, framing, decoders, discovery (never imports app/)."""
