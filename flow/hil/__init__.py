"""Hardware-in-the-loop validation: client, board agent wiring, journal."""
